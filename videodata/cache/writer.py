"""Writing a token cache: the spec check, one rank's resumable shard writer, and the manifest merge.

Completion is marked by files written last: a shard is complete once its ``.done.json``
exists (written after its tokens, meta and captions), a rank once its ``rank-RRR.done.json``
exists, and the cache once rank 0 has written ``manifest.json``. Every file is written to a
temp name and renamed, so a kill at any moment leaves only complete files under real names.

Resuming: a rank reads its contiguous run of complete shards; the last one records where the
work continues (``resume``: the next source and the first clip index still wanted). Quarantine
entries are stored with the first shard completed after them, or in the rank's done file, so
every entry is written exactly once however often a run is killed and resumed.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.files import hold_lock, release_lock
from videodata.cache.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    META_DTYPE,
    SHARD_FILES,
    SPEC_NAME,
    atomic_write_bytes,
    json_bytes,
    npy_bytes,
    rank_done_name,
    read_json,
    sha256_bytes,
    sha256_file,
    shard_file,
    shard_name,
)

log = logging.getLogger(__name__)


def prepare_cache_dir(out: Path, spec: dict[str, Any]) -> bool:
    """Creates the cache folder and its ``spec.json``, or checks an existing one matches.

    Args:
        out: cache folder.
        spec: ``{"identity": {...}, ...}``; only ``identity`` must match to resume.

    Returns:
        True when an earlier run's spec was found (a resume).

    Raises:
        ValueError: the folder holds a cache made with another tokenizer, clip spec, source
            list or world size (every differing field is named with both values), or it is
            a non-empty folder that is not a token cache.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    path = out / SPEC_NAME
    if not path.is_file():
        # Hidden names are temps (e.g. another rank's spec.json being written right now); spec.json itself may
        # appear between the check above and this listing, renamed into place by another rank.
        if any(not p.name.startswith(".") and p.name != SPEC_NAME for p in out.iterdir()):
            raise ValueError(f"--out {str(out)!r} is a non-empty folder without {SPEC_NAME}: not a token cache")
        if not path.is_file():
            atomic_write_bytes(path, json_bytes(spec))
            return False
    old = read_json(path, "cache spec")
    old_id, new_id = old.get("identity", {}) if isinstance(old, dict) else {}, spec["identity"]
    diffs = [
        f"{key} {json.dumps(old_id.get(key))} but this run has {json.dumps(new_id.get(key))}"
        for key in sorted(set(old_id) | set(new_id))
        if old_id.get(key) != new_id.get(key)
    ]
    if diffs:
        raise ValueError(
            f"cannot resume into {str(out)!r}: it was made with " + "; ".join(diffs) + " (use a new --out folder)"
        )
    return True


