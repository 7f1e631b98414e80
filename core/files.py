"""Files written whole or not at all, and their hashes.

Every writer in tokvid goes through :func:`atomic_path`: the bytes land in a hidden temp file
next to the target, which is fsynced and then renamed over it, so a reader (or a run killed
mid-write) never sees half a file. New files get the usual mode, 0o666 minus the umask; a file that replaces
another keeps that one's mode.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

_CHUNK = 1 << 20


def _short(name: str, limit: int = 200) -> str:
    """At most ``limit`` bytes of a file name, in the file system's encoding (a Linux name that is not UTF-8, such as
    Latin-1 ``caf\xe9``, failed in ``str.encode``): a target of 243-255 bytes made a temp or move-aside name over
    the 255-byte limit."""
    return os.fsdecode(os.fsencode(name)[:limit])  # a cut inside a character keeps its bytes, as the name's own


def _fresh_sibling(path: Path, stem: str, suffix: str, create: Callable[[Path], object]) -> Path:
    """Creates (``create`` must fail with FileExistsError on a taken name) and returns a hidden, randomly named
    sibling of ``path``, ``.<stem>.tmp<hex><suffix>``; the parent folder is made first. Files and folders are
    created with the widest mode (0o666, 0o777) so that the kernel applies the umask, as to any new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(f".{_short(stem)}.tmp{secrets.token_hex(4)}{_short(suffix, 32)}")
        try:
            create(tmp)
            return tmp
        except FileExistsError:
            continue
    raise OSError(f"cannot create a temp file next to {str(path)!r}")  # pragma: no cover - 100 collisions


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temp path next to ``path`` (same suffix, so writers pick the format); renames on success.

    The parent folder is created. On any exception the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = _fresh_sibling(
        path, path.stem, path.suffix, lambda p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    )
    try:
        yield tmp
        _keep_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _keep_mode(tmp: Path, path: Path) -> None:
    """Gives ``tmp`` the mode of the regular file it replaces: rewriting a private (0o600) config or weights file
    made it 0o644, readable by everyone. A symlink at ``path`` is replaced, not followed, so it lends no mode."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode):
        os.chmod(tmp, stat.S_IMODE(st.st_mode))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh hidden folder next to ``path`` to fill; on success it takes ``path``'s place whole.

    The folder is made with ``os.mkdir``'s mode less the umask, as any folder (``tempfile.mkdtemp`` made it
    0o700, so a pipeline or frame folder one user wrote was unreadable to others). Whatever was at ``path`` (a
    folder or a file) is moved aside, replaced, then removed; if the swap fails it is put back. On any exception
    the new folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = _fresh_sibling(path, path.name, "", lambda p: os.mkdir(p, 0o777))
    try:
        yield tmp
        if not (path.exists() or path.is_symlink()):
            os.replace(tmp, path)
            return
        old = path.with_name(f".{_short(path.name)}.old{secrets.token_hex(4)}")
        os.replace(path, old)  # a rename cannot replace a non-empty folder
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_file_target(
    path: str | os.PathLike, what: str, inputs: Mapping[str, str | os.PathLike | None] | None = None
) -> None:
    """ValueError when ``path`` cannot become a file: a folder is there, or a parent is a file; or when it is one of
    ``inputs`` (name -> path; None is skipped), which writing it would replace. For outputs written after a long
    run (``--json``): the error used to come at the end and name a temporary file, or the input was lost."""
    target = Path(path)
    if target.is_dir() or any(parent.exists() and not parent.is_dir() for parent in target.parents):
        raise ValueError(f"{what} {str(path)!r} is a folder or lies inside a file: give a file path")
    if target.exists() and not target.is_file():  # /dev/stdout, a FIFO: the rename replaced it, or failed at the end
        raise ValueError(f"{what} {str(path)!r} is not a regular file (a device or a pipe): give a file path")
    parent = next(p for p in target.absolute().parents if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):  # the temp file beside it fails after the work, naming itself
        raise ValueError(f"{what} {str(path)!r}: cannot write in {str(parent)!r} (permission denied)")
    check_not_over_inputs(path, inputs or {}, what)  # a file holds no input: only the same path is refused
    if target.exists():  # a file of an input folder (a model's pipeline.yaml, a video of --fake) was replaced
        for name, source in (inputs or {}).items():
            if source is not None and Path(source).is_dir() and Path(source).resolve() in target.resolve().parents:
                raise ValueError(f"{what} {str(path)!r} would replace a file of {name} {str(source)!r}: give another")


def check_dir_target(path: str | os.PathLike, what: str) -> None:
    """ValueError when ``path`` cannot be a folder: a file is there, or a parent is a file (checked before the work
    that fills it, which otherwise ended in "[Errno 17] File exists" without naming the flag)."""
    target = Path(path)
    if (target.exists() and not target.is_dir()) or any(p.exists() and not p.is_dir() for p in target.parents):
        raise ValueError(f"{what} {str(path)!r} is a file or lies inside a file: give a folder")


def remove_empty_folder(path: str | os.PathLike) -> None:
    """Removes the folder ``path`` when it is empty, so that a run or server that made its output folder and failed
    before writing there leaves none behind; a folder that holds anything, or a missing one, is left as it is."""
    with contextlib.suppress(OSError):
        Path(path).rmdir()


def overlapping(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths are the same or one lies inside the other (resolved: links and ".." followed)."""
    pa, pb = Path(a).resolve(), Path(b).resolve()
    return pa == pb or pa in pb.parents or pb in pa.parents


def check_not_over_inputs(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None], what: str) -> None:
    """ValueError when writing the folder ``out`` whole (:func:`atomic_dir` replaces it) would delete an input:
    ``out`` is one of ``inputs`` (name -> path; None is skipped) or a folder that holds one."""
    target = Path(out).resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        source = Path(path).resolve()
        if source == target or target in source.parents:
            raise ValueError(
                f"{what} {str(out)!r} would replace {name} {str(path)!r}, which it is made from: give another {what}"
            )


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


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The JSON value in ``path``. A missing file, or one that is not UTF-8 JSON (including nesting too deep for
    Python's reader, a RecursionError otherwise), is one ValueError that starts with ``what`` and the path."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {err}") from None
    except RecursionError:  # 10^5 nested brackets
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: nested too deeply") from None


def read_json_object(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """:func:`read_json` of a file that must hold a JSON object; anything else is a ValueError naming it."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(Path(path))!r} must hold a JSON object, got {type(data).__name__}")
    return data


def hold_lock(path: Path, busy: str) -> IO[bytes]:
    """Opens and exclusively locks the file ``path`` (made if missing); ValueError(``busy``) when another process
    holds it. Release it with :func:`release_lock`; a killed holder's lock ends with its process.

    The holder removes the file before it lets go, so a lock taken on a file that is no longer the one at the path
    is retried on the new one.
    """
    while True:
        handle = open(path, "a+b")  # noqa: SIM115 - held until release_lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ValueError(busy) from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()  # the holder removed it between our open and our lock: take the new one


def release_lock(handle: IO[bytes]) -> None:
    """Lets go of a :func:`hold_lock` lock (idempotent): the file goes first, then the lock."""
    if not handle.closed:
        Path(handle.name).unlink(missing_ok=True)  # first: whoever locks the file after this retries
        handle.close()  # closing the file releases its flock


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``folder`` itself (no lock file is left in a user's folder) while a group of files
    is replaced there, so two writers of the same names take turns. Where the file system has no such locks
    (some network mounts) it goes on unlocked."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
