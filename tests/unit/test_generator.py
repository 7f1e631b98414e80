"""The block-causal generator: causality, KV cache, coverage, schedules, CFG, determinism, bad input."""

import math

import pytest
import torch

from generator import Condition, Generator, GeneratorConfig, ObjectiveConfig, generator_loss, make_layout
from generator.kv_cache import KVCache
from generator.layers import DecodingLinear
from generator.sampling import (
    DecodeContext,
    SamplingConfig,
    gamma,
    num_masked_after_step,
    sample_ar,
    sample_maskgit,
    training_mask,
)
from generator.units import causal_mask, two_stream_mask

GRID = (3, 4, 4)
AR_ORDERS = ("token", "cube", "frame")
MG_ORDERS = ("token", "cube", "frame", "clip")


def tiny(style: str, **kw) -> Generator:
    """Without target positions a GPT-style model serves one layout: token and frame (the same raster), unless
    ``orders`` says otherwise; :func:`tiny_all` gives one that serves every order."""
    default = AR_ORDERS if kw.get("target_positions") else ("token", "frame")
    orders = kw.pop("orders", default if style == "ar" else MG_ORDERS)
    cfg = GeneratorConfig(
        style=style,
        orders=orders,
        vocab_size=64,
        max_grid=GRID,
        dim=32,
        depth=2,
        num_heads=2,
        num_classes=5,
        cube_size=(1, 2, 2),
        **kw,
    )
    torch.manual_seed(0)
    return Generator(cfg).eval()


def tiny_all(style: str, **kw) -> Generator:
    """A model that samples and trains every order of its style (GPT-style: with target positions)."""
    return tiny(style, **({"target_positions": True} if style == "ar" else {}), **kw)


def cond2():
    return Condition(labels=torch.tensor([1, 4]))


def sampler(style):
    return sample_ar if style == "ar" else sample_maskgit


