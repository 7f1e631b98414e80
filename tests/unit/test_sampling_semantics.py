"""Sampling semantics pinned exactly, each test failing for the bug it names:
top-k / top-p keep the right token sets; MaskGIT re-masks the *least* confident tokens with Gumbel noise
scaled by the *annealed* choice temperature; guidance at scale 1 is the conditional model and at scale g is
null + g (cond - null); the 3D RoPE makes attention scores depend on relative position only."""

import math

import pytest
import torch

from generator import Condition
from generator.layers import Rope3d
from generator.sampling import DecodeContext, SamplingConfig, sample_ar, sample_maskgit
from generator.sampling.filtering import filter_logits, sample_logits
from generator.schedules import gamma, num_masked_after_step
from tests.helpers.refusals import refused_exactly
from tests.helpers.tiny_generator import GRID, cond2, tiny, tiny_all


def kept(logits: torch.Tensor) -> set[int]:
    return set(torch.isfinite(logits).nonzero().flatten().tolist())


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([0.3, 2.0, -1.0, 1.5, 0.9, -0.2])
    assert kept(filter_logits(logits, top_k=1)) == {1}
    assert kept(filter_logits(logits, top_k=3)) == {1, 3, 4}
    assert kept(filter_logits(logits, top_k=0)) == set(range(6))  # 0 = off
    batch = torch.stack([logits, -logits])  # per row
    out = filter_logits(batch, top_k=2)
    assert kept(out[0]) == {1, 3} and kept(out[1]) == {2, 5}


def test_top_p_keeps_the_smallest_prefix_that_reaches_p():
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # sorted: 1 (0.5), 3 (0.3), 0 (0.15), 2 (0.05)
    logits = probs.log()
    assert kept(filter_logits(logits, top_p=0.5)) == {1}  # 0.5 already reaches 0.5
    assert kept(filter_logits(logits, top_p=0.79)) == {1, 3}
    assert kept(filter_logits(logits, top_p=0.81)) == {0, 1, 3}
    assert kept(filter_logits(logits, top_p=0.999)) == {0, 1, 2, 3}
    assert kept(filter_logits(logits, top_p=1e-6)) == {1}  # the top token always stays
    # also below float32's range: 1e-300 became 0 against the float32 masses, and every token was dropped (a
    # RuntimeError in torch.multinomial: a 500 from the server, a traceback from generate.py)
    assert kept(filter_logits(logits, top_p=1e-300)) == {1}
    assert kept(filter_logits(torch.stack([logits, logits.flip(0)]), top_p=5e-324)[1]) == {2}
    assert kept(filter_logits(logits, top_k=3, top_p=0.7)) == {1, 3}  # both filters apply
    for bad in (dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1)):  # p = 0 dropped every token: NaN probabilities
        with pytest.raises(ValueError, match=r"top_k must be >= 0 and top_p in \(0, 1\]"):
            filter_logits(logits, **bad)


def test_filters_that_are_off_change_nothing():
    # Tail tokens so unlikely that the float32 cumulative sum reaches 1.0 before them: top_p=1.0 must still keep them.
    logits = torch.tensor([0.0, -1.0, -40.0, -60.0, -80.0])
    assert torch.equal(filter_logits(logits, top_k=0, top_p=1.0), logits)
    assert torch.equal(filter_logits(logits, top_k=5, top_p=1.0), logits)  # k = V keeps all


def _draw_frequencies(cfg: SamplingConfig, logits: torch.Tensor, n: int = 20000) -> torch.Tensor:
    """Frequencies of each id over ``n`` independent draws of ``sample_logits`` from the same (V,) logits."""
    ids = sample_logits(logits.expand(n, -1), cfg, torch.Generator().manual_seed(0))
    return torch.bincount(ids, minlength=logits.shape[0]).float() / n


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sample_logits_draws_from_the_tempered_softmax(temperature):
    logits = torch.tensor([0.0, math.log(3.0), -1.0])
    freq = _draw_frequencies(SamplingConfig(temperature=temperature), logits)
    expected = (logits / temperature).softmax(-1)
    # 20,000 draws: a standard error under 0.0035 per id; the wrong temperature (x * T, or none) moves an id by > 0.05
    assert torch.allclose(freq, expected, atol=0.02), (freq, expected)


