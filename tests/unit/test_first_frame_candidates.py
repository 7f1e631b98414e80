"""GPT-style first-frame candidates (``SamplingConfig.first_frame_candidates``): the score is the model's own
log-likelihood ratio of the condition against the null one, the best-scoring candidate is kept, the rest of the
grid continues from it at the prompt's temperature, and nothing changes where there is no first frame to draw
(given frames) or no condition to explain it (the null one)."""

from dataclasses import replace

import pytest
import torch

from generator import Condition, Generator
from generator.objectives import ObjectiveConfig, ar_loss, drop_condition
from generator.sampling import DecodeContext, SamplingConfig, candidates, sample_ar, sample_maskgit
from generator.sampling import ar as ar_sampling
from generator.sampling.candidates import condition_scores
from generator.sampling.context import START_COORDS, StepTables
from generator.units import make_layout
from tests.helpers.tiny_generator import GRID, cond2, tiny, tiny_all

ONE = (1, *GRID[1:])  # one latent frame
BAND = 12  # class c draws its tokens from ids [c * BAND, (c + 1) * BAND)


@pytest.fixture(scope="module")
def model() -> Generator:
    """A tiny GPT-style model (every order) trained for 150 steps on clips whose tokens come from their class's
    band of ids, with the condition dropped 30% of the time: its condition moves a frame's log-likelihood by ~0.8
    nats (at random initialisation, by hundredths), so a candidate drawn for the wrong row or ranked the wrong way
    shows."""
    model = tiny_all("ar").train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for step in range(150):
        labels = torch.randint(0, 5, (16,), generator=g)
        ids = labels[:, None] * BAND + torch.randint(0, BAND, (16, 48), generator=g)  # (16, t*h*w)
        cond = drop_condition(Condition(labels=labels), 0.3, g)
        loss = ar_loss(model, ids.view(16, *GRID), cond, ("frame", "cube")[step % 2], ObjectiveConfig()).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def stepwise_log_likelihood(model, cond: Condition, layout, seq: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token | earlier, cond), one cached decoding step at a time: the sampler's own path."""
    ctx = DecodeContext(model, cond, SamplingConfig(), max_tokens=1 + seq.shape[1])
    tables = StepTables.build(model, layout)
    start = torch.full((seq.shape[0], 1), model.config.start_id)
    targets = layout.coords if model.config.target_positions else None
    logits = ctx.logits(start, torch.tensor([START_COORDS]), keep=True, progress=0.0,
                        targets=None if targets is None else targets[:1])[:, -1]  # fmt: skip
    total = torch.zeros(seq.shape[0])
    for i in range(seq.shape[1]):
        total += logits.log_softmax(-1).gather(1, seq[:, i : i + 1])[:, 0]
        if i + 1 < seq.shape[1]:
            logits = ctx.step_logits(seq[:, i : i + 1], tables, i, progress=0.0)
    return total


@pytest.mark.parametrize("order", ["frame", "cube"])
def test_condition_scores_are_the_log_likelihood_ratio_against_the_null_condition(model, order, monkeypatch):
    layout = make_layout(ONE, order, model.config.cube_size)
    noise = torch.randint(0, BAND, (2, layout.num_tokens), generator=torch.Generator().manual_seed(3))
    seq = cond2().labels[:, None] * BAND + noise  # each row from its own class's band
    cond = cond2()
    want = stepwise_log_likelihood(model, cond, layout, seq) - stepwise_log_likelihood(
        model, Condition(drop=torch.ones(2, dtype=torch.bool)), layout, seq
    )
    got = condition_scores(model, cond, layout, seq)
    assert want.min() > 0.3  # the class explains its own band (~0.8 nats): a zero or negated score fails
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)
    monkeypatch.setattr(candidates, "SCORE_ROWS", 1)  # one sequence per forward pass: the same scores, row by row
    torch.testing.assert_close(condition_scores(model, cond, layout, seq), got, atol=1e-4, rtol=1e-5)
    dropped = Condition(labels=cond.labels, drop=torch.tensor([False, True]))
    assert condition_scores(model, dropped, layout, seq)[1] == 0  # a null row: nothing to explain


