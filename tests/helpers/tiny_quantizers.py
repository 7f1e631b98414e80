"""Tiny VQ, FSQ, LFQ and BSQ quantizers and the latents the quantizer tests feed them."""

from __future__ import annotations

import pytest
import torch

from tokenizer.quantizers import BSQ, FSQ, LFQ, VQ, BSQConfig, FSQConfig, LFQConfig, Quantizer, VQConfig

SHAPE = (2, 3, 4, 4)  # (B, t, h, w)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make(name: str) -> Quantizer:
    """Tiny quantizers; group sizes below D so that the grouped path is exercised."""
    return {
        "vq": lambda: VQ(VQConfig(codebook_size=64, dim=4)),
        "vq_learned": lambda: VQ(VQConfig(codebook_size=64, dim=4, use_ema=False, l2_normalize=False)),
        "fsq": lambda: FSQ(FSQConfig(levels=(2, 3, 4, 5))),
        "lfq": lambda: LFQ(LFQConfig(dim=6, entropy_group_size=4)),
        "bsq": lambda: BSQ(BSQConfig(dim=6, entropy_group_size=4)),
    }[name]()


NAMES = ["vq", "vq_learned", "fsq", "lfq", "bsq"]


def latent(q: Quantizer, scale: float = 1.0) -> torch.Tensor:
    b, t, h, w = SHAPE
    return torch.randn(b, q.dim, t, h, w) * scale


def flat(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 4, 1).reshape(-1, x.shape[1])  # (B, D, t, h, w) -> (N, D)
