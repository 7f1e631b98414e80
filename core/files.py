"""Files written whole or not at all, and their hashes.

Every writer in tokvid goes through :func:`atomic_path`: the bytes land in a hidden temp file
next to the target, which is fsynced and then renamed over it, so a reader (or a run killed
mid-write) never sees half a file. New files get the usual mode, 0o666 minus the umask.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temp path next to ``path`` (same suffix, so writers pick the format); renames on success.

    The parent folder is created. On any exception the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.tmp{secrets.token_hex(4)}{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of a random 32-bit name
        raise OSError(f"cannot create a temp file next to {str(path)!r}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_file_target(path: str | os.PathLike, what: str) -> None:
    """ValueError when ``path`` cannot become a file: a folder is there, or a parent is a file. For outputs written
    after a long run (``--json``): the error used to come at the end and name a temporary file."""
    target = Path(path)
    if target.is_dir() or any(parent.exists() and not parent.is_dir() for parent in target.parents):
        raise ValueError(f"{what} {str(path)!r} is a folder or lies inside a file: give a file path")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (temp file, fsync, rename)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: object, *, indent: int = 1, allow_nan: bool = True) -> None:
    """Writes ``data`` as JSON (and a final newline) to ``path`` atomically; ``allow_nan=False`` refuses NaN/inf."""
    atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=allow_nan) + "\n")


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()
