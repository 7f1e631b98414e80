"""The MaskGIT mask schedule: gamma's formulas, the tokens left masked after each sampling step, and
the training mask."""

import math

import pytest
import torch

from generator import make_layout
from generator.sampling import gamma, num_masked_after_step, training_mask
from tests.helpers.tiny_generator import GRID


@pytest.mark.parametrize("schedule", ["cosine", "linear", "square"])
@pytest.mark.parametrize("steps,n", [(1, 16), (8, 16), (12, 48), (20, 4)])
def test_schedule_values_follow_their_formulas(schedule, steps, n):
    """gamma is MaskGIT's masked fraction: cos(pi r / 2), 1 - r or 1 - r^2; after step s of S, floor(gamma((s+1)/S) n)
    tokens stay masked (none after the last step)."""
    formula = {"cosine": lambda r: math.cos(math.pi * r / 2), "linear": lambda r: 1 - r, "square": lambda r: 1 - r * r}
    for r in (0.0, 0.1, 0.25, 0.5, 0.9, 1.0):
        assert gamma(r, schedule) == pytest.approx(formula[schedule](r), abs=1e-12)
    left = [num_masked_after_step(s, steps, n, schedule) for s in range(steps)]
    expected = [math.floor(formula[schedule]((s + 1) / steps) * n) for s in range(steps - 1)] + [0]
    assert left == expected


def test_training_mask_masks_every_unit_and_follows_schedule():
    layout = make_layout(GRID, "frame")
    m = training_mask(layout.unit_of, 4000, "cosine", torch.Generator().manual_seed(0))
    per_unit = m.view(4000, 3, 16).sum(-1)
    assert int(per_unit.min()) >= 1
    # E[ceil(cos(pi/2 r) * 16)] / 16 is about 2/pi + 1/32
    assert float(per_unit.float().mean() / 16) == pytest.approx(2 / math.pi + 1 / 32, abs=0.02)
