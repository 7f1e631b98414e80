"""Token layouts: the sequence order of every order and cube shape against a nested-loop definition, and
the grids and cubes that are refused."""

import pytest
import torch

from generator import GeneratorConfig, make_layout
from tests.helpers.tiny_generator import GRID


def reference_coords(grid, unit):
    """(t, h, w) of every sequence position, by nested loops: units in raster order, tokens raster inside."""
    (t, h, w), (ct, ch, cw) = grid, unit
    return [(ut * ct + i, uh * ch + j, uw * cw + k)
            for ut in range(t // ct) for uh in range(h // ch) for uw in range(w // cw)
            for i in range(ct) for j in range(ch) for k in range(cw)]  # fmt: skip


@pytest.mark.parametrize("grid,order,cube,unit", [
    (GRID, "token", (1, 2, 2), (1, 1, 1)), (GRID, "frame", (1, 2, 2), (1, 4, 4)), (GRID, "clip", (1, 2, 2), GRID),
    (GRID, "cube", (1, 2, 2), (1, 2, 2)), ((2, 4, 6), "cube", (2, 2, 3), (2, 2, 3)),
    ((4, 4, 4), "cube", (2, 2, 2), (2, 2, 2)),
])  # fmt: skip
def test_layouts_follow_their_definition(grid, order, cube, unit):
    """Sequence order against an independent nested-loop definition, for every order and several cube shapes
    (all cubes, not only the first); units are contiguous runs of the stated size."""
    layout = make_layout(grid, order, cube)
    assert [tuple(c) for c in layout.coords.tolist()] == reference_coords(grid, unit)
    size = unit[0] * unit[1] * unit[2]
    assert layout.unit == unit and layout.bounds == tuple((u * size, (u + 1) * size) for u in range(layout.num_units))
    ids = torch.randint(0, 64, (2, *grid))
    seq = layout.to_sequence(ids)
    t, h, w = layout.coords.unbind(1)
    assert torch.equal(seq, ids[:, t, h, w])  # position i holds the token at coords[i]
    assert torch.equal(layout.to_grid(seq), ids)
    with pytest.raises(ValueError, match=rf"^expected a token grid of shape \(B, {', '.join(map(str, grid))}\), got"):
        layout.to_sequence(ids[:, :, :, :-1])  # a grid of another size is refused, not silently reordered


def test_layout_knows_its_order_and_refuses_bad_grids_and_cubes():
    for order in ("token", "frame", "cube", "clip"):
        assert make_layout(GRID, order).order == order
    with pytest.raises(ValueError, match=r"^token grid must be positive, got \(0, 4, 4\)$"):
        make_layout((0, 4, 4), "frame")
    with pytest.raises(ValueError, match=r"^cube size must be three positive ints, got \(0, 2, 2\)$"):
        make_layout(GRID, "cube", (0, 2, 2))
    with pytest.raises(ValueError, match=r"^unknown order 'row'; choose from \['token', 'cube', 'frame', 'clip'\]$"):
        make_layout(GRID, "row")


def test_cube_that_does_not_divide_grid():
    with pytest.raises(ValueError, match=r"cube size \(2, 2, 2\) does not divide the token grid \(3, 4, 4\)"):
        make_layout(GRID, "cube", (2, 2, 2))
    with pytest.raises(ValueError, match="does not divide"):
        GeneratorConfig(orders=("cube",), max_grid=(3, 4, 4), cube_size=(1, 3, 2))
