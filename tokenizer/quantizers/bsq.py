"""Binary spherical quantization (BSQ, Zhao et al. 2024).

The latent is projected onto the unit sphere, ``u = z / ||z||`` over the D channels, and
quantized to the nearest corner of the scaled hypercube, ``sign(u) / sqrt(D)``, which is
itself a unit vector; so codes and latents live on the same sphere and the quantization
error is bounded. Ids and bit order are those of LFQ: ``ids = sum_i [u_i > 0] * 2**i``.

The entropy loss is LFQ's on the sphere: the soft assignment is
``softmax_c(-||u - c||^2 / temperature)`` over codes ``c in {-1/sqrt(D), +1/sqrt(D)}^D``,
enumerated per group of at most ``entropy_group_size`` bits (exact per-sample entropy;
group-factorized codebook entropy, exact when one group holds all bits; see ``sign.py``,
which holds the quantizer LFQ and BSQ share). The commitment loss is taken on ``u``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokenizer.quantizers.sign import SignConfig, SignQuantizer


@dataclass(frozen=True, kw_only=True)
class BSQConfig(SignConfig):
    """Binary spherical quantizer settings (the same fields as ``LFQConfig``).

    Attributes:
        dim: latent channels D; the codebook has 2**D codes.
        commitment_weight: weight of ``mean((u - codes)^2)``.
        entropy_weight: weight of the whole entropy loss.
        codebook_entropy_weight: weight of the codebook-entropy term inside the entropy loss.
        entropy_temperature: temperature of the soft code assignment.
        entropy_group_size: the most bits enumerated jointly.
    """


class BSQ(SignQuantizer):
    """Binary spherical quantizer: codes are sign(z) / sqrt(D), straight-through to z / ||z||.

    ``forward`` returns unit-norm codes in {-1/sqrt(D), +1/sqrt(D)}; ``ids_to_codes`` too.
    """

    name = "BSQ"
    config: BSQConfig

    def __init__(self, config: BSQConfig | None = None) -> None:
        config = config or BSQConfig()
        super().__init__(config, code_scale=1.0 / math.sqrt(config.dim))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, t, h, w) -> u = x / ||x|| over D, unit norm."""
        return F.normalize(x, dim=1)
