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
