"""Mask schedules shared by MaskGIT training and sampling.

Two users: :mod:`generator.objectives` draws training masks from ``objective.mask_schedule`` and
:mod:`generator.sampling.maskgit` unmasks by ``SamplingConfig.mask_schedule`` (set on its own, cosine by
default, as MaskGIT chooses its decoding schedule apart from training's), so the schedules live beside both.

``gamma(r)`` is the fraction of a unit's tokens still masked at progress ``r`` in [0, 1]:
gamma(0) = 1 (all masked) and gamma(1) = 0 (nothing masked), decreasing in between. Training
draws r ~ U(0, 1) and masks ceil(gamma(r) * n) tokens (at least one); sampling after step s of
S keeps floor(gamma((s + 1) / S) * n) tokens masked, so the last step leaves none.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = {
    "cosine": lambda r: math.cos(math.pi / 2 * r),
    "linear": lambda r: 1.0 - r,
    "square": lambda r: 1.0 - r * r,
}


def gamma(r: float | torch.Tensor, schedule: str = "cosine") -> float | torch.Tensor:
    """Masked fraction at progress ``r`` (a float or a tensor of them)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown mask schedule {schedule!r}; choose from {sorted(SCHEDULES)}")
    if isinstance(r, torch.Tensor):
        if schedule == "cosine":
            return torch.cos(math.pi / 2 * r)
        return 1.0 - r if schedule == "linear" else 1.0 - r * r
    return SCHEDULES[schedule](r)


def num_masked_after_step(step: int, num_steps: int, num_tokens: int, schedule: str = "cosine") -> int:
    """Tokens left masked after sampling step ``step`` (0-based) of ``num_steps``."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    r = (step + 1) / num_steps
    return 0 if step + 1 >= num_steps else math.floor(gamma(r, schedule) * num_tokens)


def training_mask(
    unit_of: torch.Tensor, batch: int, schedule: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draws a MaskGIT training mask, one ratio per (row, unit).

    Args:
        unit_of: (L,) unit index of every sequence position.
        batch: rows B.
        schedule: mask schedule name.

    Returns:
        (B, L) bool, True = masked; every unit of every row has at least one masked token.
    """
    device = unit_of.device
    num_units = int(unit_of.max()) + 1
    sizes = torch.bincount(unit_of, minlength=num_units)  # (U,)
    r = torch.rand(batch, num_units, generator=generator, device=device)
    k = torch.ceil(gamma(r, schedule) * sizes).clamp_min(1)  # (B, U) tokens to mask per unit
    score = torch.rand(batch, unit_of.numel(), generator=generator, device=device)
    # rank of each token's score inside its unit: mask the k lowest-ranked ones. Sorted by score, then stably by
    # unit: units contiguous, random inside. (One key, score + 2 * unit, rounded in float32 once units number in the
    # thousands, and tied scores inside a unit were then ranked by position, not by their draw.)
    by_score = torch.argsort(score, dim=1)  # (B, L)
    by_unit = torch.argsort(unit_of[by_score], dim=1, stable=True)  # (B, L)
    order = by_score.gather(1, by_unit)
    starts = torch.cumsum(sizes, 0) - sizes  # (U,)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(unit_of.numel(), device=device).expand(batch, -1).contiguous())
    rank_in_unit = rank - starts[unit_of][None]
    return rank_in_unit < k.gather(1, unit_of[None].expand(batch, -1))
