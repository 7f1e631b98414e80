"""The GPT-style and MaskGIT samplers: coverage, cached and uncached runs, CFG, determinism and the
requests they refuse."""

import pytest
import torch

from generator import Condition, Generator, GeneratorConfig, make_layout
from generator.sampling import DecodeContext, SamplingConfig, sample_ar, sample_maskgit
from tests.helpers.tiny_generator import AR_ORDERS, GRID, MG_ORDERS, cond2, sampler, tiny, tiny_all


@pytest.mark.parametrize("style,order", [("ar", o) for o in AR_ORDERS] + [("maskgit", o) for o in MG_ORDERS])
def test_samplers_put_each_prediction_at_its_own_position(style, order, monkeypatch):
    """A model that predicts a different token for every grid position (a function of its coordinates) must be
    reproduced exactly: every position filled, by its own prediction, nothing left masked or out of place."""
    code = lambda coords: (coords[:, 0] * 16 + coords[:, 1] * 4 + coords[:, 2] + 7) % 64  # noqa: E731

    def logits(self, ids, coords, *, keep, progress, targets=None):
        out = torch.zeros(ids.shape[0], ids.shape[1], 66)
        target = coords.clone()
        if style == "ar":  # the logits at a fed token predict the next position
            lay = make_layout(GRID, order, (1, 2, 2))
            nxt = {tuple(c): i for i, c in enumerate(lay.coords.tolist())}
            idx = [0 if tuple(c) == (-1, -1, -1) else nxt[tuple(c)] + 1 for c in coords.tolist()]
            target = lay.coords[[min(i, lay.num_tokens - 1) for i in idx]]
        out.scatter_(-1, code(target)[None, :, None].expand(ids.shape[0], -1, 1), 10.0)
        return out

    def step_logits(self, ids, tables, position, *, progress):  # one fed token at `position` predicts the next
        lay = make_layout(GRID, order, (1, 2, 2))
        out = torch.zeros(ids.shape[0], 66)
        out[:, int(code(lay.coords[position + 1 : position + 2]))] = 10.0
        return out

    monkeypatch.setattr(DecodeContext, "logits", logits)
    monkeypatch.setattr(DecodeContext, "step_logits", step_logits)
    sc = SamplingConfig(temperature=0.0, steps=3, choice_temperature=0.0, cfg_scale=1.0)
    ids = sampler(style)(tiny_all(style), cond2(), GRID, order=order, sampling=sc)
    t, h, w = torch.meshgrid(*(torch.arange(n) for n in GRID), indexing="ij")
    assert torch.equal(ids, code(torch.stack([t, h, w], -1).view(-1, 3)).view(1, *GRID).expand(2, -1, -1, -1))


@pytest.mark.parametrize("style,order", [("ar", "token"), ("ar", "frame"), ("maskgit", "frame"), ("maskgit", "clip")])
def test_samplers_refuse_grids_longer_than_trained(style, order):
    """Positions past max_grid were never trained; long videos are the pipeline's (re-encoding) job."""
    with pytest.raises(ValueError, match="larger than the model's maximum"):
        sampler(style)(tiny(style), cond2(), (GRID[0] + 1, 4, 4), order=order)


@pytest.mark.parametrize("style,order", [("ar", "cube"), ("maskgit", "cube"), ("maskgit", "token")])
def test_samplers_with_and_without_cache_agree(style, order, monkeypatch):
    """Multi-unit orders only: a single unit (order 'clip') never uses a cache, so it would compare a path to itself.
    ``use_cache=False`` must really recompute: no forward pass of that run gets a cache."""
    m = tiny_all(style)
    caches = []
    original = Generator.forward

    def spy(self, ids, cond, cache=None, **kw):
        caches.append(cache)
        return original(self, ids, cond, cache, **kw)

    monkeypatch.setattr(Generator, "forward", spy)
    sc = SamplingConfig(temperature=1.0, steps=4, cfg_scale=2.0, top_k=20)
    a = sampler(style)(m, cond2(), GRID, order=order, sampling=sc, generator=torch.Generator().manual_seed(3))
    assert any(c is not None for c in caches)
    caches.clear()
    b = sampler(style)(
        m, cond2(), GRID, order=order, sampling=sc, generator=torch.Generator().manual_seed(3), use_cache=False
    )
    assert caches and all(c is None for c in caches)
    assert torch.equal(a, b)


