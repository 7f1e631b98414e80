"""The GPT-style hot path: ``DecodingLinear``'s products and ``DecodeContext.step_logits``.

Both are speed paths that must compute what the general forward pass computes: the same products up to rounding,
the same rotary positions, target positions, key masks and guidance mix.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from generator import Condition, Generator, GeneratorConfig, make_layout
from generator.layers import ROW_PRODUCT_MAX, DecodingLinear
from generator.sampling import SamplingConfig
from generator.sampling.context import DecodeContext, StepTables

GRID = (3, 4, 4)


def text_model(target_positions: bool, orders: tuple[str, ...] = ("token", "cube", "frame")) -> Generator:
    """Without target positions a GPT-style model serves one layout: give it one order."""
    cfg = GeneratorConfig(style="ar", orders=orders, vocab_size=64, max_grid=GRID, dim=32,
                          depth=2, num_heads=2, cond="text", text_dim=12, max_text_len=6, text_pooled=True,
                          target_positions=target_positions)  # fmt: skip
    torch.manual_seed(0)
    return Generator(cfg).eval().decoding_layout_()


def padded_text(batch: int) -> Condition:
    """Text features whose rows have different lengths, so the prefix has padding keys (the cache's key mask)."""
    g = torch.Generator().manual_seed(3)
    mask = torch.arange(6)[None] < torch.tensor([6, 2, 4, 3][:batch])[:, None]
    return Condition(text=torch.randn(batch, 6, 12, generator=g), text_mask=mask)


@pytest.mark.parametrize("out", [80, 81, 1])
@pytest.mark.parametrize("rows", [1, 2, 3, 16, ROW_PRODUCT_MAX, ROW_PRODUCT_MAX + 1])
def test_decoding_linear_matches_f_linear_for_every_row_count(rows, out):
    """Every formulation gives F.linear's values, odd output counts (F.linear for one row) included; a transposed
    result is still the right (rows, out) matrix, with or without a leading batch dimension."""
    torch.manual_seed(0)
    lin = DecodingLinear(48, out)
    w = lin.weight.detach().clone()
    lin.decoding_layout_()
    for shape in ((rows, 1, 48), (rows, 48)):
        x = torch.randn(shape)
        with torch.inference_mode():
            y = lin(x)
        assert y.shape == (*shape[:-1], out)
        torch.testing.assert_close(y, F.linear(x, w), atol=1e-5, rtol=1e-5)


def test_decoding_linear_is_exact_on_a_column_major_weight():
    """A weight stored column-major (a layout nn.Linear's users may set) cannot be viewed as two halves: one row
    goes through F.linear, several through ``W @ x.T`` on the strided weight."""
    torch.manual_seed(0)
    lin = DecodingLinear(32, 64)
    lin.weight = torch.nn.Parameter(lin.weight.detach().t().contiguous().t())
    lin.decoding_layout_()
    for rows in (1, 5):
        x = torch.randn(rows, 32)
        with torch.inference_mode():
            torch.testing.assert_close(lin(x), x @ lin.weight.detach().T, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("out", [9, 10])
@pytest.mark.parametrize("rows", [1, 4])
def test_decoding_linear_never_uses_a_stale_weight(rows, out):
    """The products follow the parameter when it is loaded, changed in place, written through ``.data`` (which
    leaves ``_version`` unchanged: a cached copy keyed on it went stale there) or converted."""
    torch.manual_seed(0)
    lin = DecodingLinear(16, out)
    lin.decoding_layout_()
    x = torch.randn(rows, 16)
    with torch.inference_mode():
        lin(x)
    new = torch.randn(out, 16)
    lin.load_state_dict({"weight": new})
    with torch.inference_mode():
        torch.testing.assert_close(lin(x), x @ new.T, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        lin.weight.mul_(2.0)
    with torch.inference_mode():
        torch.testing.assert_close(lin(x), x @ (2 * new).T, atol=1e-5, rtol=1e-5)
    lin.weight.data.copy_(-new)  # an EMA swap or weight surgery
    with torch.inference_mode():
        torch.testing.assert_close(lin(x), x @ (-new).T, atol=1e-5, rtol=1e-5)
    lin.to(torch.float64)
    with torch.inference_mode():
        y = lin(x.double())
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, x.double() @ (-new).double().T)


def test_decoding_linear_keeps_gradients_flowing():
    """Under autograd the layer is a plain F.linear: gradients reach the weight and the input."""
    torch.manual_seed(0)
    lin = DecodingLinear(16, 8)
    lin.decoding_layout_()
    x = torch.randn(4, 16, requires_grad=True)
    lin(x).square().sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


@pytest.mark.parametrize("target_positions", [False, True])
@pytest.mark.parametrize("cfg", [(1.0, "constant"), (3.0, "linear")])
@pytest.mark.parametrize("order", ["token", "cube", "frame"])
def test_step_logits_equal_the_general_forward_pass(target_positions, cfg, order):
    """Teacher-forced over a whole video, every one-token step's logits equal those of the forward pass: same
    rotary position, target position, padding mask and guidance (mixed before the head instead of after)."""
    m = text_model(target_positions, ("token", "cube", "frame") if target_positions else (order,))
    cond = padded_text(2)
    sc = SamplingConfig(cfg_scale=cfg[0], cfg_schedule=cfg[1])
    layout = make_layout(GRID, order, m.config.cube_size)
    L = layout.num_tokens
    seq = torch.randint(0, 64, (2, L), generator=torch.Generator().manual_seed(1))
    general = DecodeContext(m, cond, sc, max_tokens=1 + L)
    lean = DecodeContext(m, cond, sc, max_tokens=1 + L)
    tables = StepTables.build(m, layout)
    start = torch.full((2, 1), m.config.start_id)
    targets = layout.coords if target_positions else None
    with torch.inference_mode():
        first = [
            ctx.logits(start, torch.tensor([[-1, -1, -1]]), keep=True, progress=0.0,
                       targets=None if targets is None else targets[:1])[:, -1]
            for ctx in (general, lean)
        ]  # fmt: skip
        torch.testing.assert_close(first[0], first[1], rtol=0, atol=0)
        worst = 0.0
        for i in range(1, L):
            fed = seq[:, i - 1 : i]
            a = general.logits(fed, layout.coords[i - 1 : i], keep=True, progress=i / L,
                               targets=None if targets is None else targets[i : i + 1])[:, -1]  # fmt: skip
            b = lean.step_logits(fed, tables, i - 1, progress=i / L)
            assert b.shape == a.shape == (2, 64)
            worst = max(worst, float((a - b).abs().max() / a.abs().max()))
    assert worst < 1e-4, worst


def test_step_logits_need_a_filled_cache():
    m = text_model(False, ("token",))
    layout = make_layout(GRID, "token", m.config.cube_size)
    ctx = DecodeContext(m, padded_text(2), SamplingConfig(), max_tokens=4)
    with pytest.raises(ValueError, match="filled"):
        ctx.step_logits(torch.zeros(2, 1, dtype=torch.long), StepTables.build(m, layout), 0, progress=0.0)
