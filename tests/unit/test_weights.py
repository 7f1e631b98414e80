"""core.weights: safetensors files load only into a model of the same shapes and kinds of dtype, and
saving in half precision never turns a weight into inf."""

import pytest
import torch
from torch import nn

from core.weights import load_pretrained, load_state, load_strict, save_state


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.register_buffer("steps", torch.zeros(2, dtype=torch.long))


def test_half_precision_files_load_into_fp32_models(tmp_path):
    model = Tiny()
    save_state(model.state_dict(), tmp_path / "w.safetensors", torch.float16)
    state = load_state(tmp_path / "w.safetensors")
    assert state["lin.weight"].dtype == torch.float16 and state["steps"].dtype == torch.long
    again = Tiny()
    load_strict(again, state)
    assert torch.allclose(again.lin.weight, model.lin.weight, atol=1e-3) and again.lin.weight.dtype == torch.float32


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("lin.weight", torch.tensor([[1, 2], [3, 4]], dtype=torch.int32), "lin.weight: weights torch.int32"),
        ("lin.bias", torch.tensor([True, False]), "lin.bias: weights torch.bool"),
        ("steps", torch.tensor([1.7, 2.9]), "steps: weights torch.float32 vs model torch.int64"),  # was truncated
    ],
)
def test_a_weight_of_another_kind_of_dtype_is_refused(key, value, match):
    """Integer or bool tensors were cast into float parameters, and a float one truncated into an integer buffer."""
    state = Tiny().state_dict()
    state[key] = value
    with pytest.raises(ValueError, match=f"dtype mismatches.*{match}"):
        load_strict(Tiny(), state)


def test_saving_in_half_precision_refuses_values_it_cannot_hold(tmp_path):
    state = Tiny().state_dict()
    state["lin.weight"] = torch.tensor([[1e6, 1.0], [0.5, 0.25]])  # fp16 tops out at 65504
    with pytest.raises(ValueError, match="lin.weight has values outside the range of torch.float16"):
        save_state(state, tmp_path / "w.safetensors", torch.float16)
    assert not list(tmp_path.iterdir())  # nothing half-written
    save_state(state, tmp_path / "w.safetensors", torch.bfloat16)  # bf16 has fp32's range
    assert load_state(tmp_path / "w.safetensors")["lin.weight"][0, 0] > 9e5


def test_weights_are_stored_in_a_floating_point_dtype_only(tmp_path):
    """dtype=torch.int8 stored every weight as 0 without a word."""
    with pytest.raises(ValueError, match="floating-point dtype only, got torch.int8"):
        save_state(Tiny().state_dict(), tmp_path / "w.safetensors", torch.int8)


def test_a_failed_write_is_an_os_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    """safetensors reports a full disk as its own SafetensorError, neither an OSError nor a ValueError: the CLIs
    printed a traceback (make_pipeline under a file-size limit: "File too large (os error 27)")."""
    import errno

    from safetensors import SafetensorError

    import core.weights

    path = tmp_path / "model.safetensors"
    save_state({"w": torch.ones(2)}, path)

    def full(state, filename):
        raise SafetensorError("Error while serializing: I/O error: File too large (os error 27)")

    monkeypatch.setattr(core.weights, "save_file", full)
    with pytest.raises(OSError) as err:
        save_state({"w": torch.zeros(2)}, path)
    assert err.value.errno == errno.EFBIG and "model.safetensors" in str(err.value)
    assert torch.equal(load_state(path)["w"], torch.ones(2)) and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_config_too_large_for_the_machine_is_one_line_naming_it(tmp_path):
    """A config.yaml with an extra digit in ``dim`` asked torch's allocator for 1.7 TB: its RuntimeError traceback
    escaped every CLI. (The allocation itself is simulated: on a machine that overcommits memory a real one would
    be granted, then killed while initialised.)"""
    save_state(Tiny().state_dict(), tmp_path / "model.safetensors")

    def huge():
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you tried "
                           "to allocate 1762412986368 bytes. Error code 12 (Cannot allocate memory)")  # fmt: skip

    with pytest.raises(ValueError, match=r"tiny: its config asks for a model larger than this machine's memory .*is "
                                         r"its config right\? Its weights file holds 8 values"):  # fmt: skip
        load_pretrained(huge, tmp_path, "tiny")


def test_load_pretrained_reads_the_header_first_and_compares_shapes_before_any_tensor(tmp_path, monkeypatch):
    import core.weights as weights

    built = []

    def build():
        built.append(1)
        return Tiny()

    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 16)  # damaged: refused before the model is built
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        load_pretrained(build, tmp_path, "tiny")
    assert built == []
    save_state({"lin.weight": torch.zeros(3, 2), "lin.bias": torch.zeros(2), "steps": torch.zeros(2, dtype=torch.long)},
               tmp_path / "model.safetensors")  # fmt: skip
    monkeypatch.setattr(weights, "load_state", lambda path: pytest.fail("tensors read before the shapes were compared"))
    with pytest.raises(ValueError, match=r"tiny weights do not match its config: 1 shape mismatches \[lin.weight: "
                                         r"weights \(3, 2\) vs model \(2, 2\)\]"):  # fmt: skip
        load_pretrained(build, tmp_path, "tiny")
    save_state({**Tiny().state_dict(), "steps": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="1 dtype mismatches"):  # a float file for an integer buffer, from the header
        load_pretrained(build, tmp_path, "tiny")
    monkeypatch.undo()
    save_state(Tiny().state_dict(), tmp_path / "model.safetensors")
    assert isinstance(load_pretrained(build, tmp_path, "tiny"), Tiny)
