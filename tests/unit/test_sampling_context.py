"""Samplers continuing from context tokens: kept as given, prefilled once, the same with and without a cache,
and refused for orders whose units would cross the context boundary."""

import pytest
import torch

from generator import Condition, make_layout
from generator.sampling import SamplingConfig, sample_ar, sample_maskgit
from generator.sampling.context import context_sequence
from tests.helpers.tiny_generator import GRID, cond2, sampler, tiny, tiny_all

CASES = [("ar", "token"), ("ar", "frame"), ("ar", "cube"), ("maskgit", "frame"), ("maskgit", "cube"),
         ("maskgit", "token"), ("maskgit", "clip")]  # fmt: skip


def context_ids(t_c: int) -> torch.Tensor:
    return torch.randint(0, 64, (2, t_c, *GRID[1:]), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("style,order", CASES)
@pytest.mark.parametrize("t_c", [1, 2])
def test_context_is_kept_and_cache_equals_recomputation(style, order, t_c):
    m, ctx = tiny_all(style), context_ids(t_c)
    sc = SamplingConfig(temperature=1.0, steps=3, cfg_scale=2.0, top_k=20)
    kw = dict(order=order, context=ctx, sampling=sc)
    a = sampler(style)(m, cond2(), GRID, generator=torch.Generator().manual_seed(3), **kw)
    b = sampler(style)(m, cond2(), GRID, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    assert a.shape == (2, *GRID)
    assert torch.equal(a[:, :t_c], ctx)  # the context comes back as given
    assert torch.equal(a, b)  # the prefilled / committed context equals recomputing it every step


@pytest.mark.parametrize("style,order", [("ar", "frame"), ("maskgit", "frame"), ("maskgit", "clip")])
def test_generated_frames_depend_on_the_context(style, order):
    """Different context tokens change what is generated after them (the context is read, not ignored)."""
    m = tiny(style)
    sc = SamplingConfig(temperature=0.0, steps=3)
    outs = [
        sampler(style)(
            m, cond2(), GRID, order=order, context=c, sampling=sc, generator=torch.Generator().manual_seed(0)
        )
        for c in (context_ids(1), (context_ids(1) + 5) % 64)
    ]
    assert not torch.equal(outs[0][:, 1:], outs[1][:, 1:])


def test_ar_prefills_the_context_in_one_pass():
    """GPT-style: start token + every context token in one forward, then one one-token step per generated token."""
    m, ctx = tiny("ar"), context_ids(2)
    forwards, steps = [], []
    forward, decode_step = m.forward, m.decode_step

    def counting_forward(ids, *args, **kwargs):
        forwards.append(ids.shape[1])
        return forward(ids, *args, **kwargs)

    def counting_step(ids, *args, **kwargs):
        steps.append(ids.shape[1])
        return decode_step(ids, *args, **kwargs)

    m.forward, m.decode_step = counting_forward, counting_step
    sample_ar(m, cond2(), GRID, order="frame", context=ctx, generator=torch.Generator().manual_seed(0))
    per_frame = GRID[1] * GRID[2]
    assert forwards == [1 + 2 * per_frame] and steps == [1] * (per_frame - 1)


def test_ar_with_context_equals_teacher_forced_greedy_decoding():
    """Greedy continuation equals the argmax of a full forward pass over the result: each generated token is the
    most likely one given the condition, the context and the tokens before it."""
    m, ctx = tiny("ar"), context_ids(1)
    lay = make_layout(GRID, "frame")
    got = sample_ar(
        m, cond2(), GRID, order="frame", context=ctx, sampling=SamplingConfig(temperature=0.0, cfg_scale=1.0)
    )
    seq = lay.to_sequence(got)
    start = torch.full((2, 1), m.config.start_id)
    coords = torch.cat([torch.tensor([[-1, -1, -1]]), lay.coords[:-1]])
    L = lay.num_tokens
    mask = torch.ones(L, L, dtype=torch.bool).tril()
    with torch.no_grad():
        logits = m(torch.cat([start, seq[:, :-1]], 1), cond2(), coords=coords, mask=mask)
    pred = logits.argmax(-1)
    free = slice(GRID[1] * GRID[2], L)
    assert torch.equal(pred[:, free], seq[:, free])


def test_orders_that_cannot_take_the_context_are_refused():
    lay = make_layout((4, 4, 4), "cube", (2, 2, 2))
    with pytest.raises(ValueError, match="cross the context boundary"):
        context_sequence(lay, torch.zeros(1, 1, 4, 4, dtype=torch.long), 1, whole_units=True)
    assert context_sequence(lay, torch.zeros(1, 2, 4, 4, dtype=torch.long), 1, whole_units=True)[1] == 32
    whole = make_layout((2, 4, 4), "cube", (2, 4, 4))  # one unit, time-major inside: its first frame is a prefix
    assert context_sequence(whole, torch.zeros(1, 1, 4, 4, dtype=torch.long), 1, whole_units=False)[1] == 16
    across = make_layout((2, 4, 4), "cube", (2, 2, 2))  # latent frame 0 is not the first 16 tokens
    with pytest.raises(ValueError, match="cross the context boundary"):
        context_sequence(across, torch.zeros(1, 1, 4, 4, dtype=torch.long), 1, whole_units=False)
    seq, n = context_sequence(make_layout(GRID, "frame"), torch.full((1, 1, 4, 4), 9), 1, whole_units=True)
    assert n == 16 and torch.equal(seq[0, :16], torch.full((16,), 9))
    assert torch.equal(seq[0, 16:], torch.full((32,), -1))  # positions to generate hold -1


@pytest.mark.parametrize("style,order", [("ar", "frame"), ("maskgit", "frame"), ("maskgit", "clip")])
def test_context_ids_that_are_not_codes_are_refused(style, order):
    """A -1 was taken for a free position in clip order, the mask id came back in the grid, a float was truncated."""
    m = tiny(style)
    good = context_ids(1)
    bad = {"-1": good.clone().index_put_((torch.tensor([0]),), torch.tensor(-1)),
           "mask id": torch.full_like(good, m.config.mask_id), "float": good.float() + 0.7}  # fmt: skip
    for ctx in bad.values():
        with pytest.raises(ValueError, match="^context (token ids must lie in|must hold integer)"):
            sampler(style)(m, cond2(), GRID, order=order, context=ctx, sampling=SamplingConfig(steps=2))


def test_gpt_style_continues_token_by_token_inside_a_cube():
    """GPT-style decoding needs no unit boundary: a cube of two latent frames can start from its first frame (the
    context), which MaskGIT, decoding whole cubes, refuses."""
    import dataclasses

    from generator import Generator

    grid = (4, 4, 4)
    ctx = torch.randint(0, 64, (2, 1, 4, 4), generator=torch.Generator().manual_seed(7))
    for style in ("ar", "maskgit"):
        cfg = dataclasses.replace(tiny_all(style).config, cube_size=(2, 4, 4), max_grid=grid)
        torch.manual_seed(0)
        m = Generator(cfg).eval()
        if style == "maskgit":
            with pytest.raises(ValueError, match="cross the context boundary"):
                sample_maskgit(m, cond2(), grid, order="cube", context=ctx)
            continue
        out = sample_ar(m, cond2(), grid, order="cube", context=ctx, generator=torch.Generator().manual_seed(0))
        assert out.shape == (2, *grid) and torch.equal(out[:, :1], ctx)


@pytest.mark.parametrize("bad", [(2, 3, 4, 4), (2, 1, 4, 3), (1, 1, 4, 4), (2, 0, 4, 4)])
def test_bad_context_shapes_are_refused(bad):
    with pytest.raises(ValueError, match="context"):
        sample_maskgit(tiny("maskgit"), cond2(), GRID, order="frame", context=torch.zeros(bad, dtype=torch.long))


def test_an_empty_context_is_named_as_empty():
    """A (B, 0, h, w) context was refused as one that "leaves nothing to generate": the opposite of the problem."""
    with pytest.raises(ValueError, match="the context is empty"):
        sample_maskgit(
            tiny("maskgit"), cond2(), GRID, order="frame", context=torch.zeros((2, 0, 4, 4), dtype=torch.long)
        )


def test_context_of_a_single_condition_row():
    m = tiny("maskgit")
    out = sample_maskgit(m, Condition(labels=torch.tensor([1])), GRID, order="frame", context=context_ids(1)[:1])
    assert out.shape == (1, *GRID)


def test_gpt_style_token_and_frame_orders_are_the_same_sampler():
    """Frame units are raster-ordered tokens under a causal mask, like token units: the same draws give the same
    ids, with and without context (so the token order's measurements are the frame order's)."""
    m, ctx = tiny("ar"), context_ids(1)
    for context in (None, ctx):
        a, b = (sample_ar(m, cond2(), GRID, order=o, context=context, generator=torch.Generator().manual_seed(5))
                for o in ("token", "frame"))  # fmt: skip
        assert torch.equal(a, b)


@pytest.mark.parametrize("style,order", [("ar", "frame"), ("maskgit", "frame"), ("maskgit", "clip")])
def test_context_temperature_applies_exactly_when_the_grid_continues_context(style, order, monkeypatch):
    """``context_temperature`` is the temperature of every draw after given context tokens, and of none without."""
    import generator.sampling.ar as ar_module
    import generator.sampling.maskgit as maskgit_module

    module = ar_module if style == "ar" else maskgit_module
    drawn_at = []

    def spy(logits, cfg, generator):
        drawn_at.append(cfg.temperature)
        return real(logits, cfg, generator)

    real = module.sample_logits
    monkeypatch.setattr(module, "sample_logits", spy)
    sc = SamplingConfig(temperature=1.3, context_temperature=0.2, steps=2)
    for context, expected in ((None, 1.3), (context_ids(1), 0.2)):
        drawn_at.clear()
        sampler(style)(tiny(style), cond2(), GRID, order=order, context=context, sampling=sc,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert drawn_at and set(drawn_at) == {expected}
    assert SamplingConfig(temperature=1.3).for_context().temperature == 1.3  # unset: the temperature itself


@pytest.mark.parametrize("order", ["frame", "clip"])
def test_context_choice_temperature_is_the_gumbel_scale_exactly_when_the_grid_continues_context(order, monkeypatch):
    """MaskGIT fills every unit after given context tokens with ``context_choice_temperature`` as its choice
    temperature (the scale of the Gumbel noise on confidences), and with ``choice_temperature`` without context."""
    import generator.sampling.maskgit as maskgit_module

    scales = []

    def fill(ctx, cur, coords, sampling, generator, steps, progress, on_step):
        scales.append(sampling.choice_temperature)
        return real_fill(ctx, cur, coords, sampling, generator, steps, progress, on_step)

    real_fill = maskgit_module._fill
    monkeypatch.setattr(maskgit_module, "_fill", fill)
    sc = SamplingConfig(temperature=1.0, choice_temperature=4.5, context_choice_temperature=0.5, steps=2)
    for context, expected in ((None, 4.5), (context_ids(1), 0.5)):
        scales.clear()
        sample_maskgit(tiny("maskgit"), cond2(), GRID, order=order, context=context, sampling=sc,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert scales and set(scales) == {expected}
    assert SamplingConfig(choice_temperature=3.0).for_context().choice_temperature == 3.0  # unset: its own


def test_context_choice_temperature_draws_what_that_choice_temperature_draws():
    """Same seed: MaskGIT after context with context_choice_temperature C gives the ids of choice temperature C."""
    m, ctx = tiny("maskgit"), context_ids(1)

    def draw(**settings):
        return sample_maskgit(m, cond2(), GRID, order="frame", context=ctx, generator=torch.Generator().manual_seed(4),
                              sampling=SamplingConfig(temperature=1.0, steps=4, **settings))  # fmt: skip

    assert torch.equal(draw(choice_temperature=9.0, context_choice_temperature=0.0), draw(choice_temperature=0.0))


def test_context_temperature_draws_what_that_temperature_draws():
    """Same seed: sampling after context with context_temperature T gives the ids of temperature T."""
    m, ctx = tiny("ar"), context_ids(1)
    a = sample_ar(m, cond2(), GRID, order="frame", context=ctx, generator=torch.Generator().manual_seed(4),
                  sampling=SamplingConfig(temperature=2.0, context_temperature=0.0))  # fmt: skip
    b = sample_ar(m, cond2(), GRID, order="frame", context=ctx, generator=torch.Generator().manual_seed(4),
                  sampling=SamplingConfig(temperature=0.0))  # fmt: skip
    assert torch.equal(a, b)