class RankWriter:
    """Collects one rank's encoded clips into shards of ``shard_size`` and writes them.

    Args:
        out: cache folder (already prepared).
        rank: this rank; shards are ``shard-r{rank:03d}-{i:05d}``.
        world_size: number of ranks (recorded in the rank's done file).
        shard_size: clips per shard; the last shard of a rank may hold fewer.
        dtype: token dtype (uint16 or int32).
        grid: (t, h, w) of every clip.

    The writer holds an exclusive lock on the hidden ``.rank-RRR.lock`` from its start until :meth:`finish` or
    :meth:`close`: a second process on the same rank (a command launched twice, a requeued job whose first copy
    still runs) is refused, where its resume scan used to delete the files the first was writing.
    """

    def __init__(
        self,
        out: Path,
        *,
        rank: int,
        world_size: int,
        shard_size: int,
        dtype: np.dtype,
        grid: tuple[int, int, int],
    ) -> None:
        self.out, self.rank, self.world_size = out, rank, world_size
        self.shard_size, self.dtype, self.grid = shard_size, np.dtype(dtype), tuple(grid)
        self.shards: list[dict[str, Any]] = []
        self.pending_quarantine: list[dict[str, Any]] = []
        self.complete = False
        self.resume_from: tuple[int, int] | None = None  # (source index, first clip index)
        self._tokens: list[np.ndarray] = []
        self._meta: list[tuple[int, ...]] = []
        self._captions: list[str | list[str]] = []
        self._last_of_source = False
        self._lock = _lock_rank(out, rank)
        try:
            self._scan()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Releases the rank's lock (idempotent); :meth:`finish` calls it."""
        release_lock(self._lock)

    # ----------------------------------------------------------------- resume
    def _scan(self) -> None:
        prefix = shard_name(self.rank, 0).rsplit("-", 1)[0]  # shard-rRRR
        done_path = self.out / rank_done_name(self.rank)
        index = 0
        while (self.out / shard_file(shard_name(self.rank, index), "done")).is_file():
            try:
                record = read_json(self.out / shard_file(shard_name(self.rank, index), "done"), "shard record")
            except ValueError:  # a damaged record: redo the shard
                record = None
            problem = "has a damaged record" if record is None else _shard_problem(self.out, record)
            if problem is not None:
                log.warning("shard %s %s; redoing it and the shards after it", shard_name(self.rank, index), problem)
                break
            self.shards.append(record)
            index += 1
        if done_path.is_file():
            record = read_json(done_path, "rank record")
            if isinstance(record, dict) and (record.get("world_size"), record.get("num_shards")) == (
                self.world_size,
                len(self.shards),
            ):
                self.complete = True
                return
        # The cache is unfinished again: a manifest from an earlier run would still call it complete while the
        # shards below are removed and rewritten. It goes first.
        (self.out / MANIFEST_NAME).unlink(missing_ok=True)
        done_path.unlink(missing_ok=True)
        # Everything at or after the first missing shard is from an unfinished run: remove it.
        pattern = re.compile(rf"^\.?{prefix}-(\d{{5}})\.")
        for p in self.out.iterdir():
            m = pattern.match(p.name)
            if m and (p.name.startswith(".") or int(m.group(1)) >= index):
                p.unlink(missing_ok=True)
        if self.shards:
            self.resume_from = tuple(self.shards[-1]["resume"])
            source, clip = self.resume_from
            where = f"source {source}, clip {clip}"
            log.info("rank %d: resuming after %d complete shard(s) at %s", self.rank, index, where)

    # ----------------------------------------------------------------- writing
    @property
    def num_clips(self) -> int:
        return sum(s["num_clips"] for s in self.shards) + len(self._tokens)

    def add(
        self,
        ids: np.ndarray,
        *,
        source: int,
        clip: int,
        start: int,
        stride: int,
        label: int,
        caption: str | list[str],
        last_of_source: bool,
    ) -> None:
        """Appends one clip's tokens; writes a shard when ``shard_size`` clips are held.

        Args:
            ids: (t, h, w) token ids of the clip.
            source, clip, start, stride, label, caption: the clip's meta row and its caption (a list when the
                source has several).
            last_of_source: no later clip of this source follows (fixes the resume point).
        """
        if tuple(ids.shape) != self.grid:
            raise ValueError(f"token grid {tuple(ids.shape)} does not match the cache grid {self.grid}")
        self._tokens.append(ids.astype(self.dtype, copy=False))
        self._meta.append((source, clip, start, stride, label))
        self._captions.append(caption)
        self._last_of_source = last_of_source
        if len(self._tokens) == self.shard_size:
            self._write_shard()

    def quarantine(self, entry: dict[str, Any]) -> None:
        """Records a skipped source: ``{"source", "path", "reason", "detail"}``."""
        self.pending_quarantine.append(entry)

    def finish(self) -> None:
        """Writes the last (partial) shard, then the rank's done file."""
        if self._tokens:
            self._write_shard()
        record = {
            "rank": self.rank,
            "world_size": self.world_size,
            "num_shards": len(self.shards),
            "num_clips": self.num_clips,
            "quarantine": self.pending_quarantine,
        }
        self._write(rank_done_name(self.rank), json_bytes(record))
        self.pending_quarantine = []
        self.complete = True
        self.close()

    def _write(self, name: str, data: bytes) -> dict[str, Any]:
        """Writes one file atomically; every file of the rank goes through here. Returns its record."""
        atomic_write_bytes(self.out / name, data)
        return {"file": name, "bytes": len(data), "sha256": sha256_bytes(data)}

    def _write_shard(self) -> None:
        name = shard_name(self.rank, len(self.shards))
        tokens = np.stack(self._tokens)  # (N, t, h, w)
        meta = np.array(self._meta, dtype=META_DTYPE)  # (N,)
        (s_last, c_last), (s_first, c_first) = self._meta[-1][:2], self._meta[0][:2]
        resume = [s_last + 1, 0] if self._last_of_source else [s_last, c_last + 1]
        # Entries of sources before the resume point belong here; later ones are redone on resume.
        mine = [q for q in self.pending_quarantine if q["source"] < resume[0]]
        self.pending_quarantine = [q for q in self.pending_quarantine if q["source"] >= resume[0]]
        files = {
            "tokens": self._write(shard_file(name, "tokens"), npy_bytes(tokens)),
            "meta": self._write(shard_file(name, "meta"), npy_bytes(meta)),
            "captions": self._write(shard_file(name, "captions"), json_bytes(self._captions)),
        }
        record = {
            "name": name,
            "rank": self.rank,
            "index": len(self.shards),
            "num_clips": len(tokens),
            "first_item": [s_first, c_first],
            "last_item": [s_last, c_last],
            "resume": resume,
            "files": files,
            "quarantine": mine,
        }
        self._write(shard_file(name, "done"), json_bytes(record))
        self.shards.append(record)
        self._tokens, self._meta, self._captions = [], [], []
        log.debug("wrote %s (%d clips)", name, len(tokens))


