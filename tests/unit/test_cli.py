"""core/cli.py: one error line and exit 2, and no Hugging Face progress bars in CLI runs."""

import errno
import os
import subprocess
import sys

import pytest

from core.cli import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = """
import sys
import transformers.utils.logging as hf_logging
from core.cli import run_cli
before = hf_logging.is_progress_bar_enabled()
run_cli(lambda argv: 0, [])
print(before, hf_logging.is_progress_bar_enabled())
"""


def _probe(env_value):
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    if env_value is not None:
        env["HF_HUB_DISABLE_PROGRESS_BARS"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_run_cli_turns_off_an_already_imported_transformers_progress_bar():
    assert _probe(None) == ["True", "False"]


def test_a_user_setting_keeps_the_progress_bar():
    assert _probe("0") == ["True", "True"]


def test_value_error_is_one_line_and_exit_2(capsys):
    def bad(argv):
        raise ValueError("num_frames 18 cannot be reached\nsecond line")

    assert run_cli(bad, []) == 2
    err = capsys.readouterr().err
    assert err == "error: num_frames 18 cannot be reached\n"


def test_a_peer_that_stopped_is_one_line_and_other_runtime_errors_keep_their_traceback(capsys):
    """When one rank failed with its own one-line error, the others died in a gloo collective with a ~35-line
    traceback ending "Connection closed by peer" that buried the line which said why."""

    def gone(argv):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [1.2.3.4]")

    assert run_cli(gone) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another process of this run stopped" in err

    def bug(argv):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_cli(bug)


def test_torch_running_out_of_memory_is_one_line_and_exit_1(capsys):
    """torch's allocators raise RuntimeErrors, not MemoryError: a batch or a model too large for the machine ended
    in a traceback, as if it were a bug."""

    def cpu(argv):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 1762412986368 bytes. Error code 12 (Cannot allocate memory)")  # fmt: skip

    class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name, as CUDA raises it
        pass

    def cuda(argv):
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    for main in (cpu, cuda):
        assert run_cli(main) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: out of memory (") and "smaller batch" in err


def test_a_missing_rank_state_says_whether_the_world_size_fits(tmp_path):
    """It guessed "saved with another world size?" even when rank 0's state said 2 processes, as this run has."""
    import json

    from videotrain.checkpoint import read_state

    (tmp_path / "rank00000.json").write_text(json.dumps({"world_size": 2, "step": 3}))
    with pytest.raises(ValueError, match=r"world size \(2\) fits, so the file is missing"):
        read_state(tmp_path, 1)
    with pytest.raises(ValueError, match="it was saved by 2 processes"):
        read_state(tmp_path, 2)


@pytest.mark.parametrize("text", ["{", "[1]", "\udcff"])
def test_a_damaged_rank_state_is_one_error_naming_the_file(tmp_path, text):
    """A rank state of "{" printed only "Expecting property name enclosed in double quotes": no file, no way on."""
    from videotrain.checkpoint import read_state

    (tmp_path / "rank00000.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    for rank in (0, 1):  # its own file, and rank 0's read for the world size when rank 1's is missing
        with pytest.raises(
            ValueError, match=rf"^checkpoint state '{tmp_path / 'rank00000.json'}' .*; remove {tmp_path}"
        ):
            read_state(tmp_path, rank)


@pytest.mark.parametrize("cut", [100, 0.5])
@pytest.mark.parametrize("where", [".", "disc"])  # the main engine's file, and the discriminator's one folder below
def test_a_damaged_deepspeed_file_is_one_error_naming_it_and_the_checkpoint_to_remove(tmp_path, cut, where):
    """DeepSpeed loads its files through our engine: a truncated one raised torch's EOFError or RuntimeError, and
    tools/train.py ended in a traceback. The advice names the checkpoint, not the discriminator's subfolder:
    removing that left the checkpoint complete, and the resume restarted the discriminator from scratch."""
    import torch

    from videotrain import checkpoint
    from videotrain.distributed import DamagedCheckpointFile, SafeCheckpointEngine

    tag = tmp_path / "step_00000004"
    path = tag / where / "mp_rank_00_model_states.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"module": {"w": torch.zeros(1000)}}, path)
    engine = SafeCheckpointEngine()
    assert torch.equal(engine.load(str(path))["module"]["w"], torch.zeros(1000))
    data = path.read_bytes()
    path.write_bytes(data[: cut if isinstance(cut, int) else int(len(data) * cut)])
    with pytest.raises(DamagedCheckpointFile, match=rf"^checkpoint file {path} could not be read \("):
        engine.load(str(path))

    class Engine:  # DeepSpeed's load_checkpoint reads the file through the checkpoint engine
        def load_checkpoint(self, load_dir, tag, **kwargs):
            return engine.load(str(path)), None

    with pytest.raises(ValueError, match=rf"^checkpoint file {path} could not be read .*; remove {tag} to resume"):
        checkpoint.load(Engine(), tmp_path, tag.name, 0)


def test_running_out_of_memory_while_loading_a_checkpoint_is_not_called_damage(tmp_path, monkeypatch):
    """Every RuntimeError was relabelled: the CPU allocator's "can't allocate memory" on a good checkpoint said the
    file was damaged and to remove it."""
    import torch

    from videotrain.distributed import SafeCheckpointEngine

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(torch, "load", full)
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        SafeCheckpointEngine().load(str(tmp_path / "mp_rank_00_model_states.pt"))


def test_os_errors_that_name_bad_paths_are_one_line_and_exit_2(capsys):
    """``--out`` naming an existing file: ``mkdir`` raises FileExistsError, an OSError the user caused."""

    def out_is_a_file(argv):
        raise FileExistsError(17, "File exists", "/data/out")

    assert run_cli(out_is_a_file, []) == 2
    assert capsys.readouterr().err == "error: [Errno 17] File exists: '/data/out'\n"


def test_a_path_too_long_or_on_a_read_only_disk_is_one_line_and_other_os_errors_keep_their_traceback(tmp_path, capsys):
    """`make_shapes.py render --out <300 characters>` was an OSError traceback (ENAMETOOLONG is no subclass)."""

    def long_name(argv):
        (tmp_path / ("a" * 300)).mkdir()

    assert run_cli(long_name, []) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: [Errno 36] File name too long") and err.count("\n") == 1

    def bug(argv):
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError, match="Bad file descriptor"):
        run_cli(bug, [])


def test_parse_device_takes_only_devices_this_stack_runs_on():
    """torch.device("mps" / "meta" / "hpu") was accepted, and the run ended later in a traceback (exit 1), after
    the model had loaded."""
    import torch

    from core.cli import parse_device

    assert parse_device("cpu") == torch.device("cpu")
    for name in ("mps", "meta", "hpu", "xla", "tpu9"):
        with pytest.raises(ValueError, match=f"unknown device '{name}'"):
            parse_device(name)


def test_check_file_target_refuses_a_folder_or_a_path_inside_a_file(tmp_path):
    """--json of eval_tokenizer / eval_video / bench was checked only when written, after the whole run, and the
    error named a temporary file."""
    from core.files import check_file_target

    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path, tmp_path / "afile" / "out.json"):
        with pytest.raises(ValueError, match="is a folder or lies inside a file"):
            check_file_target(bad, "--json")
    check_file_target(tmp_path / "new" / "out.json", "--json")


def test_an_empty_out_is_a_usage_error_not_the_current_folder():
    """``--out "$OUT"`` with OUT unset wrote runs, datasets and reports into the current folder."""
    from pathlib import Path

    from core.cli import CliParser, UsageError

    parser = CliParser()
    parser.add_argument("--out", type=Path)
    assert parser.parse_args(["--out", "runs/x"]).out == Path("runs/x")
    for empty in ("", "  "):
        with pytest.raises(UsageError, match="--out: must not be empty"):
            parser.parse_args(["--out", empty])


def test_an_empty_path_argument_is_a_usage_error(tmp_path, monkeypatch, capsys):
    """``cache_tokens --data "$DATA"`` with DATA unset scanned and cached the current folder (Path("") is ".")."""
    from tools.cache_tokens import main

    (tmp_path / "holiday").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["--data", "", "--tokenizer", "tok", "--out", str(tmp_path / "cache")]) == 2
    assert "--data: must not be empty" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("module", ["core.cli", "tools.generate"])
def test_ctrl_c_while_a_cli_imports_is_one_line(module):
    """run_cli made an interrupt one line, but only once main ran: Ctrl-C in the second or so a CLI spends
    importing torch printed a 30-40-line traceback ending in KeyboardInterrupt."""
    import signal

    done = subprocess.run([sys.executable, "-c", f"import {module}; raise KeyboardInterrupt"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert done.stderr == "interrupted\n" and done.returncode == -signal.SIGINT  # ended by the signal: status 130