def test_the_kept_first_frame_is_the_best_scoring_candidate_and_the_rest_continues_from_it(model):
    """Exact on every draw; over 8 draws the winners must not all be the same candidate of each row, so that a mix-up
    of rows (candidates of row b read as those of another) cannot pass by the winners' positions alone."""
    sc = SamplingConfig(temperature=1.0, cfg_scale=2.0, first_frame_candidates=4)
    cond = cond2()
    winners = set()
    for order in ("frame", "cube"):
        for seed in range(4):
            full = sample_ar(model, cond, GRID, order=order, sampling=sc, generator=torch.Generator().manual_seed(seed))
            g = torch.Generator().manual_seed(seed)  # the same draws, by hand
            cands = sample_ar(model, cond.repeat_interleave(4), ONE, order=order,
                              sampling=replace(sc, first_frame_candidates=1), generator=g)  # fmt: skip
            layout = make_layout(ONE, order, model.config.cube_size)
            scores = condition_scores(model, cond.repeat_interleave(4), layout, layout.to_sequence(cands)).view(2, 4)
            best = cands.view(2, 4, *ONE)[torch.arange(2), scores.argmax(1)]  # (2, 1, h, w)
            assert torch.equal(full[:, :1], best)
            rest = sample_ar(model, cond, GRID, order=order, context=best, generator=g,
                             sampling=replace(sc, first_frame_candidates=1))  # fmt: skip
            assert torch.equal(full, rest)
            winners.add(tuple(scores.argmax(1).tolist()))
    assert len(winners) > 1


def test_after_the_chosen_first_frame_the_prompt_temperature_applies_not_the_after_context_one():
    model = tiny_all("ar")
    base = SamplingConfig(temperature=1.0, cfg_scale=2.0, first_frame_candidates=3)
    runs = [sample_ar(model, cond2(), GRID, order="frame", sampling=replace(base, context_temperature=t),
                      generator=torch.Generator().manual_seed(11)) for t in (None, 0.0, 5.0)]  # fmt: skip
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    # the same settings without candidates do not read it either (no given frames), and with given frames they do
    ctx = runs[0][:, :1]
    after = [sample_ar(model, cond2(), GRID, order="frame", context=ctx, generator=torch.Generator().manual_seed(5),
                       sampling=SamplingConfig(context_temperature=t)) for t in (0.0, 5.0)]  # fmt: skip
    assert not torch.equal(after[0], after[1])


def test_candidates_change_nothing_without_a_first_frame_to_draw_or_a_condition_to_explain_it():
    model = tiny_all("ar")
    one, four = SamplingConfig(temperature=1.0), SamplingConfig(temperature=1.0, first_frame_candidates=4)
    null = Condition(drop=torch.ones(2, dtype=torch.bool))
    ctx = torch.randint(0, model.config.vocab_size, (2, 1, *GRID[1:]), generator=torch.Generator().manual_seed(1))

    def draw(sc, cond, context=None):
        return sample_ar(model, cond, GRID, order="frame", context=context, sampling=sc,
                         generator=torch.Generator().manual_seed(2))  # fmt: skip

    assert torch.equal(draw(one, cond2(), ctx), draw(four, cond2(), ctx))  # given frames: nothing to draw first
    assert torch.equal(draw(one, null), draw(four, null))  # the null condition: every score would be 0
    assert not torch.equal(draw(one, cond2()), draw(four, cond2()))  # and otherwise it does act
    first = sample_ar(model, cond2(), ONE, order="frame", sampling=four, generator=torch.Generator().manual_seed(2))
    assert first.shape == (2, *ONE)  # a one-frame grid is the chosen candidate itself


