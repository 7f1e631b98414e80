"""Unit tests for the FSQ quantizer: its bound, codes, ids and bound loss, against the paper's formulas
written out here."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tests.helpers.tiny_quantizers import (
    _seed,  # noqa: F401
    flat,
    latent,
)
from tokenizer.quantizers import FSQ, FSQConfig


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (2, 3, 4, 5)])
def test_fsq_matches_nearest_neighbour_over_enumerated_grid(levels: tuple[int, ...]) -> None:
    q = FSQ(FSQConfig(levels=levels))
    z = latent(q, scale=2.0)
    out = q(z)
    # The paper's bound, written out per channel.
    bounded = torch.empty_like(z)
    for i, level in enumerate(levels):
        half_l = (level - 1) * (1 - 1e-3) / 2
        offset = 0.5 if level % 2 == 0 else 0.0
        bounded[:, i] = torch.tanh(z[:, i] + math.tan(offset / half_l)) * half_l - offset
    # Implicit codebook, row k = id k with channel 0 the fastest digit, in normalized units.
    axes = [[(v - level // 2) / (level // 2) for v in range(level)] for level in levels]
    grid = torch.tensor([tuple(reversed(c)) for c in itertools.product(*reversed(axes))])
    assert grid.shape == (math.prod(levels), len(levels))
    scale = torch.tensor([level // 2 for level in levels], dtype=torch.float)
    nearest = torch.cdist(flat(bounded) / scale, grid).argmin(dim=1)  # (N,)
    assert torch.equal(out.ids.reshape(-1), nearest)
    torch.testing.assert_close(flat(out.codes), grid[nearest], rtol=0, atol=1e-6)
    assert out.losses == {} and out.codes.abs().max() <= 1.0


def test_fsq_bound_loss_penalizes_only_saturated_latents():
    from tokenizer.quantizers.fsq import FSQ, FSQConfig

    q = FSQ(FSQConfig(levels=(7, 5), bound_loss_weight=1.0))
    calm = torch.full((1, 2, 1, 2, 2), 0.5)
    assert float(q(calm).losses["bound"]) == 0.0
    hot = torch.full((1, 2, 1, 2, 2), 6.0, requires_grad=True)
    loss = q(hot).losses["bound"]
    loss.backward()
    loss = loss.detach()
    assert loss.item() > 10 and hot.grad.min().item() > 0  # pushes |z| back towards tanh's range
    assert FSQ(FSQConfig(levels=(7, 5))).forward(hot).losses == {}


def test_fsq_codes_and_ids_follow_the_paper_formulas():
    """FSQ (Mentzer et al. 2023): bound(z) = tanh(z + shift) * half_l - offset with half_l = (L - 1)(1 - eps) / 2,
    offset 0.5 for even L, shift = tan(offset / half_l); codes round(bound) / (L // 2); ids are mixed-radix
    digits (round(bound) + L // 2), first channel least significant."""
    levels = (8, 5, 3)
    q = FSQ(FSQConfig(levels=levels))
    z = torch.tensor([0.3, -1.7, 2.5]).view(1, 3, 1, 1, 1)
    eps = 1e-3
    digits, codes = [], []
    for zi, L in zip(z.flatten().tolist(), levels):
        half_l = (L - 1) * (1 - eps) / 2
        offset = 0.5 if L % 2 == 0 else 0.0
        bounded = math.tanh(zi + math.tan(offset / half_l)) * half_l - offset
        digits.append(round(bounded) + L // 2)
        codes.append(round(bounded) / (L // 2))
    out = q(z)
    assert out.ids.item() == digits[0] + 8 * digits[1] + 8 * 5 * digits[2]
    assert torch.allclose(out.codes.flatten(), torch.tensor(codes))
    assert q.codebook_size == 8 * 5 * 3


def test_fsq_codes_to_ids_sends_off_grid_codes_to_the_nearest_grid_code() -> None:
    q = FSQ(FSQConfig(levels=(8, 5)))
    codes = torch.tensor([3.0, -3.0]).view(1, 2, 1, 1, 1)  # beyond +1 and -1
    assert q.codes_to_ids(codes).item() == 7 + 8 * 0  # the top digit of the first channel, the bottom of the second
    assert q.codes_to_ids(-codes).item() == 0 + 8 * 4


def test_fsq_bound_and_bound_loss_follow_their_formulas_for_even_levels() -> None:
    """Even L has offset 0.5 and a non-zero shift: bound(z) = tanh(z + shift) * half_l - offset, and the bound loss
    is weight * mean(relu(|z + shift| - bound_range)^2)."""
    levels, eps, weight, limit = (8, 5), 1e-3, 0.7, 1.5
    q = FSQ(FSQConfig(levels=levels, bound_loss_weight=weight, bound_range=limit))
    z = torch.tensor([[-3.0, 0.2], [2.5, -0.4], [1.7, 3.1]]).T.reshape(1, 2, 1, 1, 3)  # (B, D, t, h, w)
    expected_bound, expected_excess = torch.empty_like(z), torch.empty_like(z)
    for c, L in enumerate(levels):
        half_l = (L - 1) * (1 - eps) / 2
        offset = 0.5 if L % 2 == 0 else 0.0
        shift = math.tan(offset / half_l)
        expected_bound[:, c] = torch.tanh(z[:, c] + shift) * half_l - offset
        expected_excess[:, c] = ((z[:, c] + shift).abs() - limit).clamp_min(0)
    torch.testing.assert_close(q.bound(z), expected_bound)
    torch.testing.assert_close(q(z).losses["bound"], weight * expected_excess.square().mean())


def test_fsq_ids_do_not_change_when_the_module_is_cast_to_half_precision() -> None:
    """Its bounds were float buffers, so ``.to(bfloat16)`` rounded half_l (2.997 -> 3.0) and the same fp32 latents
    got other ids (about 0.5% of them for these levels)."""
    q = FSQ(FSQConfig(levels=(7, 5, 5, 5, 5)))
    z = torch.randn(8, 5, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 2
    ref = q(z).ids
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(q.to(dtype)(z).ids, ref), dtype