def _lock_rank(out: Path, rank: int) -> IO[bytes]:
    """Holds ``out/.rank-RRR.lock`` (:func:`core.files.hold_lock`); ValueError when another process holds it."""
    path = out / f".rank-{rank:03d}.lock"
    busy = (f"another process is writing rank {rank} of the cache {str(out)!r} (it holds {path.name}): "
            "wait for it to end or stop it, then run again")  # fmt: skip
    return hold_lock(path, busy)


def _shard_problem(out: Path, record: Any) -> str | None:
    """What is wrong with a shard's files against its ``.done.json`` record (size, then sha256), or None. A byte
    flipped in place kept the size, so a resume used to keep the shard and write a manifest that failed verify."""
    try:
        files = [record["files"][k] for k in SHARD_FILES]
        for entry in files:
            if (out / entry["file"]).stat().st_size != entry["bytes"]:
                return f"file {entry['file']} has another size than its record"
        for entry in files:
            if sha256_file(out / entry["file"]) != entry["sha256"]:
                return f"file {entry['file']} has another sha256 than its record"
    except (KeyError, TypeError, OSError) as err:
        return f"has an unreadable record or file ({type(err).__name__}: {err})"
    return None


class _StaleShard(Exception):
    def __init__(self, rank: int, shard: str, problem: str) -> None:
        super().__init__(f"shard {shard} {problem}")
        self.rank, self.shard, self.problem = rank, shard, problem


def _collect_shards(out: Path, world_size: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every rank's shard records (checked against their files) and quarantine entries; _StaleShard on a problem."""
    shards, quarantine = [], []
    for r in range(world_size):
        try:
            rank_record = read_json(out / rank_done_name(r), "rank record")
        except ValueError as err:  # removed by that rank's rerun between our look and our read
            if (out / rank_done_name(r)).is_file():
                raise
            raise _StaleShard(r, rank_done_name(r), "went away while read") from err
        for i in range(rank_record["num_shards"]):
            name = shard_name(r, i)
            try:
                record = read_json(out / shard_file(name, "done"), "shard record")
            except ValueError:
                raise _StaleShard(r, name, "has no readable record") from None
            problem = _shard_problem(out, record)
            if problem is not None:
                raise _StaleShard(r, name, problem)
            quarantine.extend(record.pop("quarantine"))
            record.pop("resume")
            shards.append(record)
        quarantine.extend(rank_record["quarantine"])
    return shards, quarantine


def merge_manifest(
    out: Path, spec: dict[str, Any], *, world_size: int, wait_timeout_s: float, elapsed_s: float, poll_s: float = 0.5
) -> dict[str, Any]:
    """Waits until every rank's done file exists, then writes ``manifest.json`` (rank 0's job).

    Shards are listed in (rank, index) order, which is work-item order (see
    :func:`videodata.cache.sources.rank_slice`); quarantine entries are sorted by source index.

    Raises:
        ValueError: a rank did not finish within ``wait_timeout_s``.
    """
    deadline = time.monotonic() + wait_timeout_s
    said: set[str] = set()
    while True:
        missing = list(range(world_size))
        while missing:
            missing = [r for r in missing if not (out / rank_done_name(r)).is_file()]
            if missing and time.monotonic() > deadline:
                raise ValueError(f"rank(s) {missing} did not finish within {wait_timeout_s:g} s; rerun to resume")
            if missing:
                time.sleep(poll_s)
        try:
            shards, quarantine = _collect_shards(out, world_size)
            break
        except _StaleShard as err:
            # Rank 0 checked its own shards before it came here: a problem there is damage. Another rank's may be
            # an earlier run's record that rank has not reached yet (its scan redoes the shard and rewrites the
            # record): merging then stopped the run, and the next rerun was needed to finish a cache this one was
            # already repairing.
            if err.rank == 0 or time.monotonic() > deadline:
                raise ValueError(f"shard {err.shard} {err.problem}: rerun the same command to redo it") from None
            if err.shard not in said:
                said.add(err.shard)
                log.info("shard %s %s: waiting for rank %d to redo it", err.shard, err.problem, err.rank)
            time.sleep(poll_s)
    identity = spec["identity"]
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tokenizer": {
            "fingerprint": identity["tokenizer_fingerprint"],
            "codebook_size": identity["codebook_size"],
            **spec["tokenizer"],
        },
        "codebook_size": identity["codebook_size"],
        "grid": identity["grid"],
        "dtype": identity["dtype"],
        "clip_spec": identity["clip_spec"],
        "shard_size": identity["shard_size"],
        "world_size": world_size,
        "num_clips": sum(s["num_clips"] for s in shards),
        "num_shards": len(shards),
        "text_features": None,  # hook: a text-encoder stage records its model and shapes here
        "data": spec["data"],
        "sources_sha256": identity["sources_sha256"],
        "sources": spec["sources"],
        "quarantine": sorted(quarantine, key=lambda q: q["source"]),
        "shards": shards,
        "run": {
            "elapsed_s": round(elapsed_s, 3),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    atomic_write_bytes(out / MANIFEST_NAME, json_bytes(manifest))
    return manifest
