"""Unit tests for the sign quantizers LFQ and BSQ: ids, codes and entropy losses, against full enumeration
of the sign vectors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.tiny_quantizers import (
    SHAPE,
    _seed,  # noqa: F401
    flat,
    latent,
)
from tokenizer.quantizers import BSQ, LFQ, BSQConfig, LFQConfig


def sign_grid(dim: int) -> torch.Tensor:
    """(2**dim, dim) all sign vectors; row k has +1 at channel i iff bit i of k is set."""
    rows = [tuple(reversed(bits)) for bits in itertools.product((-1.0, 1.0), repeat=dim)]
    return torch.tensor(rows)  # itertools varies the last element fastest; reversed: channel 0


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def soft_entropies(x: torch.Tensor, codes: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample and codebook entropy of softmax(-||x - c||^2 / T) over all codes."""
    p = (-torch.cdist(x, codes).pow(2) / temperature).softmax(dim=1)  # (N, K)
    return entropy(p).mean(), entropy(p.mean(dim=0))


def test_grouped_code_entropy_runs_in_the_latents_precision() -> None:
    """float64 latents get float64 codes: the entropies match full enumeration to double precision."""
    from tokenizer.quantizers.sign import enumerate_signs, grouped_code_entropy

    x = torch.randn(50, 4, dtype=torch.float64)
    per_sample, codebook = grouped_code_entropy(x, enumerate_signs(4), 4, 1.0, 0.5)
    ref = soft_entropies(x, sign_grid(4).double(), 0.5)
    assert per_sample.dtype == torch.float64
    torch.testing.assert_close(per_sample, ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(codebook, ref[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls, cfg_cls", [(LFQ, LFQConfig), (BSQ, BSQConfig)])
def test_binary_quantizers_match_full_enumeration(cls: type, cfg_cls: type) -> None:
    dim, temperature = 6, (1.0 if cls is LFQ else 0.2)
    kw = dict(dim=dim, entropy_temperature=temperature, entropy_weight=0.3, codebook_entropy_weight=0.7)
    q = cls(cfg_cls(**kw, entropy_group_size=dim))
    z = latent(q)
    out = q(z)
    x = flat(z) if cls is LFQ else F.normalize(flat(z), dim=1)
    grid = sign_grid(dim) if cls is LFQ else sign_grid(dim) / math.sqrt(dim)
    # LFQ: nearest corner; BSQ: largest inner product with the unit-norm latent.
    ref = torch.cdist(x, grid).argmin(dim=1) if cls is LFQ else (x @ grid.T).argmax(dim=1)
    assert torch.equal(out.ids.reshape(-1), ref)
    torch.testing.assert_close(flat(out.codes), grid[ref], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.losses["commit"], 0.25 * (x - grid[ref]).pow(2).mean())
    per_sample, codebook = soft_entropies(x, grid, temperature)
    assert per_sample > 1e-2 and codebook > 1e-2  # the comparison below is not vacuous
    torch.testing.assert_close(out.stats["per_sample_entropy"], per_sample)
    torch.testing.assert_close(out.stats["codebook_entropy"], codebook)
    torch.testing.assert_close(out.losses["entropy"], 0.3 * (per_sample - 0.7 * codebook))
    # Split into groups of 4 + 2 bits: per-sample entropy stays exact, codebook entropy is
    # the sum of marginal entropies, which can only exceed the joint one.
    grouped = cls(cfg_cls(**kw, entropy_group_size=4))(z)
    torch.testing.assert_close(grouped.stats["per_sample_entropy"], per_sample)
    assert grouped.stats["codebook_entropy"] >= codebook - 1e-5
    if cls is BSQ:
        torch.testing.assert_close(out.codes.norm(dim=1), torch.ones(SHAPE))


def test_lfq_and_bsq_ids_are_sign_bits_and_codes_their_scaled_signs():
    """LFQ (MAGVIT-v2): code = sign(z) in {-1, 1}^D, id = sum_i [z_i > 0] 2^i. BSQ (Zhao et al. 2024): the same
    bits after projecting z onto the unit sphere, code = sign / sqrt(D)."""
    z = torch.tensor([0.4, -2.0, 0.1, -0.3, 5.0]).view(1, 5, 1, 1, 1)
    expected_id = 1 * 1 + 0 * 2 + 1 * 4 + 0 * 8 + 1 * 16
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    lfq = LFQ(LFQConfig(dim=5))
    out = lfq(z)
    assert out.ids.item() == expected_id and torch.equal(out.codes.flatten(), signs)
    bsq = BSQ(BSQConfig(dim=5))
    out = bsq(z)
    assert out.ids.item() == expected_id
    assert torch.allclose(out.codes.flatten(), signs / math.sqrt(5)) and abs(out.codes.norm().item() - 1) < 1e-6
    assert torch.equal(bsq.ids_to_codes(torch.tensor([[[[expected_id]]]])).flatten(), signs / math.sqrt(5))


def test_sign_quantizers_send_an_exact_zero_to_bit_zero() -> None:
    """The documented convention: x_i == 0 counts as bit 0, code -code_scale."""
    z = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1, 1)
    for q in (LFQ(LFQConfig(dim=3)), BSQ(BSQConfig(dim=3))):
        out = q(z)
        assert out.ids.item() == 2
        assert (out.codes.flatten()[[0, 2]] < 0).all()
        assert q.codes_to_ids(z).item() == 2  # the same convention for a latent given to codes_to_ids
