"""Tokenizer losses: the foreground mask and its weight, hinge losses."""

import pytest
import torch

from tokenizer.losses import LossConfig, foreground_mask, hinge_d_loss, hinge_g_loss, reconstruction_loss


def scene():
    """(1, 3, 2, 16, 16): dark background, one bright 2x2 object at rows/cols 7-8."""
    v = torch.full((1, 3, 2, 16, 16), -0.9)
    v[:, 0, :, 7:9, 7:9] = 0.9
    return v


def test_foreground_mask_finds_the_object_and_dilation_grows_it():
    v = scene()
    mask = foreground_mask(v, 0.1)
    assert mask.shape == (1, 1, 2, 16, 16)
    assert mask.sum() == 2 * 4 and mask[0, 0, 0, 7:9, 7:9].all()
    grown = foreground_mask(v, 0.1, dilation=2)
    assert grown.sum() == 2 * 36  # 2x2 grown by 2 px on each side: 6x6 per frame
    assert grown[0, 0, 0, 5:11, 5:11].all() and not grown[0, 0, 0, 4].any()
    assert torch.equal(grown[:, :, 0], grown[:, :, 1])  # grows in space only


def test_foreground_weight_makes_object_errors_cost_more():
    target = scene()
    on_object, on_background = target.clone(), target.clone()
    on_object[:, 0, :, 7, 7] -= 0.5
    on_background[:, 0, :, 0, 0] += 0.5
    weighted = LossConfig(foreground_weight=10.0, foreground_threshold=0.1)
    a = reconstruction_loss(on_object, target, weighted)["l1"]
    b = reconstruction_loss(on_background, target, weighted)["l1"]
    assert torch.isclose(a, 10 * b)
    plain = LossConfig()
    assert torch.isclose(
        reconstruction_loss(on_object, target, plain)["l1"], reconstruction_loss(on_background, target, plain)["l1"]
    )
    # With the mask grown by 2 px, a blurred edge pixel next to the object is weighted too.
    edge = target.clone()
    edge[:, 0, :, 6, 7] += 0.5
    grown = LossConfig(foreground_weight=10.0, foreground_threshold=0.1, foreground_dilation=2)
    assert torch.isclose(
        reconstruction_loss(edge, target, grown)["l1"], 10 * reconstruction_loss(edge, target, weighted)["l1"]
    )


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert torch.isclose(hinge_d_loss(real, fake), torch.tensor(0.25 + 0.5))
    assert torch.isclose(hinge_g_loss(fake), torch.tensor(1.0))


def test_negative_dilation_is_refused():
    with pytest.raises(ValueError, match="foreground_dilation must be >= 0"):
        LossConfig(foreground_dilation=-1)
