"""core.files: atomic writes keep the old file on failure and never touch the process umask."""

from __future__ import annotations

import os
import stat

import pytest

from core import files
from core.files import atomic_path, atomic_write_bytes


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_new_files_get_the_umask_without_the_process_umask_ever_changing(tmp_path, monkeypatch):
    """Reading the umask by setting it to 0 and back left a window in which another thread of the web server
    created files writable by everyone; the kernel applies the umask to os.open's mode by itself."""
    old = os.umask(0o027)
    try:
        calls = []
        with monkeypatch.context() as patch:
            patch.setattr(files.os, "umask", lambda mask: calls.append(mask) or 0o027)
            atomic_write_bytes(tmp_path / "v.bin", b"x")
        assert calls == []
        assert stat.S_IMODE((tmp_path / "v.bin").stat().st_mode) == 0o640
    finally:
        os.umask(old)  # the real one again, outside the patch


def test_weights_get_the_umask_mode_and_reach_the_disk_before_their_rename(tmp_path, monkeypatch):
    """safetensors writes its own 0o600 temp file and renames it over ours, so every model.safetensors came out
    private beside a 0o644 config.yaml; and it was never fsynced, though its config (fsynced) says it is whole."""
    import torch

    from core import weights

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    old = os.umask(0o022)
    try:
        weights.save_state({"w": torch.ones(3)}, tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o644
    assert len(synced) == 1 and synced[0] != str(tmp_path / "model.safetensors")  # the temp file, before the rename
    assert weights.load_state(tmp_path / "model.safetensors")["w"].tolist() == [1.0, 1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_a_folder_written_whole_gets_the_umask_mode_and_replaces_a_folder_or_a_file(tmp_path):
    """tempfile.mkdtemp made 0o700 folders, renamed into place as they were: an assembled pipeline or a frame
    folder was unreadable to other users. A file in the folder's place (make_pipeline --force) is replaced too:
    the folder was swapped in and then rmtree of the moved-aside file raised, exit 2 after it had worked."""
    from core.files import atomic_dir

    old = os.umask(0o022)
    try:
        target = tmp_path / "pipe"
        target.write_text("a file in the way")
        with atomic_dir(target) as tmp:
            (tmp / "x.txt").write_text("new")
        assert stat.S_IMODE(target.stat().st_mode) == 0o755 and (target / "x.txt").read_text() == "new"
        with atomic_dir(target) as tmp:  # a folder in the way
            (tmp / "y.txt").write_text("newer")
        assert sorted(p.name for p in target.iterdir()) == ["y.txt"]
        with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
            (tmp / "z.txt").write_text("half")
            raise RuntimeError("writer died")
        assert sorted(p.name for p in target.iterdir()) == ["y.txt"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
    finally:
        os.umask(old)


def test_names_the_file_system_takes_are_written_and_rewritten(tmp_path):
    """A Latin-1 name (``caf\\xe9``, legal on Linux) failed in ``str.encode`` before any write; a folder name of
    243-255 bytes was written once and then failed when rewritten (its move-aside name was not cut); a long suffix
    made a temp name over the 255-byte limit."""
    latin1 = tmp_path / os.fsdecode(b"caf\xe9.txt")
    files.atomic_write_text(latin1, "x")
    assert latin1.read_text() == "x"
    long_dir = tmp_path / ("\u5b57" * 83)  # 249 bytes
    for i in range(2):
        with files.atomic_dir(long_dir) as tmp:
            (tmp / "a").write_text(str(i))
    assert (long_dir / "a").read_text() == "1"
    long_suffix = tmp_path / ("run." + "x" * 240)
    atomic_write_bytes(long_suffix, b"y")
    assert long_suffix.read_bytes() == b"y" and len(list(tmp_path.iterdir())) == 3


def test_a_device_or_pipe_is_not_a_file_target(tmp_path):
    """``--json /dev/stdout`` passed the check; the write then renamed a temp file over the link (as root) or failed
    after the whole evaluation naming the temp file."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file"):
        files.check_file_target(fifo, "--json")
    files.check_file_target(tmp_path / "new.json", "--json")  # a new file is fine


DEEP = "[" * 100_000 + "]" * 100_000  # Python's JSON reader raises RecursionError, not a JSONDecodeError


def _json_readers(tmp_path):
    """Every reader of a JSON file that a user gives or a run leaves, through its public entry point."""
    from generator.provenance import read_trained_on
    from videodata.cache.format import load_manifest
    from videodata.shapes.dataset import dataset_holdout
    from videoeval.adherence import model_holdout
    from videotrain.checkpoint import read_state
    from videotrain.distributed import deepspeed_config

    engine = dict(micro_batch=1, grad_accum=1, grad_clip=1.0, precision="fp32", zero_stage=None)
    return {
        "manifest.json": lambda: load_manifest(tmp_path),
        "trained_on.json": lambda: read_trained_on(tmp_path),
        "dataset.json": lambda: dataset_holdout(tmp_path),
        "holdout.json": lambda: model_holdout(tmp_path),
        "rank00000.json": lambda: read_state(tmp_path, 0),
        "ds.json": lambda: deepspeed_config(str(tmp_path / "ds.json"), **engine),
    }


@pytest.mark.parametrize("content", [DEEP.encode(), b"\xff\xfe{", b"{"])
@pytest.mark.parametrize("name", ["manifest.json", "trained_on.json", "dataset.json", "holdout.json",
                                  "rank00000.json", "ds.json"])  # fmt: skip
def test_every_json_reader_names_its_file_for_deep_nesting_bytes_that_are_not_utf8_and_bad_json(tmp_path, name,
                                                                                                content):  # fmt: skip
    """Five near-copies of "read a JSON file" caught different errors: 10^5 nested brackets ended all but one in a
    RecursionError traceback, and bytes that are not UTF-8 gave a UnicodeDecodeError that named no file."""
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=rf"'{tmp_path / name}' is not valid JSON: .") as err:
        _json_readers(tmp_path)[name]()
    assert (str(tmp_path / name) in str(err.value)) and "\n" not in str(err.value)


def test_read_json_object_refuses_other_values_and_a_missing_file_naming_them(tmp_path):
    (tmp_path / "a.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"^text encoder file '.*a\.json' must hold a JSON object, got list$"):
        files.read_json_object(tmp_path / "a.json", "text encoder file")
    with pytest.raises(ValueError, match=r"^manifest '.*b\.json' does not exist$"):
        files.read_json(tmp_path / "b.json", "manifest")
    (tmp_path / "c.json").write_text('{"a": [1, {"b": null}]}')
    assert files.read_json_object(tmp_path / "c.json", "x") == {"a": [1, {"b": None}]}


def test_remove_empty_folder_removes_only_an_empty_folder(tmp_path):
    """A trainer or server that made its --out and failed before writing leaves no folder; one that wrote (or a
    folder the user made with files in it) keeps everything, and a folder already gone is no error."""
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (full / "metrics.jsonl").write_text("{}\n")
    files.remove_empty_folder(empty)
    files.remove_empty_folder(full)
    files.remove_empty_folder(tmp_path / "missing")
    assert not empty.exists() and (full / "metrics.jsonl").read_text() == "{}\n"
