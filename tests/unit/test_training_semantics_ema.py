"""The EMA of the weights pinned by its formula: the average itself, the decays it refuses, its checkpoints
and its fp32 export."""

import pytest
import torch

from videotrain.ema import EMA


def test_ema_is_an_exponential_moving_average_of_the_parameters():
    model = torch.nn.Linear(3, 2)
    p0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(2.0)
    ema.update(model)
    for k in p0:
        first = 0.9 * p0[k] + 0.1 * (p0[k] + 1)
        expected = 0.9 * first + 0.1 * (p0[k] + 3)
        assert torch.allclose(ema.shadow[k], expected, atol=1e-6), k
        assert torch.allclose(ema.weights(model)[k], expected, atol=1e-6)
    state = ema.state_dict()
    other = EMA(model, decay=0.9)
    other.load_state_dict(state)
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)


def test_ema_refuses_decays_outside_the_open_unit_interval_and_checkpoints_without_ema_weights():
    model = torch.nn.Linear(3, 2)
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"ema decay must be in \(0, 1\)"):
            EMA(model, decay=bad)
    ema = EMA(model, decay=0.5)
    with pytest.raises(ValueError, match=r"^checkpoint lacks EMA weights for \['bias'\]$"):
        ema.load_state_dict({"ema.weight": torch.zeros(2, 3)})  # no ema.bias
    deep = EMA(torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(4)]), decay=0.5)
    with pytest.raises(ValueError, match=r"^checkpoint lacks EMA weights for \['0.weight', .*'2.weight'\]$") as err:
        deep.load_state_dict({})  # eight missing: the message names the first five
    assert str(err.value).count("'") == 10


def test_ema_weights_are_exported_in_fp32_whatever_the_models_dtype():
    """A bf16 / fp16 engine casts the module; the EMA export was cast back to it, unlike the export without EMA."""
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1e-3)  # a step too small for bf16 to keep in the average's last digits
    ema.update(model)
    assert all(v.dtype == torch.float32 for v in ema.shadow.values())  # the shadow keeps fp32
    weights = ema.weights(model)
    assert all(v.dtype == torch.float32 for v in weights.values())
    assert torch.equal(weights["weight"], ema.shadow["weight"])
