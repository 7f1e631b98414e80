"""Unit tests for the quantizer configs: the values each accepts, and the errors that name what is wrong."""

from __future__ import annotations

import math

import pytest

from tests.helpers.refusals import refused_exactly
from tests.helpers.tiny_quantizers import _seed  # noqa: F401
from tokenizer.quantizers import BSQConfig, FSQConfig, LFQConfig, VQConfig


@pytest.mark.parametrize(
    "cfg_cls, kw",
    [
        (FSQConfig, dict(levels=(1, 5))),
        (FSQConfig, dict(levels=())),
        (FSQConfig, dict(levels=(8, 513))),  # a bf16 decoder merged neighbouring values (1002: outermost never made)
        (LFQConfig, dict(dim=0)),
        (BSQConfig, dict(entropy_group_size=0)),
        (LFQConfig, dict(entropy_temperature=0.0)),
        (VQConfig, dict(ema_decay=1.0)),
        (VQConfig, dict(codebook_size=0)),
        # NaN passed every `x < 0` / `x <= 0` check
        (FSQConfig, dict(bound_range=math.nan)),
        (LFQConfig, dict(entropy_temperature=math.nan)),
        (BSQConfig, dict(entropy_weight=math.nan)),
        (VQConfig, dict(ema_epsilon=math.nan)),
        (VQConfig, dict(commitment_weight=math.nan)),
    ],
)
def test_bad_config_raises_value_error(cfg_cls: type, kw: dict) -> None:
    with pytest.raises(ValueError, match=cfg_cls.__name__):
        cfg_cls(**kw)


@pytest.mark.parametrize("cfg_cls", [LFQConfig, BSQConfig])
def test_binary_config_bounds_are_inclusive_and_errors_name_the_field(cfg_cls: type) -> None:
    """dim in [1, 24], entropy_group_size in [1, 16], weights >= 0: the ends are valid, one past them is not."""
    name = cfg_cls.__name__
    for dim in (1, 24):
        assert cfg_cls(dim=dim, entropy_group_size=1).dim == dim
    assert cfg_cls(dim=16, entropy_group_size=16).entropy_group_size == 16
    zero = dict(commitment_weight=0.0, entropy_weight=0.0, codebook_entropy_weight=0.0)
    assert cfg_cls(**zero).entropy_weight == 0.0
    bad = {
        rf"{name}.dim must lie in \[1, 24\], got 25": dict(dim=25),
        rf"{name}.dim must lie in \[1, 24\], got 0": dict(dim=0),
        rf"{name}.entropy_group_size must lie in \[1, 16\], got 17": dict(dim=20, entropy_group_size=17),
        rf"{name}.entropy_group_size must lie in \[1, 16\], got 0": dict(entropy_group_size=0),
        rf"{name}.entropy_temperature must be > 0, got 0.0": dict(entropy_temperature=0.0),
        rf"{name}.codebook_entropy_weight must be >= 0, got -0.5": dict(codebook_entropy_weight=-0.5),
    }
    refused_exactly(cfg_cls, bad)


def test_vq_config_bounds_are_inclusive_and_errors_say_which_setting() -> None:
    """A codebook of one code, dim 1, EMA decay 0 and zero loss weights are valid; past each bound is not."""
    for ok in (dict(codebook_size=1), dict(dim=1), dict(ema_decay=0.0), dict(ema_epsilon=1e-12),
               dict(commitment_weight=0.0, codebook_weight=0.0, dead_code_threshold=0.0)):  # fmt: skip
        VQConfig(**ok)
    bad = {
        r"VQConfig: codebook_size and dim must be >= 1, got 0, 8": dict(codebook_size=0, dim=8),
        r"VQConfig: codebook_size and dim must be >= 1, got 16, 0": dict(codebook_size=16, dim=0),
        r"VQConfig.ema_decay must lie in \[0, 1\), got -0.1": dict(ema_decay=-0.1),
        r"VQConfig.ema_epsilon must be > 0, got 0.0": dict(ema_epsilon=0.0),
        r"VQConfig.codebook_weight must be >= 0, got -1.0": dict(codebook_weight=-1.0),
    }
    refused_exactly(VQConfig, bad)


def test_fsq_config_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"^FSQConfig.bound_loss_weight must be >= 0 and bound_range > 0$"):
        FSQConfig(bound_loss_weight=-1.0)


def test_fsq_config_checks_its_bound_settings_and_codebook_size() -> None:
    FSQConfig(levels=(5, 5), bound_range=0.5)  # any positive range is valid
    for kw in (dict(bound_range=0.0), dict(bound_loss_weight=-0.1)):
        with pytest.raises(ValueError, match="FSQConfig.bound_loss_weight must be >= 0 and bound_range > 0"):
            FSQConfig(levels=(5, 5), **kw)
    with pytest.raises(ValueError, match="FSQConfig"):
        FSQConfig(levels=(2,) * 62)  # 2**62 codes: ids would not fit an int64 comfortably
