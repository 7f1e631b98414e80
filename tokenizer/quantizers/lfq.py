"""Lookup-free quantization (LFQ, MAGVIT-v2, Yu et al. 2023).

Each latent channel is quantized to its sign, so the implicit codebook is {-1, +1}^D with
2**D codes and no parameters. Bit order: channel ``i`` is bit ``i`` of the id (least
significant first), ``ids = sum_i [z_i > 0] * 2**i``; ``z_i == 0`` counts as bit 0, code -1.

The entropy loss pushes each position towards a confident code (low per-sample entropy) and
the batch towards using the whole codebook (high codebook entropy), with the codebook entropy
group-factorized for large D; the quantizer and both losses live in ``sign.py``, shared with
BSQ, whose docstring gives the details.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizer.quantizers.sign import SignConfig, SignQuantizer


@dataclass(frozen=True, kw_only=True)
class LFQConfig(SignConfig):
    """Lookup-free quantizer settings.

    Attributes:
        dim: latent channels D; the codebook has 2**D codes.
        commitment_weight: weight of ``mean((z - codes)^2)``.
        entropy_weight: weight of the whole entropy loss.
        codebook_entropy_weight: weight of the codebook-entropy term inside the entropy loss.
        entropy_temperature: temperature of the soft code assignment.
        entropy_group_size: the most bits enumerated jointly (see ``sign.py``).
    """


class LFQ(SignQuantizer):
    """Lookup-free quantizer: codes are sign(z) in {-1, +1}^D, trained with a straight-through sign."""

    name = "LFQ"
    config: LFQConfig

    def __init__(self, config: LFQConfig | None = None) -> None:
        super().__init__(config or LFQConfig(), code_scale=1.0)
