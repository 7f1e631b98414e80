"""Sign quantizers: the shared core of LFQ and BSQ.

Each latent channel is quantized to its sign, scaled: codes are ``code_scale * s`` for
``s in {-1, +1}^D`` (``code_scale`` is 1 for LFQ and 1/sqrt(D) for BSQ), so the implicit
codebook has 2**D codes and no parameters. A subclass may first ``project`` the latent (BSQ
onto the unit sphere); the codes, the commitment loss and the entropy loss then use the
projected latent ``x``. Bit order: channel ``i`` is bit ``i`` of the id (least significant
first), ``ids = sum_i [x_i > 0] * 2**i``; ``x_i == 0`` counts as bit 0, code ``-code_scale``.

The entropy loss pushes each position towards a confident code (low per-sample entropy) and
the batch towards using the whole codebook (high codebook entropy). The soft assignment of a
latent ``x`` to code ``c`` is ``softmax_c(-||x - c||^2 / temperature)``. Enumerating all
2**D codes is too costly for large D, so the D bits are split into consecutive groups of at
most ``entropy_group_size`` bits and each group's 2**g codes are enumerated. Because
``||x - c||^2`` is a sum over groups, the per-sample distribution factorizes and the
per-sample entropy is exact. The batch-mean distribution does not factorize: the codebook
entropy is taken as the sum of the groups' marginal entropies, the standard group-factorized
approximation, which upper-bounds the true entropy and is exact when one group holds all bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from tokenizer.quantizers.base import Quantizer, QuantizerOutput, check_ids, check_latent, usage_stats

MAX_DIM = 24  # usage stats hold a (2**dim,) histogram: 2**24 floats is 64 MiB
MAX_GROUP_SIZE = 16  # each group enumerates 2**g codes per latent position


@dataclass(frozen=True, kw_only=True)
class SignConfig:
    """The fields LFQ and BSQ share (``LFQConfig`` and ``BSQConfig`` document them).

    Attributes:
        dim: latent channels D; the codebook has 2**D codes.
        commitment_weight: weight of ``mean((x - codes)^2)``.
        entropy_weight: weight of the whole entropy loss.
        codebook_entropy_weight: weight of the codebook-entropy term inside the entropy loss.
        entropy_temperature: temperature of the soft code assignment.
        entropy_group_size: the most bits enumerated jointly (see the module docstring).
    """

    dim: int = 10
    commitment_weight: float = 0.25
    entropy_weight: float = 0.1
    codebook_entropy_weight: float = 1.0
    entropy_temperature: float = 0.01
    entropy_group_size: int = 10

    def __post_init__(self) -> None:
        check_binary_config(self)


def check_binary_config(cfg: SignConfig) -> None:
    """Raises ValueError for an invalid LFQ or BSQ config (they share their fields)."""
    name = type(cfg).__name__
    if not 1 <= cfg.dim <= MAX_DIM:
        raise ValueError(f"{name}.dim must lie in [1, {MAX_DIM}], got {cfg.dim}")
    if not 1 <= cfg.entropy_group_size <= MAX_GROUP_SIZE:
        raise ValueError(f"{name}.entropy_group_size must lie in [1, {MAX_GROUP_SIZE}], got {cfg.entropy_group_size}")
    if not cfg.entropy_temperature > 0:  # NaN fails too
        raise ValueError(f"{name}.entropy_temperature must be > 0, got {cfg.entropy_temperature}")
    for field in ("commitment_weight", "entropy_weight", "codebook_entropy_weight"):
        if not getattr(cfg, field) >= 0:
            raise ValueError(f"{name}.{field} must be >= 0, got {getattr(cfg, field)}")


def enumerate_signs(num_bits: int) -> torch.Tensor:
    """All sign patterns of ``num_bits`` bits, in id order.

    Args:
        num_bits: number of bits g.

    Returns:
        (2**g, g) float tensor; row k holds +1 in column i where bit i of k is set, else -1.
        Its first 2**g' rows and g' columns enumerate g' < g bits in the same order.
    """
    ids = torch.arange(2**num_bits)
    bits = (ids[:, None] >> torch.arange(num_bits)) & 1  # (2**g, g)
    return bits.float() * 2 - 1


def grouped_code_entropy(
    x: torch.Tensor, signs: torch.Tensor, group_size: int, code_scale: float, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropies of the soft assignment ``softmax_c(-||x - c||^2 / temperature)``.

    The codes are ``code_scale * s`` for sign vectors s; the bits of ``x`` are split into
    consecutive groups of at most ``group_size`` bits (see the module docstring).

    Args:
        x: (N, D) float latents, one row per position.
        signs: (2**G, G) output of ``enumerate_signs`` with G >= min(group_size, D).
        group_size: the most bits per group.
        code_scale: magnitude of each code coordinate (1 for LFQ, 1/sqrt(D) for BSQ).
        temperature: softmax temperature.

    Returns:
        ``(per_sample, codebook)`` scalars: the mean over rows of each row's entropy (exact),
        and the summed group entropies of the row-mean distributions.
    """
    per_sample = x.new_zeros(())
    codebook = x.new_zeros(())
    for start in range(0, x.shape[1], group_size):
        xg = x[:, start : start + group_size]  # (N, g)
        g = xg.shape[1]
        codes = signs[: 2**g, :g].to(x.dtype) * code_scale  # (2**g, g)
        # -||x - c||^2 = 2 x.c - ||x||^2 - ||c||^2; the last two are constant over c.
        log_p = (2.0 * xg @ codes.T / temperature).log_softmax(dim=-1)  # (N, 2**g)
        p = log_p.exp()
        per_sample = per_sample - (p * log_p).sum(dim=-1).mean()
        mean_p = p.mean(dim=0)  # (2**g,)
        codebook = codebook - (mean_p * mean_p.clamp_min(1e-12).log()).sum()
    return per_sample, codebook