# ---------------------------------------------------------------- layouts
def reference_coords(grid, unit):
    """(t, h, w) of every sequence position, by nested loops: units in raster order, tokens raster inside."""
    (t, h, w), (ct, ch, cw) = grid, unit
    return [(ut * ct + i, uh * ch + j, uw * cw + k)
            for ut in range(t // ct) for uh in range(h // ch) for uw in range(w // cw)
            for i in range(ct) for j in range(ch) for k in range(cw)]  # fmt: skip


@pytest.mark.parametrize("grid,order,cube,unit", [
    (GRID, "token", (1, 2, 2), (1, 1, 1)), (GRID, "frame", (1, 2, 2), (1, 4, 4)), (GRID, "clip", (1, 2, 2), GRID),
    (GRID, "cube", (1, 2, 2), (1, 2, 2)), ((2, 4, 6), "cube", (2, 2, 3), (2, 2, 3)),
    ((4, 4, 4), "cube", (2, 2, 2), (2, 2, 2)),
])  # fmt: skip
def test_layouts_follow_their_definition(grid, order, cube, unit):
    """Sequence order against an independent nested-loop definition, for every order and several cube shapes
    (all cubes, not only the first); units are contiguous runs of the stated size."""
    layout = make_layout(grid, order, cube)
    assert [tuple(c) for c in layout.coords.tolist()] == reference_coords(grid, unit)
    size = unit[0] * unit[1] * unit[2]
    assert layout.unit == unit and layout.bounds == tuple((u * size, (u + 1) * size) for u in range(layout.num_units))
    ids = torch.randint(0, 64, (2, *grid))
    seq = layout.to_sequence(ids)
    t, h, w = layout.coords.unbind(1)
    assert torch.equal(seq, ids[:, t, h, w])  # position i holds the token at coords[i]
    assert torch.equal(layout.to_grid(seq), ids)
    with pytest.raises(ValueError, match=rf"^expected a token grid of shape \(B, {', '.join(map(str, grid))}\), got"):
        layout.to_sequence(ids[:, :, :, :-1])  # a grid of another size is refused, not silently reordered


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


# ---------------------------------------------------------------- causality
@pytest.mark.parametrize("order", AR_ORDERS)
def test_ar_training_pass_is_causal(order):
    m = tiny("ar")
    layout = make_layout(GRID, order, (1, 2, 2))
    L = layout.num_tokens
    ids = torch.randint(0, 64, (2, L))
    kw = dict(coords=layout.coords, mask=causal_mask(L))
    base = m(ids, cond2(), **kw)
    for p in (5, 17, 40):
        other = ids.clone()
        other[:, p] = (other[:, p] + 1) % 64
        out = m(other, cond2(), **kw)
        assert torch.equal(out[:, :p], base[:, :p])
        assert not torch.allclose(out[:, p:], base[:, p:])


@pytest.mark.parametrize("order", ["cube", "frame", "token"])
def test_maskgit_unit_causality(order):
    """A change in unit j (clean or masked stream) never reaches predictions of units before j."""
    m = tiny("maskgit")
    layout = make_layout(GRID, order, (1, 2, 2))
    L = layout.num_tokens
    clean = torch.randint(0, 64, (1, L))
    noisy = clean.masked_fill(torch.rand(1, L) < 0.5, 64)
    kw = dict(coords=torch.cat([layout.coords] * 2), mask=two_stream_mask(layout.unit_of))
    base = m(torch.cat([clean, noisy], 1), Condition(labels=torch.tensor([2])), **kw)[:, L:]
    for j in (1, layout.num_units // 2, layout.num_units - 1):
        a, b = layout.bounds[j]
        for stream in (0, 1):
            x = torch.cat([clean, noisy], 1).clone()
            x[:, stream * L + a] = (x[:, stream * L + a] + 3) % 64
            out = m(x, Condition(labels=torch.tensor([2])), **kw)[:, L:]
            assert torch.equal(out[:, :a], base[:, :a]), (j, stream)
            changed_from = a if stream == 1 else b  # clean unit j is context only for later units
            if changed_from < L:
                assert not torch.allclose(out[:, changed_from:], base[:, changed_from:])


# ---------------------------------------------------------------- KV cache
@pytest.mark.parametrize("style,order", [("ar", o) for o in AR_ORDERS] + [("maskgit", o) for o in MG_ORDERS])
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_cached_logits_equal_recomputation(style, order, cfg_scale):
    m = tiny(style)
    layout = make_layout(GRID, order, (1, 2, 2))
    sc = SamplingConfig(cfg_scale=cfg_scale)
    cached = DecodeContext(m, cond2(), sc, max_tokens=49, use_cache=True)
    plain = DecodeContext(m, cond2(), sc, max_tokens=49, use_cache=False)
    g = torch.Generator().manual_seed(1)
    if style == "ar":
        calls = [(torch.full((2, 1), 65), torch.tensor([[-1, -1, -1]]), True)]
        calls += [
            (torch.randint(0, 64, (2, 1), generator=g), layout.coords[i : i + 1], True)
            for i in range(layout.num_tokens - 1)
        ]
    else:
        calls = []
        for a, b in layout.bounds:
            calls.append((torch.randint(0, 65, (2, b - a), generator=g), layout.coords[a:b], False))
            calls.append((torch.randint(0, 64, (2, b - a), generator=g), layout.coords[a:b], True))
    for ids, coords, keep in calls:
        x = cached.logits(ids, coords, keep=keep, progress=0.5)
        y = plain.logits(ids, coords, keep=keep, progress=0.5)
        assert (x - y).abs().max() < 1e-5


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


# ---------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule", ["cosine", "linear", "square"])
@pytest.mark.parametrize("steps,n", [(1, 16), (8, 16), (12, 48), (20, 4)])
def test_schedule_values_follow_their_formulas(schedule, steps, n):
    """gamma is MaskGIT's masked fraction: cos(pi r / 2), 1 - r or 1 - r^2; after step s of S, floor(gamma((s+1)/S) n)
    tokens stay masked (none after the last step)."""
    formula = {"cosine": lambda r: math.cos(math.pi * r / 2), "linear": lambda r: 1 - r, "square": lambda r: 1 - r * r}
    for r in (0.0, 0.1, 0.25, 0.5, 0.9, 1.0):
        assert gamma(r, schedule) == pytest.approx(formula[schedule](r), abs=1e-12)
    left = [num_masked_after_step(s, steps, n, schedule) for s in range(steps)]
    expected = [math.floor(formula[schedule]((s + 1) / steps) * n) for s in range(steps - 1)] + [0]
    assert left == expected


def test_training_mask_masks_every_unit_and_follows_schedule():
    layout = make_layout(GRID, "frame")
    m = training_mask(layout.unit_of, 4000, "cosine", torch.Generator().manual_seed(0))
    per_unit = m.view(4000, 3, 16).sum(-1)
    assert int(per_unit.min()) >= 1
    # E[ceil(cos(pi/2 r) * 16)] / 16 is about 2/pi + 1/32
    assert float(per_unit.float().mean() / 16) == pytest.approx(2 / math.pi + 1 / 32, abs=0.02)


# ---------------------------------------------------------------- CFG and determinism
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


# ---------------------------------------------------------------- bad input
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


def test_cube_that_does_not_divide_grid():
    with pytest.raises(ValueError, match=r"cube size \(2, 2, 2\) does not divide the token grid \(3, 4, 4\)"):
        make_layout(GRID, "cube", (2, 2, 2))
    with pytest.raises(ValueError, match="does not divide"):
        GeneratorConfig(orders=("cube",), max_grid=(3, 4, 4), cube_size=(1, 3, 2))


def test_unsupported_order_and_style():
    with pytest.raises(ValueError, match="supports orders"):
        sample_ar(tiny("ar"), cond2(), GRID, order="clip")
    frame_only = Generator(
        GeneratorConfig(
            style="maskgit",
            orders=("frame",),
            vocab_size=64,
            max_grid=GRID,
            dim=32,
            depth=2,
            num_heads=2,
            num_classes=5,
        )
    )
    with pytest.raises(ValueError, match=r"this maskgit generator supports orders \['frame'\], not 'clip'"):
        sample_maskgit(frame_only, cond2(), GRID, order="clip")
    with pytest.raises(ValueError, match="needs style 'maskgit'"):
        GeneratorConfig(style="ar", orders=("clip",))


def test_objective_runs_for_every_order_and_gradients_flow():
    for style, orders in (("ar", AR_ORDERS), ("maskgit", MG_ORDERS)):
        m = tiny_all(style).train()
        for order in orders:
            m.zero_grad()
            out = generator_loss(
                m,
                torch.randint(0, 64, (2, *GRID)),
                cond2(),
                ObjectiveConfig(orders=(order,)),
                torch.Generator().manual_seed(0),
            )
            out.loss.backward()
            loss = float(out.loss.detach())
            assert math.isfinite(loss) and abs(loss - math.log(64)) < 0.5
            assert m.tok_emb.weight.grad.abs().sum() > 0 and m.cond_emb.class_emb.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- devices
def test_condition_and_generator_report_their_device():
    assert Condition().device == torch.device("cpu") and cond2().device == torch.device("cpu")
    on_meta = Condition(labels=torch.tensor([1, 4], device="meta"))
    assert on_meta.device.type == "meta"
    assert on_meta.with_null().drop.device.type == "meta"  # the null rows land where the labels are
    m = tiny("ar")
    assert m.device == torch.device("cpu") and m.to("meta").device.type == "meta"


# ------------------------------------------------- target positions: one GPT-style model, several orders
def test_target_positions_tell_each_input_what_it_predicts():
    """Logits at input i depend on targets[i] and on nothing else of the targets (causality kept)."""
    m = tiny("ar", target_positions=True)
    layout = make_layout(GRID, "cube", (1, 2, 2))
    L = layout.num_tokens
    ids = torch.randint(0, 64, (2, L))
    coords = torch.cat([torch.full((1, 3), -1), layout.coords[:-1]])
    base = m(ids, cond2(), coords=coords, mask=causal_mask(L), targets=layout.coords)
    moved = layout.coords.clone()
    moved[5] = layout.coords[9]
    out = m(ids, cond2(), coords=coords, mask=causal_mask(L), targets=moved)
    changed = (out - base).abs().amax(dim=(0, 2)) > 1e-6
    assert changed[5] and changed[6:].any() and not changed[:5].any()


def test_target_positions_are_required_and_gpt_style_only():
    m = tiny("ar", target_positions=True)
    with pytest.raises(ValueError, match="give targets"):
        m(torch.zeros(2, 3, dtype=torch.long), cond2(), coords=torch.zeros(3, 3, dtype=torch.long),
          mask=causal_mask(3))  # fmt: skip
    with pytest.raises(ValueError, match="GPT-style"):
        tiny("maskgit", target_positions=True)


@pytest.mark.parametrize("order", AR_ORDERS)
def test_target_positions_cache_equals_recompute_in_every_order(order):
    m = tiny("ar", target_positions=True)
    kw = dict(order=order, sampling=SamplingConfig(temperature=1.0))
    cached = sample_ar(m, cond2(), GRID, generator=torch.Generator().manual_seed(3), **kw)
    plain = sample_ar(m, cond2(), GRID, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    assert torch.equal(cached, plain)


def test_target_positions_train_in_every_order():
    m = tiny("ar", target_positions=True).train()
    ids = torch.randint(0, 64, (2, *GRID))
    for order in AR_ORDERS:
        out = generator_loss(m, ids, cond2(), ObjectiveConfig(orders=(order,)), torch.Generator().manual_seed(0))
        out.loss.backward()
    assert all(t.weight.grad is not None and t.weight.grad.abs().sum() > 0 for t in m.target_emb.axes)


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


def test_xformers_bias_is_aligned_and_equals_the_mask():
    """xformers needs a materialized bias whose rows start on 8-element boundaries (keys padded, then sliced)."""
    from generator.layers import xformers_bias

    for K in (5, 8, 13, 330):
        mask = torch.rand(1, 1, 7, K) > 0.3
        bias = xformers_bias(mask, torch.float32, (2, 3, 7, K))
        assert bias.shape == (2, 3, 7, K) and bias.stride(-2) % 8 == 0 and bias.stride(1) != 0
        assert torch.equal(bias == 0, mask.expand(2, 3, 7, K)) and torch.isinf(bias[~mask.expand(2, 3, 7, K)]).all()
    for dtype in (torch.bfloat16, torch.float16):  # the attention's dtype: xformers refuses a bias of another
        assert xformers_bias(mask, dtype, (2, 3, 7, 330)).dtype == dtype


def test_decoding_layout_keeps_values_outputs_and_the_state_dict():
    m = tiny("ar")
    state = {k: v.clone() for k, v in m.state_dict().items()}
    ids = torch.randint(0, 64, (2, 5))
    coords, mask = make_layout((1, 2, 4), "token").coords[:5], torch.ones(5, 5, dtype=torch.bool).tril()
    with torch.no_grad():
        before = m(ids, cond2(), coords=coords, mask=mask)
        m.decoding_layout_()
        after = m(ids, cond2(), coords=coords, mask=mask)
    linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    decoding = [mod for mod in linears if isinstance(mod, DecodingLinear)]
    assert decoding == linears and all(mod.decoding and mod.weight.is_contiguous() for mod in decoding)
    text = tiny("ar", cond="text", text_dim=12, max_text_len=6).decoding_layout_()
    others = [mod for mod in text.modules() if type(mod) is torch.nn.Linear]  # the text projection's
    assert others and all(mod.weight.t().is_contiguous() and not mod.weight.is_contiguous() for mod in others)
    assert state.keys() == m.state_dict().keys() and all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    assert torch.allclose(before, after, atol=1e-5)


def test_decoding_layout_keeps_frozen_weights_frozen():
    """A frozen model (a pipeline's generator) must stay frozen: the new parameters keep ``requires_grad``."""
    m = tiny("ar").requires_grad_(False)
    m.blocks[0].attn.qkv.weight.requires_grad_(True)  # one trainable weight among frozen ones
    m.decoding_layout_()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.0.attn.qkv.weight"}


def test_kv_cache_takes_the_models_dtype_is_never_saved_and_keeps_a_boolean_key_mask():
    m = tiny("ar").to(torch.bfloat16)
    cache = m.new_cache(2, 8)
    assert cache.k.dtype == cache.v.dtype == torch.bfloat16 and cache.valid.dtype == torch.bool
    assert cache.state_dict() == {}  # a cache is scratch space, never part of a checkpoint
    assert KVCache(1, 1, 1, 4, 2, dtype=torch.float64).k.dtype == torch.float64
    cache.reserve(2, torch.ones(2, 2, dtype=torch.bool))  # validity given, all True: still no key mask needed
    assert cache.all_valid


def test_rms_norm_follows_its_formula_with_its_weight_and_eps():
    """x / sqrt(mean(x^2) + eps) * weight; small inputs show eps (1e-6), a learned weight scales each channel."""
    from generator.layers import RMSNorm

    norm = RMSNorm(4, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
    x = torch.tensor([[1e-4, -2e-4, 3e-4, 0.0], [1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.double()
    torch.testing.assert_close(norm(x.float()).double(), expected, rtol=1e-5, atol=1e-6)


def test_xformers_backend_falls_back_to_sdpa_off_cuda():
    """attention_backend 'xformers' is CUDA-only: on CPU the same weights give SDPA's logits."""
    import dataclasses

    sdpa = tiny("ar")
    xf = Generator(dataclasses.replace(sdpa.config, attention_backend="xformers"))
    xf.load_state_dict(sdpa.state_dict())
    ids = torch.randint(0, 64, (2, 5))
    coords, mask = make_layout((1, 2, 4), "token").coords[:5], torch.ones(5, 5, dtype=torch.bool).tril()
    with torch.no_grad():
        assert torch.equal(xf(ids, cond2(), coords=coords, mask=mask), sdpa(ids, cond2(), coords=coords, mask=mask))


def test_kv_cache_reserve_rewind_and_reset():
    cache = KVCache(num_layers=1, batch=2, num_heads=1, max_len=6, head_dim=2)
    assert cache.reserve(2) == (0, 2) and cache.all_valid
    assert cache.reserve(2, torch.tensor([[True, False], [True, True]])) == (2, 4) and not cache.all_valid
    assert cache.valid[:, :4].tolist() == [[True, True, True, False], [True, True, True, True]]
    cache.rewind(3)
    assert cache.length == 3
    cache.rewind(3)  # to its own length: nothing to forget, not an error
    assert cache.length == 3
    with pytest.raises(ValueError, match="cannot rewind a cache of length 3 to 4"):
        cache.rewind(4)
    with pytest.raises(ValueError, match="cannot rewind a cache of length 3 to -1"):
        cache.rewind(-1)
    with pytest.raises(ValueError, match="KV cache overflow: 7 positions needed, 6 allocated"):
        cache.reserve(4)
    cache.reset()
    assert cache.length == 0 and cache.all_valid and cache.reserve(6) == (0, 6)
    cache.rewind(2)  # without padding a rewind keeps the cache all-valid: decoding steps need no key mask
    assert cache.all_valid and cache.reserve(1) == (2, 3) and cache.all_valid


def test_transformer_blocks_have_bias_free_linears_and_the_stated_widths():
    """Block linears carry no bias (the parameter layout saved models rely on); SwiGLU's hidden width is rounded up
    to a multiple of 8 (a multiple stays as it is); RoPE tables are not saved."""
    from generator.layers import Attention, SwiGLU

    m = tiny("ar")
    for block in m.blocks:
        for lin in (block.attn.qkv, block.attn.proj, block.mlp.w13, block.mlp.w2):
            assert lin.bias is None
    assert SwiGLU(32, 40).w2.in_features == 40 and SwiGLU(32, 41).w2.in_features == 48
    assert SwiGLU(32, 41).w13.out_features == 96
    assert not any("rope" in k or k.startswith("inv_") for k in m.state_dict())
    with pytest.raises(ValueError, match="^dim 30 is not divisible by num_heads 4$"):
        Attention(30, 4)


def test_layout_knows_its_order_and_refuses_bad_grids_and_cubes():
    for order in ("token", "frame", "cube", "clip"):
        assert make_layout(GRID, order).order == order
    with pytest.raises(ValueError, match=r"^token grid must be positive, got \(0, 4, 4\)$"):
        make_layout((0, 4, 4), "frame")
    with pytest.raises(ValueError, match=r"^cube size must be three positive ints, got \(0, 2, 2\)$"):
        make_layout(GRID, "cube", (0, 2, 2))
    with pytest.raises(ValueError, match=r"^unknown order 'row'; choose from \['token', 'cube', 'frame', 'clip'\]$"):
        make_layout(GRID, "row")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("num_heads", 0, "num_heads must be an integer >= 1"), ("depth", 0, "depth must be"), ("dim", 0, "dim must be"),
     ("vocab_size", -5, "vocab_size must be"), ("max_grid", (0, 4, 4), "max_grid must be three integers"),
     ("mlp_ratio", -1.0, "mlp_ratio must be a positive number"), ("depth", True, "depth must be"),
     ("num_heads", 64, "even head size of at least 6"),  # head size 4: 3D RoPE gave h and w no frequency
     # built in Python (YAML was checked): style "AR" trained as MaskGIT and then did not load; "xformer" ran SDPA
     ("style", "AR", "style must be one of"), ("cond", "txt", "cond must be one of"),
     ("attention_backend", "xformer", "attention_backend must be one of")],
)  # fmt: skip
def test_generator_sizes_that_make_no_model_are_refused(field, value, message):
    """num_heads 0 was a ZeroDivisionError (a traceback from every CLI), depth 0 or -1 built a model without a
    block, dim 0 one without parameters, and vocab_size -5 or mlp_ratio -1 failed later inside torch."""
    with pytest.raises(ValueError, match=message):
        GeneratorConfig(**{field: value})


def test_the_loss_refuses_ids_that_are_not_codes():
    """The mask or start id as a GPT-style target was an IndexError inside cross_entropy (a device assert on CUDA);
    left unmasked in a MaskGIT grid it trained silently as a clean context token."""
    from generator.objectives import ObjectiveConfig, generator_loss

    for style in ("ar", "maskgit"):
        m = tiny(style).train()
        ids = torch.randint(0, 64, (2, *GRID))
        generator_loss(m, ids, cond2(), ObjectiveConfig(orders=("frame",)))  # codes: fine
        for bad in (m.config.mask_id, m.config.start_id, -1):
            wrong = ids.clone()
            wrong[0, 0, 0, 0] = bad
            with pytest.raises(ValueError, match=r"token ids must be codes in \[0, 64\)"):
                generator_loss(m, wrong, cond2(), ObjectiveConfig(orders=("frame",)))
        with pytest.raises(ValueError, match="must be integers"):
            generator_loss(m, ids.float(), cond2(), ObjectiveConfig(orders=("frame",)))


def test_forward_refuses_inputs_it_cannot_take_in_one_line():
    """A cache of another batch size was a matmul shape error; targets outside the grid an IndexError; float or
    empty ids a RuntimeError."""
    from generator.kv_cache import KVCache

    m = tiny("ar", target_positions=True)
    layout = make_layout(GRID, "token")
    ids, coords = torch.zeros(2, 3, dtype=torch.long), layout.coords[:3]
    mask = torch.ones(3, 3, dtype=torch.bool).tril()
    cache = KVCache(m.config.depth, 3, m.config.num_heads, 64, m.config.dim // m.config.num_heads)
    with pytest.raises(ValueError, match="the cache holds 3 rows but ids have 2"):
        m(ids, cond2(), cache, coords=coords, mask=mask, targets=layout.coords[1:4])
    with pytest.raises(ValueError, match=r"targets must lie in the grid \(3, 4, 4\)"):
        m(ids, cond2(), coords=coords, mask=mask, targets=torch.tensor([[0, 0, 1], [0, 0, 2], [9, 0, 0]]))
    for bad in (ids.float(), torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 3, 1, dtype=torch.long)):
        with pytest.raises(ValueError, match="ids must be"):
            m(bad, cond2(), coords=coords, mask=mask, targets=layout.coords[1:4])
    # coordinates outside the grid were rotated by angles the model never saw, silently; a start row is -1 in full
    for bad in ([[0, 0, 0], [0, 4, 0], [0, 0, 1]], [[0, 0, 0], [-1, 0, 0], [0, 0, 1]], [[3, 0, 0]] * 3):
        with pytest.raises(ValueError, match=r"coords must lie in the grid \(3, 4, 4\)"):
            m(ids, cond2(), coords=torch.tensor(bad), mask=mask, targets=layout.coords[1:4])
    with pytest.raises(ValueError, match="coords must be integer"):
        m(ids, cond2(), coords=coords.float(), mask=mask, targets=layout.coords[1:4])
    start = torch.cat([torch.full((1, 3), -1), layout.coords[:2]])
    assert m(ids, cond2(), coords=start, mask=mask, targets=layout.coords[:3]).shape == (2, 3, 64)


def test_rotary_frequencies_stay_float32_when_the_model_is_cast():
    """``.to(bfloat16)`` rounded the inverse frequencies to 8 bits (0.1 -> 0.10010, up to 0.1% off): every rotary angle
    of a bf16 model was off against the fp32 model it was made from, by up to 0.002 rad on the shipped generator's
    5x8x8 grid."""
    m32 = tiny("ar")
    for dtype in (torch.bfloat16, torch.float16):
        m = tiny("ar").to(dtype)
        for axis in "thw":
            ref, got = getattr(m32.rope, f"inv_{axis}"), getattr(m.rope, f"inv_{axis}")
            assert got.dtype == torch.float32 and torch.equal(got, ref)
        coords = make_layout(GRID, "token").coords
        assert torch.equal(m.rope.angles(coords), m32.rope.angles(coords))
    m = tiny("ar").to(torch.bfloat16).float()  # and back: not the rounded values cast up
    assert torch.equal(m.rope.inv_h, m32.rope.inv_h)


def test_a_gpt_style_model_without_target_positions_serves_one_layout():
    """token and cube orders without target positions were accepted: at position 2 both give the model the same
    inputs at the same rotary positions but ask for different grid cells, so training averaged two targets."""
    with pytest.raises(ValueError, match=r"lay tokens out differently: one model learns them all only with"):
        GeneratorConfig(style="ar", orders=("token", "cube"), max_grid=GRID, dim=32, num_heads=2)
    GeneratorConfig(style="ar", orders=("token", "frame"), max_grid=GRID, dim=32, num_heads=2)  # one raster
    GeneratorConfig(style="ar", orders=("token", "cube"), max_grid=GRID, dim=32, num_heads=2, target_positions=True)
    GeneratorConfig(style="ar", orders=("frame", "cube"), cube_size=(1, 1, 1), max_grid=GRID, dim=32, num_heads=2)