def test_bad_candidate_settings_are_refused_with_one_clear_line():
    for bad, msg in ((0, r"must be in \[1, 16\], got 0"), (17, r"must be in \[1, 16\], got 17"),
                     (True, "must be an integer, got True"), (2.0, "must be an integer, got 2.0")):  # fmt: skip
        with pytest.raises(ValueError, match=f"first_frame_candidates {msg}"):
            SamplingConfig(first_frame_candidates=bad)
    with pytest.raises(ValueError, match="needs the constant guidance schedule"):
        SamplingConfig(first_frame_candidates=2, cfg_schedule="linear", cfg_scale=2.0)
    with pytest.raises(ValueError, match="first_frame_candidates is GPT-style only"):
        sample_maskgit(tiny("maskgit"), cond2(), GRID, order="frame", sampling=SamplingConfig(first_frame_candidates=2))
    # cubes that span every latent frame: (3, 2, 2) interleaves frames; (3, 4, 4) visits the first frame's tokens
    # first but holds the later frames in the same unit, so the first frame is no grid of its own
    for cube in ((3, 2, 2), (3, 4, 4)):
        deep = tiny("ar", target_positions=True, orders=("cube",), cube_size=cube)
        with pytest.raises(
            ValueError, match=rf"needs units within one latent frame; order 'cube' has units of \({cube[0]}, "
        ):
            sample_ar(deep, cond2(), GRID, order="cube", sampling=SamplingConfig(first_frame_candidates=2))


def test_condition_rows_repeat_in_place():
    c = Condition(labels=torch.tensor([1, 4]), drop=torch.tensor([False, True]))
    r = c.repeat_interleave(3)
    assert r.labels.tolist() == [1, 1, 1, 4, 4, 4] and r.drop.tolist() == [False] * 3 + [True] * 3
    assert r.text is None and r.text_mask is None


def test_one_progress_bar_counts_every_token_to_generate_candidates_included(monkeypatch):
    """The candidates' first frame and the rest of the grid advance one bar (it showed two, one after the other)."""
    bars = []

    class Recorder:
        def __init__(self, iterable=None, *, total: int | None = None, **kwargs):
            self.iterable, self.total, self.n = iterable, len(iterable) if total is None else total, 0
            bars.append(self)

        def __iter__(self):
            for item in self.iterable:
                yield item
                self.n += 1

        def update(self, n: int = 1) -> None:
            self.n += n

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

    monkeypatch.setattr(ar_sampling, "tqdm", Recorder)
    model, tokens = tiny_all("ar"), GRID[0] * GRID[1] * GRID[2]
    ctx = torch.zeros(2, 1, *GRID[1:], dtype=torch.long)
    for context, to_draw in ((None, tokens), (ctx, tokens - GRID[1] * GRID[2])):
        bars.clear()
        sc = SamplingConfig(first_frame_candidates=3)
        sample_ar(model, cond2(), GRID, order="cube", context=context, sampling=sc, progress=True)
        assert [(bar.total, bar.n) for bar in bars] == [(to_draw, to_draw)]


def test_with_given_frames_the_candidates_are_not_read_so_an_order_they_cannot_use_still_continues():
    """Cubes spanning 3 of 6 latent frames cannot draw a first frame on its own, but continuing 3 given frames never
    draws one: four candidates must change nothing there, not refuse the continuation."""
    cfg = tiny("ar", target_positions=True, orders=("cube",), cube_size=(3, 2, 2)).config
    model = Generator(replace(cfg, max_grid=(6, 4, 4))).eval()
    ctx = torch.randint(0, 64, (2, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    one, four = (sample_ar(model, cond2(), (6, 4, 4), order="cube", context=ctx,
                           sampling=SamplingConfig(first_frame_candidates=k),
                           generator=torch.Generator().manual_seed(1)) for k in (1, 4))  # fmt: skip
    assert torch.equal(one, four) and torch.equal(one[:, :3], ctx)


def test_candidates_draw_the_same_with_and_without_the_kv_cache(model):
    """use_cache=False recomputes every step, for the candidates' first frame as for the rest: the same draws."""
    sc = SamplingConfig(temperature=1.0, cfg_scale=2.0, first_frame_candidates=3)
    calls = []
    forward = Generator.forward

    def spy(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    runs = {}
    for use_cache in (True, False):
        calls.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Generator, "forward", spy)
            runs[use_cache] = sample_ar(model, cond2(), GRID, order="cube", sampling=sc, use_cache=use_cache,
                                        generator=torch.Generator().manual_seed(4))  # fmt: skip
        runs[use_cache, "forwards"] = len(calls)
    assert torch.equal(runs[True], runs[False])
    # cached: one prefill for the candidates, one for the rest (plus the scoring); uncached: one pass a token
    assert runs[True, "forwards"] <= 4 and runs[False, "forwards"] >= GRID[0] * GRID[1] * GRID[2]
