"""The block-causal generator: causality, target positions, the training objective, devices, and the configs
and inputs it refuses."""

import math

import pytest
import torch

from generator import Condition, GeneratorConfig, ObjectiveConfig, generator_loss, make_layout
from generator.sampling import SamplingConfig, sample_ar
from generator.units import causal_mask, two_stream_mask
from tests.helpers.tiny_generator import AR_ORDERS, GRID, MG_ORDERS, cond2, tiny, tiny_all


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


def test_condition_and_generator_report_their_device():
    assert Condition().device == torch.device("cpu") and cond2().device == torch.device("cpu")
    on_meta = Condition(labels=torch.tensor([1, 4], device="meta"))
    assert on_meta.device.type == "meta"
    assert on_meta.with_null().drop.device.type == "meta"  # the null rows land where the labels are
    m = tiny("ar")
    assert m.device == torch.device("cpu") and m.to("meta").device.type == "meta"


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


def test_a_gpt_style_model_without_target_positions_serves_one_layout():
    """token and cube orders without target positions were accepted: at position 2 both give the model the same
    inputs at the same rotary positions but ask for different grid cells, so training averaged two targets."""
    with pytest.raises(ValueError, match=r"lay tokens out differently: one model learns them all only with"):
        GeneratorConfig(style="ar", orders=("token", "cube"), max_grid=GRID, dim=32, num_heads=2)
    GeneratorConfig(style="ar", orders=("token", "frame"), max_grid=GRID, dim=32, num_heads=2)  # one raster
    GeneratorConfig(style="ar", orders=("token", "cube"), max_grid=GRID, dim=32, num_heads=2, target_positions=True)
    GeneratorConfig(style="ar", orders=("frame", "cube"), cube_size=(1, 1, 1), max_grid=GRID, dim=32, num_heads=2)