def test_sample_logits_applies_top_k_and_top_p():
    logits = torch.tensor([1.0, 0.9, 0.8, 0.7, 0.6])  # near-flat: every id would be drawn often without filters
    assert set(_draw_frequencies(SamplingConfig(top_k=2), logits).nonzero().flatten().tolist()) == {0, 1}
    probs = logits.softmax(-1)  # 0.234, 0.212, 0.192, ...: the first two reach 0.44
    assert set(_draw_frequencies(SamplingConfig(top_p=0.4), logits).nonzero().flatten().tolist()) == {0, 1}
    assert float(probs[:2].sum()) > 0.4 > float(probs[0])
    assert int(sample_logits(logits, SamplingConfig(temperature=0), None)) == 0  # greedy


@pytest.mark.parametrize("temperature", [1e-30, 1e-45, 1e-46, 5e-324])  # the last two are 0 in float32
def test_a_temperature_that_overflows_the_logits_still_draws_the_top_token(temperature):
    """logits / 1e-45 overflowed to inf and torch.multinomial raised on the NaN probabilities (exit 1 in the
    CLI, a 500 in the server); the limit of the tempered softmax is the greedy choice."""
    logits = torch.tensor([[0.5, 2.0, -1.0, 1.5], [3.0, -2.0, 0.0, 2.5]])
    ids = sample_logits(logits, SamplingConfig(temperature=temperature), torch.Generator().manual_seed(0))
    assert ids.tolist() == [1, 0]
    many = sample_logits(logits.repeat(500, 1), SamplingConfig(temperature=temperature), torch.Generator())
    assert many.view(500, 2).tolist() == [[1, 0]] * 500  # below float32's range it drew every token but the top


