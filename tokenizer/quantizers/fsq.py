"""Finite scalar quantization (FSQ, Mentzer et al. 2023).

Channel i is bounded to ``levels[i]`` integer values with the paper's tanh formula, rounded
with a straight-through estimator and rescaled to [-1, 1]. The implicit codebook is the
product grid, ``codebook_size = prod(levels)``, and ids are its mixed-radix numbers with
channel 0 the least significant digit. There are no parameters; an optional bound loss keeps channels alive.

Bound (paper, appendix A.1), with ``eps = 1e-3`` and L = levels[i]:
``half_l = (L - 1) * (1 - eps) / 2``, ``offset = 0.5 if L is even else 0``,
``shift = tan(offset / half_l)``, ``bound(z) = tanh(z + shift) * half_l - offset``.
Rounding gives the integers ``-(L // 2) .. (L - 1) // 2`` and codes are those divided by
``L // 2`` (so an even L reaches -1 but stops one step short of +1). The paper uses ``tan``
where ``atanh`` would centre bound(0) exactly on 0; the two agree to third order and ``tan``
stays finite for L = 2, so we keep the paper's formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from tokenizer.quantizers.base import Quantizer, QuantizerOutput, check_ids, check_latent, usage_stats

BOUND_EPS = 1e-3  # keeps the bounded range strictly inside the rounding cells
# A code in [-1, 1] reaches the decoder in its dtype: bf16 keeps 512 values of a channel apart (at 600, 44 ids
# merged with a neighbour), and past 1001 the shrunken range no longer reaches the outermost integers.
MAX_LEVEL = 512


@dataclass(frozen=True, kw_only=True)
class FSQConfig:
    """Finite scalar quantizer settings.

    Attributes:
        levels: number of values per latent channel; D = len(levels), each >= 2.
        bound_loss_weight: weight of ``mean(relu(|z + shift| - bound_range)^2)``, which keeps the
            latent where tanh still has a gradient (0 = off, the paper's plain FSQ). Without it a
            channel can drift to |z| >> 1, where tanh is flat: its level then never changes
            again and the channel is dead (seen on mostly-black data at lr 2e-3).
        bound_range: |z| above which the bound loss starts (tanh(2) = 0.96).
    """

    levels: tuple[int, ...] = (8, 5, 5, 5)
    bound_loss_weight: float = 0.0
    bound_range: float = 2.0

    def __post_init__(self) -> None:
        if len(self.levels) == 0 or any(level < 2 for level in self.levels):
            raise ValueError(f"FSQConfig.levels must be a non-empty tuple of ints >= 2, got {self.levels}")
        if not (self.bound_loss_weight >= 0 and self.bound_range > 0):  # written so that NaN fails too
            raise ValueError("FSQConfig.bound_loss_weight must be >= 0 and bound_range > 0")
        if any(level > MAX_LEVEL for level in self.levels):  # see MAX_LEVEL
            raise ValueError(f"FSQConfig.levels must be at most {MAX_LEVEL} each, got {self.levels}")
        if math.prod(self.levels) >= 2**62:
            raise ValueError(f"FSQConfig.levels {self.levels} give a codebook too large for int64 ids")


def _per_channel(v: torch.Tensor) -> torch.Tensor:
    """(D,) -> (1, D, 1, 1, 1), to broadcast against a (B, D, t, h, w) latent."""
    return rearrange(v, "d -> 1 d 1 1 1")


class FSQ(Quantizer):
    """Finite scalar quantizer over the implicit product codebook of ``config.levels``."""

    def __init__(self, config: FSQConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FSQConfig()
        self.dim = len(config.levels)
        self.codebook_size = math.prod(config.levels)
        levels = torch.tensor(config.levels, dtype=torch.long)  # (D,)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), dim=0)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", basis, persistent=False)  # (D,) mixed-radix place values
        self.register_buffer("half_width", levels // 2, persistent=False)  # (D,) long

    def _constants(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(half_l, offset, shift), each (1, D, 1, 1, 1) float32, made from the integer levels at every call: as
        float buffers ``.to(bfloat16)`` rounded them (half_l 2.997 -> 3.0) and the same latents got other ids."""
        levels = self.levels.double()
        half_l = (levels - 1) * (1 - BOUND_EPS) / 2
        offset = (self.levels % 2 == 0).double() * 0.5
        shift = torch.tan(offset / half_l)
        return tuple(_per_channel(x.float()) for x in (half_l, offset, shift))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squashes each channel into its rounding range.

        Args:
            z: (B, D, t, h, w) float latent.

        Returns:
            (B, D, t, h, w) float32, channel i in (-half_l_i - offset_i, half_l_i - offset_i),
            whose rounding gives exactly L_i integers.
        """
        half_l, offset, shift = self._constants()
        return torch.tanh(z.float() + shift) * half_l - offset

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantizes a latent.

        Args:
            z: (B, D, t, h, w) float latent.

        Returns:
            QuantizerOutput with codes (B, D, t, h, w) on the normalized grid in [-1, 1]
            (straight-through to the bounded latent), ids (B, t, h, w), losses ``bound`` when
            ``bound_loss_weight > 0`` (else none), and stats ``usage`` and ``perplexity``.
        """
        check_latent(z, self.dim, "FSQ")
        bounded = self.bound(z)
        rounded = bounded.round()
        # A NaN latent (an overflow upstream) gets the middle digit, so the ids stay valid and its NaN codes reach the
        # loss, where the trainer drops the batch; NaN cast to long was int64's minimum, and bincount stopped the run.
        ids = self._digits_to_ids(rounded.nan_to_num(0.0).long() + _per_channel(self.half_width))
        codes = (bounded + (rounded - bounded).detach()) / _per_channel(self.half_width)
        losses = {}
        if self.config.bound_loss_weight > 0:
            excess = ((z.float() + self._constants()[2]).abs() - self.config.bound_range).clamp_min(0)
            losses["bound"] = self.config.bound_loss_weight * excess.square().mean()
        return QuantizerOutput(
            codes=codes.to(z.dtype), ids=ids, losses=losses, stats=usage_stats(ids, self.codebook_size)
        )

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Maps codes back to ids; off-grid values go to the nearest grid code.

        Args:
            codes: (B, D, t, h, w) float codes in [-1, 1].

        Returns:
            (B, t, h, w) long ids.
        """
        check_latent(codes, self.dim, "FSQ")
        half_width = _per_channel(self.half_width)
        digits = (codes.float() * half_width).round().long() + half_width  # (B, D, t, h, w)
        digits = torch.minimum(digits.clamp_min(0), _per_channel(self.levels) - 1)
        return self._digits_to_ids(digits)

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Maps ids to codes.

        Args:
            ids: (B, t, h, w) integer ids in [0, prod(levels)).

        Returns:
            (B, D, t, h, w) float32 codes in [-1, 1].
        """
        check_ids(ids, self.codebook_size, "FSQ")
        ids = rearrange(ids.long(), "b t h w -> b 1 t h w")
        digits = (ids // _per_channel(self.basis)) % _per_channel(self.levels)  # (B, D, t, h, w)
        half_width = _per_channel(self.half_width)
        return (digits - half_width).float() / half_width.float()

    def _digits_to_ids(self, digits: torch.Tensor) -> torch.Tensor:
        """(B, D, t, h, w) long digits in [0, L_i) -> (B, t, h, w) long mixed-radix ids."""
        return (digits * _per_channel(self.basis)).sum(dim=1)
