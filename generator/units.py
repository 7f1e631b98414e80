"""Prediction units and orders over a token grid (t, h, w).

A grid is split into units, generated one after another:

- ``token``: every token is a unit, in raster order (classic GPT);
- ``cube``: ct x ch x cw blocks of tokens, cubes in raster order, tokens raster inside;
- ``frame``: one latent frame (1 x h x w) per unit;
- ``clip``: the whole grid is one unit (MAGVIT-style MaskGIT).

Attention is causal across units. Inside a unit it is causal (GPT-style) or bidirectional
(MaskGIT-style). The sequence order is the units' order, and :class:`UnitLayout` holds the
maps between sequence positions and grid positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from core.checks import is_int

Order = Literal["token", "cube", "frame", "clip"]
ORDERS: tuple[str, ...] = ("token", "cube", "frame", "clip")


@dataclass(frozen=True)
class UnitLayout:
    """How a (t, h, w) grid is cut into units and laid out as a sequence.

    Attributes:
        grid: (t, h, w).
        order: one of ``ORDERS``.
        unit: the unit's (ct, ch, cw) extent.
        perm: (L,) long, sequence position -> flat raster index of the grid.
        coords: (L, 3) long, (t, h, w) of each sequence position.
        unit_of: (L,) long, unit index of each sequence position.
        bounds: (start, stop) sequence positions of each unit.
    """

    grid: tuple[int, int, int]
    order: str
    unit: tuple[int, int, int]
    perm: torch.Tensor
    coords: torch.Tensor
    unit_of: torch.Tensor
    bounds: tuple[tuple[int, int], ...]

    @property
    def num_tokens(self) -> int:
        return self.perm.numel()

    @property
    def num_units(self) -> int:
        return len(self.bounds)

    def to_sequence(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, t, h, w) grid -> (B, L) in sequence order."""
        if tuple(ids.shape[1:]) != self.grid:
            expected = ", ".join(map(str, self.grid))
            raise ValueError(f"expected a token grid of shape (B, {expected}), got {tuple(ids.shape)}")
        return ids.flatten(1)[:, self.perm]

    def to_grid(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) in sequence order -> (B, t, h, w) grid."""
        out = torch.empty_like(seq)
        out[:, self.perm] = seq
        return out.view(seq.shape[0], *self.grid)


class LayoutError(ValueError):
    """A grid, or a boundary of given frames in it, that an order's units do not tile: a windowed video plans its
    windows around it (``pipelines.rollout.plan_windows``) where other refusals stop it."""


def unit_extent(order: str, grid: tuple[int, int, int], cube: tuple[int, int, int]) -> tuple[int, int, int]:
    """The (ct, ch, cw) of one unit for an order; ValueError if a cube does not tile the grid."""
    t, h, w = grid
    if order == "token":
        return (1, 1, 1)
    if order == "frame":
        return (1, h, w)
    if order == "clip":
        return (t, h, w)
    if order == "cube":
        if len(cube) != 3 or any(c < 1 for c in cube):
            raise ValueError(f"cube size must be three positive ints, got {cube}")
        if t % cube[0] or h % cube[1] or w % cube[2]:
            raise LayoutError(f"cube size {tuple(cube)} does not divide the token grid {grid}")
        return tuple(cube)
    raise ValueError(f"unknown order {order!r}; choose from {list(ORDERS)}")


def check_order(order: str, supported: tuple[str, ...], style: str) -> None:
    """ValueError unless ``order`` is one of the ``supported`` orders of a ``style`` generator.

    Args:
        order: the order asked for.
        supported: the orders the generator was configured (trained) for.
        style: "ar" or "maskgit", named in the error.
    """
    if order not in supported:
        raise ValueError(f"this {style} generator supports orders {list(supported)}, not {order!r}")


def make_layout(grid: tuple[int, int, int], order: str, cube: tuple[int, int, int] = (1, 2, 2)) -> UnitLayout:
    """Builds the :class:`UnitLayout` of a grid for an order (``cube`` is used by order='cube')."""
    if len(grid) != 3 or not all(is_int(g) for g in grid):  # int(2.7) made a 2.7-frame grid 2 frames silently
        raise ValueError(f"token grid must be three integers (t, h, w), got {tuple(grid)}")
    grid = tuple(int(g) for g in grid)  # a list would never equal the grid of an ids tensor's shape
    t, h, w = grid
    if min(grid) < 1:
        raise ValueError(f"token grid must be positive, got {grid}")
    ct, ch, cw = unit_extent(order, grid, cube)
    idx = torch.arange(t * h * w).view(t, h, w)
    # (nt ct, nh ch, nw cw) -> (nt, nh, nw, ct, ch, cw): units in raster order, tokens raster inside.
    blocks = idx.view(t // ct, ct, h // ch, ch, w // cw, cw).permute(0, 2, 4, 1, 3, 5)
    perm = blocks.reshape(-1)
    size = ct * ch * cw
    num_units = perm.numel() // size
    coords = torch.stack([perm // (h * w), (perm // w) % h, perm % w], dim=1)
    unit_of = torch.arange(num_units).repeat_interleave(size)
    bounds = tuple((u * size, (u + 1) * size) for u in range(num_units))
    return UnitLayout(grid, order, (ct, ch, cw), perm, coords, unit_of, bounds)


def causal_mask(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n, n) lower-triangular bool mask, True = may attend."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def block_causal_mask(unit_of: torch.Tensor) -> torch.Tensor:
    """(L, L) bool: position i may attend j iff unit(j) <= unit(i) (bidirectional within units)."""
    return unit_of[None, :] <= unit_of[:, None]


def two_stream_mask(unit_of: torch.Tensor) -> torch.Tensor:
    """MaskGIT training mask over [clean stream (L), masked stream (L)] -> (2L, 2L) bool.

    Clean tokens of unit u see clean tokens of units <= u. Masked tokens of unit u see clean
    tokens of units < u and masked tokens of unit u. So each unit is predicted from clean
    earlier units, exactly what the sampler's KV cache of completed units provides.
    """
    same = unit_of[None, :] == unit_of[:, None]
    before = unit_of[None, :] < unit_of[:, None]
    top = torch.cat([before | same, torch.zeros_like(same)], dim=1)
    bottom = torch.cat([before, same], dim=1)
    return torch.cat([top, bottom], dim=0)