def test_a_huge_choice_temperature_never_remasks_fixed_tokens():
    """conf + c * gumbel overflowed to +inf for c = 1e300 and tied with the +inf that marks fixed tokens: order
    "clip" then re-drew 16 of the 64 context tokens it promises to keep."""
    model = tiny("maskgit")
    t = model.config.max_grid[0]
    context = torch.randint(0, model.config.vocab_size, (2, t - 1, 4, 4), generator=torch.Generator().manual_seed(7))
    for choice_temperature in (4.5, 1e300):
        sc = SamplingConfig(steps=8, choice_temperature=choice_temperature)
        out = sample_maskgit(model, cond2(), (t, 4, 4), order="clip", context=context, sampling=sc,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert torch.equal(out[:, : t - 1], context)
        assert bool((out != model.config.mask_id).all())


def _fixed_logits(monkeypatch, conf: torch.Tensor, vocab: int = 64) -> list[torch.Tensor]:
    """Makes every MaskGIT probe return the same logits: token 0 wins at every position, with a log-probability
    that grows with ``conf`` (token 1 trails it by ``conf``); records the ids each probe was given."""
    seen = []

    def logits(self, ids, coords, *, keep, progress):
        if not keep:
            seen.append(ids.clone())
        out = torch.full((ids.shape[0], ids.shape[1], vocab), -30.0)
        out[:, :, 0] = 0.0
        out[:, :, 1] = -conf
        return out

    monkeypatch.setattr(DecodeContext, "logits", logits)
    return seen


def test_maskgit_remasks_the_least_confident_tokens(monkeypatch):
    n = 16  # one frame of the tiny grid (4 x 4)
    conf = torch.randperm(n, generator=torch.Generator().manual_seed(0)).float() / 4  # distinct, in [0, 3.75]
    seen = _fixed_logits(monkeypatch, conf)
    sc = SamplingConfig(temperature=0.0, steps=2, choice_temperature=0.0, cfg_scale=1.0)
    sample_maskgit(tiny("maskgit"), cond2(), (1, 4, 4), order="frame", sampling=sc)
    k = num_masked_after_step(0, 2, n)
    still = (seen[1][0] == tiny("maskgit").config.mask_id).nonzero().flatten()
    assert 0 < k < n and set(still.tolist()) == set(conf.argsort()[:k].tolist())


@pytest.mark.parametrize("choice_temperature", [0.5, 1.0, 2.0])
def test_gumbel_noise_is_scaled_by_the_annealed_choice_temperature(monkeypatch, choice_temperature):
    """With fixed uniforms u the noise is -log(-log u); at step s of S its scale is c (1 - (s + 1) / S). The
    re-masked set after step 0 is the k lowest of conf + c/2 * g: neither the noiseless nor the un-annealed
    ranking (c * g), which differ from it for these draws."""
    n, steps = 16, 2
    g = torch.Generator().manual_seed(32)  # draws for which the three rankings differ at these scales
    conf = torch.rand(n, generator=g) * 3
    u = torch.rand(2, n, generator=g).clamp(1e-3, 1 - 1e-3)  # the uniforms the sampler will draw
    seen = _fixed_logits(monkeypatch, conf)
    monkeypatch.setattr(torch, "rand", lambda *a, **kw: u)
    sc = SamplingConfig(temperature=0.0, steps=steps, choice_temperature=choice_temperature, cfg_scale=1.0)
    sample_maskgit(tiny("maskgit"), cond2(), (1, 4, 4), order="frame", sampling=sc)
    logits = torch.full((n, 64), -30.0)
    logits[:, 0], logits[:, 1] = 0.0, -conf
    log_p = torch.log_softmax(logits, -1)[:, 0]
    gumbel = -torch.log(-torch.log(u[0]))
    k = num_masked_after_step(0, steps, n)
    expected = set((log_p + choice_temperature * 0.5 * gumbel).argsort()[:k].tolist())
    still = set((seen[1][0] == tiny("maskgit").config.mask_id).nonzero().flatten().tolist())
    assert still == expected
    assert expected != set(log_p.argsort()[:k].tolist())  # the test can tell "no noise"
    assert expected != set((log_p + choice_temperature * gumbel).argsort()[:k].tolist())  # ... and "not annealed"


def test_guidance_scale_one_is_the_conditional_model_and_g_extrapolates():
    m = tiny("ar")
    ids, coords = torch.full((2, 1), m.config.start_id), torch.tensor([[-1, -1, -1]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    with torch.no_grad():
        cond = m(ids, cond2(), coords=coords, mask=mask).float()
        null = m(ids, Condition(labels=cond2().labels, drop=torch.ones(2, dtype=torch.bool)), coords=coords,
                 mask=mask).float()  # fmt: skip
    assert not torch.allclose(cond, null)
    for scale in (1.0, 3.0):
        ctx = DecodeContext(m, cond2(), SamplingConfig(cfg_scale=scale), max_tokens=4)
        got = ctx.logits(ids, coords, keep=True, progress=0.0)
        assert torch.allclose(got, null + scale * (cond - null), atol=1e-5), scale


def test_rope_scores_depend_only_on_relative_position():
    rope = Rope3d(head_dim=24)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(24, generator=g), torch.randn(24, generator=g)

    def score(a, b):
        fa, fb = rope.freqs(torch.tensor([a])), rope.freqs(torch.tensor([b]))
        return float(Rope3d.rotate(q[None], fa) @ Rope3d.rotate(k[None], fb).T)

    base = score((1, 2, 3), (0, 1, 1))
    for shift in ((2, 0, 0), (0, 3, 0), (0, 0, 5), (4, 1, 2)):
        a = tuple(x + s for x, s in zip((1, 2, 3), shift))
        b = tuple(x + s for x, s in zip((0, 1, 1), shift))
        assert math.isclose(score(a, b), base, rel_tol=1e-4, abs_tol=1e-4), shift
    assert not math.isclose(score((1, 2, 3), (0, 1, 2)), base, abs_tol=1e-3)  # a different offset changes it
    for axis in range(3):  # every axis moves the score: a permutation bug or a dead axis fails
        c = [1, 2, 3]
        c[axis] += 1
        assert not math.isclose(score(tuple(c), (0, 1, 1)), base, abs_tol=1e-3), axis


def test_maskgit_defaults_to_clip_order_and_the_schedule_refuses_zero_steps():
    m = tiny("maskgit")
    grid = (1, 4, 4)
    a = sample_maskgit(m, cond2(), grid, generator=torch.Generator().manual_seed(0))
    b = sample_maskgit(m, cond2(), grid, order="clip", generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        num_masked_after_step(0, 0, 16)


@pytest.mark.timeout(120)
def test_maskgit_stops_a_unit_once_nothing_is_masked(monkeypatch):
    """More steps than tokens: a unit ends when its last token is drawn. The loop used to run the remaining
    steps empty (10**15 of them here, which held the web demo's only worker for ever)."""
    calls = _spy_logits(monkeypatch)
    grid = (1, 4, 4)
    out = sample_maskgit(tiny("maskgit"), cond2(), grid, order="cube", sampling=SamplingConfig(steps=10**15))
    assert out.shape == (2, *grid) and int(out.max()) < 64
    assert sum(not keep for keep, *_ in calls) <= 16  # at most one pass per token: 4 cubes of 4 tokens


def _spy_logits(monkeypatch) -> list[tuple[bool, float, int, torch.Tensor]]:
    """Records (keep, progress, cache length before the call, coords) of every ``DecodeContext.logits`` and
    ``DecodeContext.step_logits`` call (a step keeps its one token)."""
    calls = []
    original, original_step = DecodeContext.logits, DecodeContext.step_logits

    def spy(self, ids, coords, *, keep, progress, targets=None):
        calls.append((keep, progress, self.cache.length if self.cache is not None else -1, coords.clone()))
        return original(self, ids, coords, keep=keep, progress=progress, targets=targets)

    def step_spy(self, ids, tables, position, *, progress):
        calls.append((True, progress, self.cache.length, tables.coords[position : position + 1].clone()))
        return original_step(self, ids, tables, position, progress=progress)

    monkeypatch.setattr(DecodeContext, "logits", spy)
    monkeypatch.setattr(DecodeContext, "step_logits", step_spy)
    return calls


@pytest.mark.parametrize("use_cache", [True, False])
def test_gpt_style_guidance_sees_each_tokens_progress(monkeypatch, use_cache):
    """A linear CFG schedule ramps over the video: token i of L is drawn at progress i / L, on the cached one-token
    steps and on the uncached path alike (a planted bug in the cached steps went uncaught while only the uncached
    path's progress was planted)."""
    calls = _spy_logits(monkeypatch)
    grid = (2, 2, 2)
    sampling = SamplingConfig(cfg_scale=3.0, cfg_schedule="linear")
    sample_ar(tiny("ar"), cond2(), grid, order="token", sampling=sampling, use_cache=use_cache)
    assert [c[0] for c in calls] == [True] * 8
    assert [c[1] for c in calls] == pytest.approx([i / 8 for i in range(8)], abs=1e-12)


def test_maskgit_guidance_sees_each_steps_progress_and_every_unit_is_committed_before_the_next(monkeypatch):
    """Step s of unit u (of U, S steps each) runs at progress (u + s / S) / U; every finished unit but the last is
    written to the cache, so unit u's steps attend to the prefix and all u earlier units."""
    m = tiny("maskgit")
    calls = _spy_logits(monkeypatch)
    steps, U, n = 3, GRID[0], GRID[1] * GRID[2]  # frame order: one unit per latent frame
    sc = SamplingConfig(cfg_scale=3.0, cfg_schedule="linear", steps=steps)
    sample_maskgit(m, cond2(), GRID, order="frame", sampling=sc, generator=torch.Generator().manual_seed(0))
    probes = [c for c in calls if not c[0]]
    assert [c[1] for c in probes] == pytest.approx([(u + s / steps) / U for u in range(U) for s in range(steps)])
    assert [c[2] for c in probes] == [m.prefix_len + u * n for u in range(U) for _ in range(steps)]
    assert [c[2] for c in calls if c[0]] == [m.prefix_len + u * n for u in range(U - 1)]  # the commits


def test_gamma_on_tensors_follows_the_same_formulas_as_on_floats():
    """Training draws ratios for a tensor of r; sampling reads floats: both must be the same schedule."""
    r = torch.linspace(0, 1, 11, dtype=torch.float64)
    for schedule in ("cosine", "linear", "square"):
        expected = torch.tensor([gamma(float(x), schedule) for x in r], dtype=torch.float64)
        torch.testing.assert_close(gamma(r, schedule), expected, rtol=0, atol=1e-12)
    assert gamma(0.5) == pytest.approx(math.cos(math.pi / 4))  # the default schedule is cosine
    torch.testing.assert_close(gamma(r), torch.cos(math.pi / 2 * r))
    with pytest.raises(ValueError, match=r"unknown mask schedule 'cos'; choose from \['cosine', 'linear', 'square'\]"):
        gamma(r, "cos")


def test_sampling_config_bounds_are_inclusive_and_errors_say_which_setting():
    for ok in (dict(temperature=0.0), dict(top_k=0), dict(top_p=1.0), dict(top_p=1e-6), dict(cfg_scale=0.0),
               dict(cfg_scale=0.5), dict(steps=1), dict(cfg_schedule="linear"),
               dict(context_temperature=0.0), dict(mask_schedule="square"), dict(choice_temperature=0.0),
               dict(context_choice_temperature=0.0),
               dict(corrector_rounds=0), dict(corrector_fraction=1.0)):  # fmt: skip
        SamplingConfig(**ok)
    bad = {
        r"temperature must be >= 0, got -0.1": dict(temperature=-0.1),
        r"context_temperature must be >= 0, got -0.5": dict(context_temperature=-0.5),
        r"top_k must be >= 0, got -1": dict(top_k=-1),
        r"top_p must be in \(0, 1\], got 0.0": dict(top_p=0.0),
        r"top_p must be in \(0, 1\], got 1.5": dict(top_p=1.5),
        r"cfg_scale must be in \[0, 100\], got -1.0": dict(cfg_scale=-1.0),
        r"cfg_scale must be in \[0, 100\], got 1e\+39": dict(cfg_scale=1e39),
        r"cfg_schedule must be 'constant' or 'linear', got 'cosine'": dict(cfg_schedule="cosine"),
        r"steps must be >= 1, got 0": dict(steps=0),
        r"mask_schedule must be one of \['cosine', 'linear', 'square'\], got 'cosin'": dict(mask_schedule="cosin"),
        r"choice_temperature must be >= 0, got -1.0": dict(choice_temperature=-1.0),
        r"context_choice_temperature must be >= 0, got -2.0": dict(context_choice_temperature=-2.0),
        r"context_choice_temperature must be a finite number, got nan": dict(context_choice_temperature=float("nan")),
        r"corrector_rounds must be >= 0, got -1": dict(corrector_rounds=-1),
        r"corrector_fraction must be in \(0, 1\], got 0.0": dict(corrector_fraction=0.0),
        r"corrector_fraction must be in \(0, 1\], got 1.5": dict(corrector_fraction=1.5),
        r"corrector_fraction must be a finite number, got nan": dict(corrector_fraction=float("nan")),
        # NaN and inf passed `< 0`: a traceback from torch.multinomial, or garbage scored as a result
        r"cfg_scale must be a finite number, got nan": dict(cfg_scale=float("nan")),
        r"temperature must be a finite number, got inf": dict(temperature=float("inf")),
        r"context_temperature must be a finite number, got nan": dict(context_temperature=float("nan")),
        r"choice_temperature must be a finite number, got inf": dict(choice_temperature=float("inf")),
        # an int of 400 digits (a JSON body to the server) raised OverflowError: a 500, not a 400
        r"temperature must be a finite number, got an integer too large for a float": dict(temperature=10**400),
        r"cfg_scale must be a finite number, got an integer too large for a float": dict(cfg_scale=-(10**400)),
        # accepted, then a TypeError deep in torch.topk / range() at sampling time
        r"top_k must be an integer, got 2.5": dict(top_k=2.5),
        r"steps must be an integer, got 2.5": dict(steps=2.5),
        r"corrector_rounds must be an integer, got True": dict(corrector_rounds=True),
        r"top_k must be an integer, got None": dict(top_k=None),
        r"temperature must be a number, got '0.5'": dict(temperature="0.5"),
        r"cfg_scale must be a number, got True": dict(cfg_scale=True),
        r"mask_schedule must be a string, got 3": dict(mask_schedule=3),
    }
    refused_exactly(SamplingConfig, bad)


def test_a_grid_of_non_integers_is_refused_not_truncated():
    """make_layout called int() on each entry: a grid of 2.7 frames sampled 2 frames without a word."""
    m = tiny("maskgit")
    with pytest.raises(ValueError, match=r"token grid must be three integers \(t, h, w\), got \(2.7, 4, 4\)"):
        sample_maskgit(m, cond2(), (2.7, 4, 4), sampling=SamplingConfig(steps=2), generator=torch.Generator())


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
@pytest.mark.parametrize("bad", [[0.0, math.inf, -1.0], [0.0, math.nan, 3.0], [-math.inf, -math.inf, -math.inf]])
def test_logits_a_broken_model_gives_are_refused_not_sampled(bad, temperature):
    """A +inf logit became NaN in the overflow shift and was the one token never drawn (the others uniformly); greedy
    decoding returned a NaN's position; at T > 0 NaN or an all -inf row was a RuntimeError from torch.multinomial."""
    logits = torch.tensor([[0.0, 1.0, 2.0], bad])
    with pytest.raises(ValueError, match="NaN, \\+inf or -inf for every token"):
        sample_logits(logits, SamplingConfig(temperature=temperature), torch.Generator().manual_seed(0))
    some_masked = torch.tensor([[0.0, -math.inf, 2.0]])  # -inf on some tokens is a mask, and fine
    assert sample_logits(some_masked, SamplingConfig(temperature=temperature), None).item() in (0, 2)


def test_linear_guidance_ramps_from_one_to_the_scale():
    sc = SamplingConfig(cfg_scale=4.0, cfg_schedule="linear")
    assert [sc.guidance(p) for p in (0.0, 0.5, 1.0)] == pytest.approx([1.0, 2.5, 4.0])
    assert SamplingConfig(cfg_scale=4.0).guidance(0.3) == 4.0  # constant


@pytest.mark.parametrize("style", ["ar", "maskgit"])
def test_samplers_lay_cube_order_out_with_the_models_cube_size(style, monkeypatch):
    """Sampling must visit cubes of the model's cube size (what training used), not the default."""
    import dataclasses

    from generator import Generator, make_layout

    cfg = dataclasses.replace(tiny_all(style).config, cube_size=(1, 4, 2))
    torch.manual_seed(0)
    m = Generator(cfg).eval()
    calls = _spy_logits(monkeypatch)
    sampler = sample_ar if style == "ar" else sample_maskgit
    sampler(
        m, cond2(), GRID, order="cube", sampling=SamplingConfig(steps=2), generator=torch.Generator().manual_seed(1)
    )
    seen = [c[3] for c in calls]  # the coordinates of each call
    ours = make_layout(GRID, "cube", (1, 4, 2))
    assert not torch.equal(ours.coords, make_layout(GRID, "cube").coords)
    if style == "ar":  # one call per token: the start token, then every token but the last
        visited = torch.cat([c[-1:] for c in seen[1:]])
        assert torch.equal(visited, ours.coords[:-1])
    else:  # the first probe of every unit covers the unit's coordinates
        unit = ours.bounds[0][1]
        firsts = [c for c in seen if c.shape[0] == unit][::3]  # 2 steps + 1 commit per unit but the last
        assert torch.equal(torch.cat(firsts), ours.coords)


def test_decode_context_caches_by_default():
    m = tiny("ar")
    assert DecodeContext(m, cond2(), SamplingConfig(), max_tokens=4).cache is not None
    assert DecodeContext(m, cond2(), SamplingConfig(), max_tokens=4, use_cache=False).cache is None


def test_rope_frequencies_and_rotation_follow_the_formula():
    """head_dim 24: 12 pairs split t/h/w as 4/4/4, each axis with inverse frequencies base^(-i/n); a pair (x1, x2) at
    angle a becomes (x1 cos a - x2 sin a, x1 sin a + x2 cos a)."""
    rope = Rope3d(head_dim=24, base=100.0)
    assert rope.split == (4, 4, 4)
    expected = torch.tensor([100.0 ** (-i / 4) for i in range(4)])
    for axis in "thw":
        torch.testing.assert_close(getattr(rope, f"inv_{axis}"), expected)
    assert Rope3d(head_dim=20).split == (4, 3, 3)  # time takes the remainder
    coords = torch.tensor([[2, 1, 3]])
    ang = rope.angles(coords)[0]
    torch.testing.assert_close(ang, torch.cat([2 * expected, 1 * expected, 3 * expected]))
    x = torch.randn(1, 24)
    y = Rope3d.rotate(x, rope.freqs(coords))
    x1, x2 = x[0, 0::2], x[0, 1::2]
    torch.testing.assert_close(y[0, 0::2], x1 * ang.cos() - x2 * ang.sin(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y[0, 1::2], x1 * ang.sin() + x2 * ang.cos(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="^head_dim must be even for rotary embeddings, got 7$"):
        Rope3d(head_dim=7)
    default = torch.tensor([1e4 ** (-i / 4) for i in range(4)])  # base 10000
    torch.testing.assert_close(Rope3d(head_dim=24).inv_h, default, rtol=1e-6, atol=0)


def test_samplers_refuse_a_generator_of_the_other_style():
    with pytest.raises(ValueError, match="^sample_ar needs a generator with style 'ar'$"):
        sample_ar(tiny("maskgit"), cond2(), GRID)
    with pytest.raises(ValueError, match="^sample_maskgit needs a generator with style 'maskgit'$"):
        sample_maskgit(tiny("ar"), cond2(), GRID)


def test_attention_writes_its_layer_of_the_cache_layer_zero_by_default():
    from generator.kv_cache import KVCache
    from generator.layers import Attention

    attn, x = Attention(8, 2), torch.randn(1, 3, 8)
    freqs = Rope3d(4).freqs(torch.zeros(3, 3, dtype=torch.long))
    for layer in (None, 1):
        cache = KVCache(num_layers=2, batch=1, num_heads=2, max_len=4, head_dim=4)
        span = cache.reserve(3)
        with torch.no_grad():
            attn(x, freqs, None, cache, span=span) if layer is None else attn(x, freqs, None, cache, layer, span)
        written = [bool(cache.k[i].abs().sum() > 0) for i in range(2)]
        assert written == ([True, False] if layer is None else [False, True])