class SignQuantizer(Quantizer):
    """Quantizes each channel of ``project(z)`` to ``code_scale * sign``, straight-through.

    Subclasses set ``name`` (used in error messages) and may override :meth:`project`.

    Args:
        config: the shared sign-quantizer settings.
        code_scale: magnitude of each code coordinate.
    """

    name: str
    config: SignConfig

    def __init__(self, config: SignConfig, code_scale: float) -> None:
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.codebook_size = 2**config.dim
        self.code_scale = code_scale
        self.register_buffer("basis", 2 ** torch.arange(config.dim), persistent=False)  # (D,) long
        group_bits = min(config.entropy_group_size, config.dim)
        self.register_buffer("group_signs", enumerate_signs(group_bits), persistent=False)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The latent the codes approximate: (B, D, t, h, w) float32 -> same shape (identity here)."""
        return x

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantizes a latent.

        Args:
            z: (B, D, t, h, w) float latent.

        Returns:
            QuantizerOutput with codes (B, D, t, h, w) in {-code_scale, +code_scale}
            (straight-through to x = project(z)), ids (B, t, h, w), losses ``commit`` and
            ``entropy`` (weighted), and stats ``usage``, ``perplexity``,
            ``per_sample_entropy``, ``codebook_entropy``.
        """
        check_latent(z, self.dim, self.name)
        cfg = self.config
        x = self.project(z.float())  # (B, D, t, h, w)
        q = ((x > 0).float() * 2 - 1) * self.code_scale
        codes = x + (q - x).detach()
        ids = self.codes_to_ids(q)
        flat = rearrange(x, "b d t h w -> (b t h w) d")
        per_sample, codebook = grouped_code_entropy(
            flat, self.group_signs, cfg.entropy_group_size, self.code_scale, cfg.entropy_temperature
        )
        entropy = per_sample - cfg.codebook_entropy_weight * codebook
        losses = {
            "commit": cfg.commitment_weight * F.mse_loss(x, q),
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
        check_latent(codes, self.dim, self.name)
        bits = (codes > 0).long()  # (B, D, t, h, w)
        return (bits * rearrange(self.basis, "d -> 1 d 1 1 1")).sum(dim=1)

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Maps ids to codes.

        Args:
            ids: (B, t, h, w) integer ids in [0, 2**D).

        Returns:
            (B, D, t, h, w) float32 codes in {-code_scale, +code_scale}.
        """
        check_ids(ids, self.codebook_size, self.name)
        bits = (rearrange(ids.long(), "b t h w -> b 1 t h w") // rearrange(self.basis, "d -> 1 d 1 1 1")) % 2
        return (bits.float() * 2 - 1) * self.code_scale  # (B, D, t, h, w)
