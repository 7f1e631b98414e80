"""The quantizer interface shared by VQ, FSQ, LFQ and BSQ.

A quantizer maps a continuous latent ``z`` of shape (B, D, t, h, w) to discrete ids of shape
(B, t, h, w) and back to codes of shape (B, D, t, h, w). During training the codes carry a
straight-through gradient to ``z``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    Attributes:
        codes: (B, D, t, h, w) quantized latent, straight-through to the input.
        ids: (B, t, h, w) long code indices in [0, codebook_size).
        losses: named scalar losses, already weighted (e.g. ``commit``, ``entropy``).
        stats: named scalar diagnostics, detached (``usage``, ``perplexity``, ...).
    """

    codes: torch.Tensor
    ids: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


DENSE_USAGE_MAX = 2**20  # larger codebooks count only the codes that occur


def usage_stats(ids: torch.Tensor, codebook_size: int) -> dict[str, torch.Tensor]:
    """Codebook usage and perplexity of a batch of ids.

    Args:
        ids: long tensor of any shape with values in [0, codebook_size).
        codebook_size: number of codes.

    Returns:
        ``usage``: fraction of codes hit at least once; ``perplexity``: exp of the entropy of
        the empirical code distribution (equals codebook_size when use is uniform).
    """
    flat = ids.detach().reshape(-1)
    if codebook_size <= DENSE_USAGE_MAX:
        counts = torch.bincount(flat, minlength=codebook_size).float()
    else:  # a histogram over every code of a huge implicit codebook (FSQ allows up to 2**62) would not fit
        counts = torch.unique(flat, return_counts=True)[1].float()  # the codes that occur
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return {
        "usage": (counts > 0).sum().float() / codebook_size,
        "perplexity": entropy.exp(),
    }


def check_latent(z: torch.Tensor, dim: int, name: str) -> None:
    """Raises ValueError unless ``z`` is (B, dim, t, h, w)."""
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"{name} expects a latent torch.Tensor (B, {dim}, t, h, w), got {type(z).__name__}")
    if z.ndim != 5 or z.shape[1] != dim:
        raise ValueError(f"{name} expects a latent of shape (B, {dim}, t, h, w), got {tuple(z.shape)}")


def check_ids(ids: torch.Tensor, codebook_size: int, name: str) -> None:
    """Raises ValueError unless ``ids`` is an integer (B, t, h, w) tensor within the codebook."""
    if not isinstance(ids, torch.Tensor):  # a list or numpy array failed with an AttributeError
        raise ValueError(f"{name} expects ids as an integer torch.Tensor (B, t, h, w), got {type(ids).__name__}")
    if ids.ndim != 4 or min(ids.shape[1:]) < 1:  # an empty t, h or w failed deep inside the decoder
        raise ValueError(f"{name} expects ids of shape (B, t, h, w) with t, h, w >= 1, got {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"{name} expects integer ids, got {ids.dtype}")
    # uint16/uint32 (a token cache's on-disk dtypes) have no min/max kernel: NotImplementedError before
    low, high = ids.aminmax() if ids.dtype not in (torch.uint16, torch.uint32, torch.uint64) else ids.long().aminmax()
    if ids.numel() and (int(low) < 0 or int(high) >= codebook_size):
        raise ValueError(f"{name}: ids must lie in [0, {codebook_size}), got range [{int(low)}, {int(high)}]")


class Quantizer(nn.Module):
    """Base class: subclasses set ``dim`` and ``codebook_size`` and implement the three methods.

    A call runs with autocast off: the code choice and the quantizer's losses are fp32 math. Under a bf16
    autocast (``run.precision=bf16`` on CPU) the VQ distance matmul picked another code than the nearest for
    ~2.5% of latents, and LFQ's entropy logits (~10^3, where bf16's step is 4-8) gave a gradient with cosine
    0.56 to the fp32 one.
    """

    dim: int
    codebook_size: int

    def __call__(self, z: torch.Tensor, *args, **kwargs):
        if not isinstance(z, torch.Tensor):  # z.device below raised an AttributeError before forward's own check
            raise ValueError(
                f"{type(self).__name__} expects a latent torch.Tensor (B, D, t, h, w), got {type(z).__name__}"
            )
        with torch.autocast(device_type=z.device.type, enabled=False):
            return super().__call__(z, *args, **kwargs)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:  # pragma: no cover - interface
        """Quantizes a (B, D, t, h, w) latent."""
        raise NotImplementedError

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Maps (B, t, h, w) ids to (B, D, t, h, w) codes."""
        raise NotImplementedError
