"""The server's output folder: finished results and uploads, under a size cap, with unguessable names.

Layout of ``root``::

    <id>.mp4, <id>.png     a result's video and contact sheet (written atomically by the pipeline)
    <id>.json              its record; written last, so a result without one is unfinished
    uploads/<id><ext>      uploaded context images and videos
    .<id>.tmp<8 hex>.<ext> a file being written (in either folder); a killed server's count against the cap

Ids are 32 random hex digits (:func:`secrets.token_hex`). Only names of that form are ever served, listed,
counted against the cap or deleted, so a request cannot reach a file outside ``root`` or guess another user's
result from its own, and other files in the folder (``--out outputs`` also holds ``generate.py``'s videos) are
left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from core.files import atomic_write_json

log = logging.getLogger(__name__)

_ID = re.compile(r"^[0-9a-f]{32}$")
_SERVED = re.compile(r"^([0-9a-f]{32})\.(mp4|png)$")
_RESULT_FILE = re.compile(r"^([0-9a-f]{32})\.(mp4|png|json)$")
# and the temp files they are written through (core.files.atomic_path): a server killed mid-write leaves them
_TEMP = r"^\.([0-9a-f]{32})\.tmp[0-9a-f]{8}"
_RESULT_TEMP = re.compile(_TEMP + r"\.(mp4|png|json)$")
_RECORD = re.compile(r"^[0-9a-f]{32}\.json$")
UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm", ".mov")
_UPLOAD_FILE = re.compile(r"^([0-9a-f]{32})(" + "|".join(re.escape(x) for x in UPLOAD_SUFFIXES) + r")$")
_UPLOAD_TEMP = re.compile(_TEMP + "(" + "|".join(re.escape(x) for x in UPLOAD_SUFFIXES) + r")$")
UPLOADS = "uploads"


def new_id() -> str:
    """A fresh result or upload id: 128 random bits as hex."""
    return secrets.token_hex(16)


def file_id(path: Path) -> str:
    """The result or upload id a file of the store belongs to (its name up to the first dot)."""
    return path.name.split(".")[0]


class OutputStore:
    """Results and uploads in one folder, oldest dropped first once the folder passes ``max_bytes``.

    Args:
        root: the folder (created).
        max_bytes: size cap of the server's own files in ``root`` (results and uploads); checked after each result
            and upload.
    """

    def __init__(self, root: str | Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"the output size cap must be positive, got {max_bytes} bytes")
        self.root = Path(root).absolute()  # decoders name files by absolute path: error messages strip this prefix
        self.uploads = self.root / UPLOADS
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # results being written: never dropped by the cap
        self._held: Counter[str] = Counter()  # uploads that queued or running requests will read

    def hold(self, ids: Iterable[str]) -> None:
        """Protects uploads from the cap while a request that names them waits or runs (until :meth:`release`)."""
        with self._lock:
            self._held.update(ids)

    def release(self, ids: Iterable[str]) -> None:
        with self._lock:
            self._held.subtract(ids)
            self._held = +self._held  # drop the ids no request holds any more

    def reserve(self) -> str:
        """A new result id, protected from the cap until :meth:`finish` or :meth:`discard`."""
        with self._lock:
            result_id = new_id()
            self._busy.add(result_id)
            return result_id

    def discard(self, result_id: str) -> None:
        """Removes whatever a failed result left behind, its record included (the cap may fail after it is written)."""
        for path in (*self.result_paths(result_id), self.root / f"{result_id}.json"):
            path.unlink(missing_ok=True)
        with self._lock:
            self._busy.discard(result_id)

    # ----------------------------------------------------------------- results
    def result_paths(self, result_id: str) -> tuple[Path, Path]:
        """(video, contact sheet) paths of a result."""
        return self.root / f"{result_id}.mp4", self.root / f"{result_id}.png"

    def finish(self, result_id: str, record: dict) -> None:
        """Writes the result's record (making it visible), then enforces the size cap.

        The id leaves the busy set whatever happens: a record that could not be written (a full disk) left its
        files protected from the cap, unlisted, for the server's lifetime. The caller discards them then.
        """
        try:
            atomic_write_json(self.root / f"{result_id}.json", record)
        finally:
            with self._lock:
                self._busy.discard(result_id)
        self.enforce_cap(keep=result_id)

    def served_file(self, name: str) -> Path | None:
        """The file behind ``/outputs/<name>``, or None when the name is not a finished result's mp4 or png."""
        match = _SERVED.match(name)
        if not match or not (self.root / f"{match.group(1)}.json").is_file():
            return None
        path = self.root / name
        return path if path.is_file() else None

    def claim_served(self, name: str) -> Path | None:
        """:meth:`served_file` and :meth:`hold` of its result in one step, so the cap cannot drop the file while it is
        sent; the caller releases the result's id once the response is done. None when there is no such file."""
        with self._lock:  # enforce_cap scans and deletes under the same lock
            path = self.served_file(name)
            if path is not None:
                self._held[file_id(path)] += 1
            return path

    def recent(self, limit: int) -> list[dict]:
        """The records of the newest finished results, newest first."""
        records = []
        for path in self.root.glob("*.json"):
            if _RECORD.match(path.name):  # another JSON file in the folder is not a result: never listed
                try:
                    records.append((path.stat().st_mtime_ns, path))
                except OSError:  # dropped by the cap meanwhile
                    continue
        out = []
        for _, path in sorted(records, reverse=True)[:limit]:
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # dropped by the cap meanwhile
                continue
        return out

    # ----------------------------------------------------------------- uploads
    def upload_path(self, upload_id: str, suffix: str) -> Path:
        """Where a new upload goes. Raises ValueError for a suffix it does not take."""
        if suffix.lower() not in UPLOAD_SUFFIXES:
            raise ValueError(f"uploads must be one of {', '.join(UPLOAD_SUFFIXES)}, not {suffix or 'no extension'!r}")
        return self.uploads / f"{upload_id}{suffix.lower()}"

    def find_upload(self, upload_id: object) -> Path:
        """The file of an earlier upload. Raises ValueError when there is none of that id."""
        if isinstance(upload_id, str) and _ID.match(upload_id):
            for path in self.uploads.glob(f"{upload_id}.*"):
                return path
        raise ValueError(f"no upload with id {upload_id!r}: upload the file first (POST /api/uploads)")

    def claim_upload(self, upload_id: object) -> Path:
        """:meth:`find_upload` and :meth:`hold` in one step, so the cap cannot drop the file between the two.

        The caller releases the id (:meth:`release`) once it no longer reads the file.
        """
        with self._lock:  # enforce_cap scans and deletes under the same lock
            path = self.find_upload(upload_id)
            self._held[file_id(path)] += 1
            return path

    # ----------------------------------------------------------------- cap
    def _own_files(self) -> dict[str, list[Path]]:
        """The server's files by id: ``<id>.mp4/.png/.json`` in ``root`` and ``uploads/<id><ext>``, and the hidden
        temp files they are written through (a killed server's stayed forever, outside the cap); nothing else."""
        groups: dict[str, list[Path]] = {}
        for folder, patterns in (
            (self.root, (_RESULT_FILE, _RESULT_TEMP)),
            (self.uploads, (_UPLOAD_FILE, _UPLOAD_TEMP)),
        ):
            if not folder.is_dir():  # removed by hand while serving: nothing of ours is there (it was a 500)
                continue
            for path in folder.iterdir():
                match = patterns[0].match(path.name) or patterns[1].match(path.name)
                if match and path.is_file():
                    groups.setdefault(match.group(1), []).append(path)
        return groups

    def size(self) -> int:
        """Bytes of the server's own files (results and uploads)."""
        return sum(p.stat().st_size for files in self._own_files().values() for p in files)

    def enforce_cap(self, keep: str = "") -> list[str]:
        """Deletes the oldest results and uploads until they fit ``max_bytes``; returns the ids dropped.

        Results being written, uploads held for waiting requests and ``keep`` (what the caller just made) are never
        dropped, nor is any file that is not the server's own (see :meth:`_own_files`).
        """
        with self._lock:
            # Stat each file once, leaving out any that vanished since the listing: a failed result's discard and a
            # refused upload delete their files without this lock (a FileNotFoundError here was a 500).
            stats = {}
            for key, files in self._own_files().items():
                for path in files:
                    with contextlib.suppress(FileNotFoundError):
                        stats.setdefault(key, {})[path] = path.stat()
            total = sum(st.st_size for group in stats.values() for st in group.values())
            by_age = sorted(stats, key=lambda k: max(st.st_mtime_ns for st in stats[k].values()))
            dropped = []
            for key in by_age:
                if total <= self.max_bytes:
                    break
                if key == keep or key in self._busy or key in self._held:
                    continue
                files = sorted(stats[key], key=lambda p: p.suffix != ".json")  # the record first: unlisted at once
                for path in files:
                    total -= stats[key][path].st_size
                    path.unlink(missing_ok=True)
                dropped.append(key)
            if dropped:
                log.info("output cap %d bytes: dropped %d oldest result(s)/upload(s)", self.max_bytes, len(dropped))
            return dropped
