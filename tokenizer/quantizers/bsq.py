"""Binary spherical quantization (BSQ, Zhao et al. 2024).

The latent is projected onto the unit sphere, ``u = z / ||z||`` over the D channels, and
quantized to the nearest corner of the scaled hypercube, ``sign(u) / sqrt(D)``, which is
itself a unit vector; so codes and latents live on the same sphere and the quantization
error is bounded. Ids and bit order are those of LFQ: ``ids = sum_i [u_i > 0] * 2**i``.

The entropy loss is LFQ's on the sphere: the soft assignment is
``softmax_c(-||u - c||^2 / temperature)`` over codes ``c in {-1/sqrt(D), +1/sqrt(D)}^D``,
enumerated per group of at most ``entropy_group_size`` bits (exact per-sample entropy;
group-factorized codebook entropy, exact when one group holds all bits; see ``lfq.py``).
The commitment loss is taken on ``u``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from tokenizer.quantizers.base import Quantizer, QuantizerOutput, check_ids, check_latent, usage_stats
from tokenizer.quantizers.lfq import check_binary_config, enumerate_signs, grouped_code_entropy


@dataclass(frozen=True, kw_only=True)
class BSQConfig:
    """Binary spherical quantizer settings (the same fields as ``LFQConfig``).

    Attributes:
        dim: latent channels D; the codebook has 2**D codes.
        commitment_weight: weight of ``mean((u - codes)^2)``.
        entropy_weight: weight of the whole entropy loss.
        codebook_entropy_weight: weight of the codebook-entropy term inside the entropy loss.
        entropy_temperature: temperature of the soft code assignment.
        entropy_group_size: the most bits enumerated jointly.
    """

    dim: int = 10
    commitment_weight: float = 0.25
    entropy_weight: float = 0.1
    codebook_entropy_weight: float = 1.0
    entropy_temperature: float = 0.01
    entropy_group_size: int = 10

    def __post_init__(self) -> None:
        check_binary_config(self)


class BSQ(Quantizer):
    """Binary spherical quantizer: codes are sign(z) / sqrt(D), straight-through to z / ||z||."""

    def __init__(self, config: BSQConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or BSQConfig()
        self.dim = config.dim
        self.codebook_size = 2**config.dim
        self.code_scale = 1.0 / math.sqrt(config.dim)
        self.register_buffer("basis", 2 ** torch.arange(config.dim), persistent=False)  # (D,) long
        group_bits = min(config.entropy_group_size, config.dim)
        self.register_buffer("group_signs", enumerate_signs(group_bits), persistent=False)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantizes a latent.

        Args:
            z: (B, D, t, h, w) float latent.

        Returns:
            QuantizerOutput with unit-norm codes (B, D, t, h, w) in {-1/sqrt(D), +1/sqrt(D)}
            (straight-through to u = z / ||z||), ids (B, t, h, w), losses ``commit`` and
            ``entropy`` (weighted), and stats ``usage``, ``perplexity``,
            ``per_sample_entropy``, ``codebook_entropy``.
        """
        check_latent(z, self.dim, "BSQ")
        cfg = self.config
        u = F.normalize(z.float(), dim=1)  # (B, D, t, h, w), unit norm over D
        q = ((u > 0).float() * 2 - 1) * self.code_scale
        codes = u + (q - u).detach()
        ids = self.codes_to_ids(q)
        flat = rearrange(u, "b d t h w -> (b t h w) d")
        per_sample, codebook = grouped_code_entropy(
            flat, self.group_signs, cfg.entropy_group_size, self.code_scale, cfg.entropy_temperature
        )
        entropy = per_sample - cfg.codebook_entropy_weight * codebook
        losses = {
            "commit": cfg.commitment_weight * F.mse_loss(u, q),
            "entropy": cfg.entropy_weight * entropy,
        }
        stats = {
            **usage_stats(ids, self.codebook_size),
            "per_sample_entropy": per_sample.detach(),
            "codebook_entropy": codebook.detach(),
        }
        return QuantizerOutput(codes=codes.to(z.dtype), ids=ids, losses=losses, stats=stats)

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Maps codes (or any latent) to the ids of their signs.

        Args:
            codes: (B, D, t, h, w) float.

        Returns:
            (B, t, h, w) long ids, bit i set where channel i is > 0.
        """
        check_latent(codes, self.dim, "BSQ")
        bits = (codes > 0).long()  # (B, D, t, h, w)
        return (bits * rearrange(self.basis, "d -> 1 d 1 1 1")).sum(dim=1)

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Maps ids to codes.

        Args:
            ids: (B, t, h, w) integer ids in [0, 2**D).

        Returns:
            (B, D, t, h, w) float32 unit-norm codes in {-1/sqrt(D), +1/sqrt(D)}.
        """
        check_ids(ids, self.codebook_size, "BSQ")
        bits = (rearrange(ids.long(), "b t h w -> b 1 t h w") // rearrange(self.basis, "d -> 1 d 1 1 1")) % 2
        return (bits.float() * 2 - 1) * self.code_scale  # (B, D, t, h, w)