@pytest.mark.parametrize("style", ["ar", "maskgit"])
def test_guidance_scale_one_equals_conditional(style):
    m = tiny(style)
    layout = make_layout(GRID, "frame")
    ids = torch.randint(0, 64, (2, 16))
    plain = DecodeContext(m, cond2(), SamplingConfig(cfg_scale=1.0), 49, use_cache=False)
    # linear schedule at progress 0 has scale 1, but runs the batched cond+uncond path
    guided = DecodeContext(m, cond2(), SamplingConfig(cfg_scale=5.0, cfg_schedule="linear"), 49, use_cache=False)
    assert guided.guided and not plain.guided
    a = plain.logits(ids, layout.coords[:16], keep=False, progress=0.0)
    b = guided.logits(ids, layout.coords[:16], keep=False, progress=0.0)
    assert (a - b).abs().max() < 1e-5
    c = guided.logits(ids, layout.coords[:16], keep=False, progress=1.0)
    assert (a - c).abs().max() > 1e-3  # and guidance does act at scale 5


@pytest.mark.parametrize("style", ["ar", "maskgit"])
def test_fixed_seed_gives_identical_tokens(style):
    m = tiny(style)
    sc = SamplingConfig(temperature=1.0, cfg_scale=2.0, steps=4, top_p=0.9)
    run = lambda seed: sampler(style)(
        m, cond2(), GRID, order="frame", sampling=sc, generator=torch.Generator().manual_seed(seed)
    )  # noqa: E731
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


@pytest.mark.parametrize("style,order", [("maskgit", o) for o in MG_ORDERS] + [("ar", o) for o in AR_ORDERS])
def test_the_condition_prefix_is_computed_once_per_video(style, order, monkeypatch):
    """Every order, unit 0 and 'clip' included: the prefix is embedded once, and the result is what
    recomputing everything at every step gives."""
    m = tiny_all(style)
    calls = []
    original = m.cond_emb.forward
    monkeypatch.setattr(m.cond_emb, "forward", lambda cond: calls.append(1) or original(cond))
    kw = dict(order=order, sampling=SamplingConfig(steps=3, cfg_scale=2.0, temperature=1.0))
    cached = sampler(style)(m, cond2(), GRID, generator=torch.Generator().manual_seed(5), **kw)
    assert len(calls) == 1
    plain = sampler(style)(m, cond2(), GRID, generator=torch.Generator().manual_seed(5), use_cache=False, **kw)
    assert torch.equal(cached, plain)


def test_unknown_class_id():
    m = tiny("ar")
    with pytest.raises(ValueError, match="unknown class id 5"):
        sample_ar(m, Condition(labels=torch.tensor([5])), GRID)
    with pytest.raises(ValueError, match="unknown class id -1"):
        sample_ar(m, Condition(labels=torch.tensor([-1])), GRID)


def test_grid_larger_than_model_maximum():
    m = tiny("maskgit")
    with pytest.raises(ValueError, match="larger than the model's maximum"):
        sample_maskgit(m, cond2(), (3, 8, 4), order="frame")
    with pytest.raises(ValueError, match="larger than the model's maximum"):
        sample_maskgit(m, cond2(), (5, 4, 4), order="clip")


def test_unsupported_order_and_style():
    with pytest.raises(ValueError, match="supports orders"):
        sample_ar(tiny("ar"), cond2(), GRID, order="clip")
    frame_only = tiny("maskgit", orders=("frame",))
    with pytest.raises(ValueError, match=r"this maskgit generator supports orders \['frame'\], not 'clip'"):
        sample_maskgit(frame_only, cond2(), GRID, order="clip")
    with pytest.raises(ValueError, match="needs style 'maskgit'"):
        GeneratorConfig(style="ar", orders=("clip",))
