"""Building a token cache: a dataset through a frozen tokenizer into verifiable, resumable shards.

:func:`build_cache` is the whole job for one rank; ``tools/cache_tokens.py`` is its command line.

Work items: sources are sorted by path and each gives up to ``clips_per_video`` clips (see
:class:`~videodata.cache.decode.ClipWindow`), so the items ``(source, clip)`` are fixed by the
data and the window. The file format is described in :mod:`videodata.cache.format`.

Distribution: RANK / WORLD_SIZE / LOCAL_RANK come from the environment (torchrun, the deepspeed
launcher); no process group is created. Each rank owns a contiguous block of the sorted sources
and writes its own shards into the shared folder; rank 0 then waits for every rank's done file
and writes ``manifest.json``. Global clip order is work-item order for any world size.

Robustness: decoding runs in worker processes (:mod:`videodata.cache.decode_pool`) with a hard
per-file timeout; a hung or crashed worker is killed and replaced and its file is quarantined,
as are missing, empty, too-short and undecodable files. Killing the run at any moment and
running it again with the same arguments continues from the completed shards and gives the same
cache; a rerun with another tokenizer, window, source list or world size is refused.

Determinism: tokens are computed in fp32 with TF32 off and deterministic cuDNN. On CPU the tokens
of a clip do not depend on what else is in its batch; on GPU a different batch composition
(another world size) can in rare near-tie cases flip a token.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.config import to_dict
from core.numerics import exact_numerics
from core.video_io import PIL_EXTS
from tokenizer import VideoTokenizer
from videodata.cache.decode import ClipWindow, DecodedSource, DecodeTask, decode_source, worker_init
from videodata.cache.decode_pool import DecodePool, Failure
from videodata.cache.format import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, token_dtype, tokenizer_fingerprint
from videodata.cache.sources import (
    Source,
    discover_sources,
    rank_slice,
    source_sizes_sha256,
    sources_sha256,
)
from videodata.cache.writer import RankWriter, merge_manifest, prepare_cache_dir
from videodata.clips import check_clip_shape

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    """One rank's share of a caching job.

    Attributes:
        data: a folder (scanned recursively), a media file, or a ``.csv`` / ``.jsonl`` manifest
            with ``path`` and optional ``caption`` and ``label`` columns.
        tokenizer: an exported tokenizer folder (``VideoTokenizer.from_pretrained``).
        out: the cache folder, shared by all ranks.
        window: how clips are cut from each source.
        shard_size: clips per shard.
        batch_size: clips per tokenizer batch.
        num_workers: decode processes; None picks :func:`default_num_workers`; 0 decodes in
            this process, without timeouts or crash protection.
        decode_timeout_s: seconds one file may take, counted from when its worker begins it,
            before the worker is killed and the file quarantined.
        wait_timeout_s: seconds rank 0 waits for the other ranks to finish.
        device: where to encode; None is ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
        threads: torch CPU threads while encoding; 0 leaves torch's choice.
        progress: draw a progress bar (rank 0 only).
        local_rank: the deepspeed launcher's ``--local_rank``, used when LOCAL_RANK is unset.
    """

    data: Path
    tokenizer: Path
    out: Path
    window: ClipWindow = field(default_factory=ClipWindow)
    shard_size: int = 1024
    batch_size: int = 8
    num_workers: int | None = None
    decode_timeout_s: float = 120.0
    wait_timeout_s: float = 86400.0
    device: torch.device | None = None
    threads: int = 0
    progress: bool = True
    local_rank: int | None = None

    def __post_init__(self) -> None:
        for name in ("shard_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads < 0 or (self.num_workers is not None and self.num_workers < 0):
            raise ValueError(f"threads and num_workers must be >= 0, got {self.threads} and {self.num_workers}")
        # finite too: an infinite timeout reached the OS's wait as an OverflowError, after spec.json was written
        if not (0 < self.decode_timeout_s < math.inf):
            raise ValueError(f"the decode timeout must be a finite number > 0 seconds, got {self.decode_timeout_s}")
        if not (0 < self.wait_timeout_s < math.inf):
            raise ValueError(f"the wait timeout must be a finite number > 0 seconds, got {self.wait_timeout_s}")


@dataclass(frozen=True, kw_only=True)
class BuildSummary:
    """What :func:`build_cache` did on this rank.

    Attributes:
        rank, world_size: this process's place in the job.
        num_sources: sources in the whole dataset.
        rank_clips, rank_shards: clips and shards this rank has written (over all runs).
        rank_quarantined: sources this rank quarantined in this run.
        seconds: wall time of this run.
        steady_clips_per_s: clips/s encoded by this rank after its first batch (start-up, model load
            and the decode workers' first results excluded); None with fewer than two batches.
        manifest: the merged manifest (rank 0 only), written to ``manifest_path``.
        manifest_path: ``out / manifest.json`` on rank 0, None on other ranks.
    """

    rank: int
    world_size: int
    num_sources: int
    rank_clips: int
    rank_shards: int
    rank_quarantined: int
    seconds: float
    steady_clips_per_s: float | None = None
    manifest: dict[str, Any] | None = None
    manifest_path: Path | None = None


def dist_env(local_rank_arg: int | None = None) -> tuple[int, int, int, int]:
    """(rank, world_size, local_rank, local_world_size) from the launcher's environment.

    Raises:
        ValueError: a variable is not an integer, or RANK is outside ``[0, WORLD_SIZE)``.
    """
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", local_rank_arg or 0), ("LOCAL_WORLD_SIZE", 0)):
        raw = os.environ.get(name)
        try:
            values[name] = int(raw) if raw not in (None, "") else default
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    rank, world = values["RANK"], values["WORLD_SIZE"]
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} must satisfy 0 <= RANK < WORLD_SIZE")
    return rank, world, values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"] or world


def default_num_workers(local_world_size: int) -> int:
    """Decode processes per rank: this machine's CPUs shared by its ranks, minus the encoder's, in [1, 8]."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus // max(1, local_world_size) - 1))


class ClipEncoder:
    """Batches of uint8 clips -> token ids with a frozen tokenizer (fp32, no TF32)."""

    def __init__(self, tokenizer: VideoTokenizer, device: torch.device, dtype: np.dtype) -> None:
        self.tokenizer, self.device, self.dtype = tokenizer.to(device).eval(), device, dtype
        self.codebook_size = tokenizer.codebook_size

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """(B, T, H, W, 3) uint8 -> (B, t, h, w) ids in the cache dtype."""
        x = torch.from_numpy(frames).to(self.device, non_blocking=True)  # (B, T, H, W, 3) uint8
        x = x.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)  # (B, 3, T, H, W), as frames_to_tensor
        ids = self.tokenizer.encode(x).cpu().numpy()  # (B, t, h, w) int64
        if ids.size and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise RuntimeError(f"tokenizer returned ids outside [0, {self.codebook_size})")
        return ids.astype(self.dtype)


@dataclass(frozen=True)
class _Work:
    """This rank's share of the work items: sources ``own`` of the sorted ``sources``."""

    root: Path
    sources: list[Source]
    own: range
    window: ClipWindow

    def tasks(self, resume: tuple[int, int] | None) -> Iterator[DecodeTask]:
        """Decode tasks from the resume point (source, first clip) on, lazily."""
        first = resume[0] if resume is not None else self.own.start
        for i in range(first, self.own.stop):
            min_clip = resume[1] if resume is not None and i == resume[0] else 0
            yield DecodeTask(index=i, file=str(self.root / self.sources[i].path), window=self.window, min_clip=min_clip)


@contextlib.contextmanager
def _deterministic_torch(threads: int) -> Iterator[None]:
    """:func:`core.numerics.exact_numerics` (tokens must not depend on the hardware's fast paths) and ``threads`` CPU
    threads inside; restored after."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with exact_numerics():
            yield
    finally:
        torch.set_num_threads(saved)


def _check_paths(cfg: BuildConfig) -> None:
    if not Path(cfg.data).exists():
        raise ValueError(f"data path {str(cfg.data)!r} does not exist")
    if not Path(cfg.tokenizer).is_dir():
        raise ValueError(f"tokenizer folder {str(cfg.tokenizer)!r} does not exist or is not a folder")


def _check_video_backend(root: Path, sources: list[Source]) -> None:
    """Video files need PyAV (their display metadata, and decoding where decord fails): without it every video was
    quarantined, one warning each, and the cache came out empty."""
    if any(Path(s.path).suffix.lower() not in PIL_EXTS and not (root / s.path).is_dir() for s in sources):
        try:
            import av  # noqa: F401, PLC0415 - imported where it is used; here only to see that it is there
        except ImportError as err:
            raise ValueError(f"video files need PyAV, which cannot be imported ({err}): pip install av") from None


def build_cache(cfg: BuildConfig) -> BuildSummary:
    """Caches this rank's share of the dataset and, on rank 0, merges the manifest.

    Args:
        cfg: the job; every rank of a job passes the same one.

    Returns:
        What this rank wrote; on rank 0 also the merged manifest.

    Raises:
        ValueError: bad input (a missing path, a window the tokenizer cannot take, a cache folder
            made with other settings, a rank that did not finish in time).
    """
    t0 = time.monotonic()
    rank, world, local_rank, local_world = dist_env(cfg.local_rank)
    _check_paths(cfg)
    window, out = cfg.window, Path(cfg.out)
    fingerprint = tokenizer_fingerprint(cfg.tokenizer)
    tokenizer = VideoTokenizer.from_pretrained(cfg.tokenizer)
    check_clip_shape(tokenizer, window.num_frames, window.size)
    grid = tokenizer.latent_shape(window.num_frames, window.size, window.size)
    dtype = token_dtype(tokenizer.codebook_size)
    device = cfg.device
    if device is None:
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)

    root, sources = discover_sources(cfg.data)
    root = root.resolve()
    _check_video_backend(root, sources)
    cache_spec = {
        "format": FORMAT_NAME,
        "identity": {  # everything a resumed run must share with the run that started the cache
            "format_version": FORMAT_VERSION,
            "tokenizer_fingerprint": fingerprint,
            "codebook_size": tokenizer.codebook_size,
            "grid": list(grid),
            "dtype": dtype.name,
            "clip_spec": window.to_dict(),  # the on-disk name of the clip window
            "shard_size": cfg.shard_size,
            "world_size": world,
            "num_sources": len(sources),
            "sources_sha256": sources_sha256(sources),
            "source_sizes_sha256": source_sizes_sha256(root, sources),
        },
        "tokenizer": {"path": str(Path(cfg.tokenizer).resolve()), "config": to_dict(tokenizer.config)},
        "data": str(root),
        "sources": [
            {
                "path": s.path,
                "caption": s.caption,
                "label": s.label,
                **({"captions": list(s.captions)} if len(s.captions) > 1 else {}),
            }
            for s in sources
        ],
    }
    prepare_cache_dir(out, cache_spec)
    writer = RankWriter(out, rank=rank, world_size=world, shard_size=cfg.shard_size, dtype=dtype, grid=grid)
    quarantined, steady = 0, None
    try:
        if not writer.complete:
            work = _Work(root=root, sources=sources, own=rank_slice(len(sources), rank, world), window=window)
            num_workers = cfg.num_workers if cfg.num_workers is not None else default_num_workers(local_world)
            pool = DecodePool(
                decode_source, num_workers=num_workers, timeout_s=cfg.decode_timeout_s,
                initializer=worker_init, preload=["videodata.cache.decode", "av"],
            )  # fmt: skip
            with pool, _deterministic_torch(cfg.threads):
                quarantined, steady = _encode_slice(
                    work, pool, ClipEncoder(tokenizer, device, dtype), writer, batch_size=cfg.batch_size,
                    window=2 * max(1, num_workers) + 2, progress=cfg.progress and rank == 0,
                )  # fmt: skip
            writer.finish()
    finally:
        writer.close()
    summary = {
        "rank": rank, "world_size": world, "num_sources": len(sources), "rank_clips": writer.num_clips,
        "rank_shards": len(writer.shards), "rank_quarantined": quarantined, "steady_clips_per_s": steady,
    }  # fmt: skip
    if rank != 0:
        return BuildSummary(**summary, seconds=time.monotonic() - t0)
    manifest = merge_manifest(
        out, cache_spec, world_size=world, wait_timeout_s=cfg.wait_timeout_s, elapsed_s=time.monotonic() - t0
    )
    return BuildSummary(**summary, seconds=time.monotonic() - t0, manifest=manifest, manifest_path=out / MANIFEST_NAME)


def _quarantine_entry(source_index: int, source: Source, failure: Failure) -> dict[str, Any]:
    reason = (failure.error_kind or "undecodable") if failure.kind == "error" else failure.kind
    return {"source": source_index, "path": source.path, "reason": reason, "detail": failure.detail}


def _encode_slice(
    work: _Work,
    pool: DecodePool,
    encoder: ClipEncoder,
    writer: RankWriter,
    *,
    batch_size: int,
    window: int,
    progress: bool,
) -> tuple[int, float | None]:
    """Streams decoded sources through the encoder into the writer.

    Returns:
        How many sources were quarantined, and the clips/s after the first batch (None with fewer than two).

    Decoding runs ahead in the pool (at most ``window`` sources in flight) while this process
    encodes batches of ``batch_size`` clips, so decode and encode overlap.
    """
    per_source = work.window.clips_per_video
    bar = tqdm(
        total=len(work.own) * per_source, initial=writer.num_clips, unit="clip", dynamic_ncols=True,
        desc="caching (rank 0)" if writer.world_size > 1 else "caching", disable=not progress, mininterval=1.0,
    )  # fmt: skip
    batch: list[tuple[np.ndarray, dict[str, Any]]] = []
    quarantined = 0
    steady = {"since": 0.0, "clips": 0}  # clock after the first batch, clips since

    def flush() -> None:
        ids = encoder(np.stack([frames for frames, _ in batch]))  # (B, t, h, w)
        for (_, meta), row in zip(batch, ids, strict=True):
            writer.add(row, **meta)
        bar.update(len(batch))
        if steady["since"]:
            steady["clips"] += len(batch)
        else:
            steady["since"] = time.monotonic()
        batch.clear()

    for task, result in pool.imap(work.tasks(writer.resume_from), window=window):
        src = work.sources[task.index]
        if isinstance(result, Failure):
            bar.total -= per_source
            entry = _quarantine_entry(task.index, src, result)
            if task.min_clip > 0:  # its first clips are in a shard already: the entry records the loss of the rest
                lost = f"clips from {task.min_clip} on lost on resume ({entry['reason']}): {entry['detail']}"
                entry |= {"reason": "partial", "detail": lost}
            writer.quarantine(entry)
            quarantined += 1
            log.warning("quarantined %s (%s): %s", src.path, entry["reason"], entry["detail"])
            bar.set_postfix(quarantined=quarantined, refresh=False)
            continue
        decoded: DecodedSource = result
        bar.total -= per_source - decoded.num_planned
        for j, clip in enumerate(decoded.clips):
            meta = {
                "source": task.index, "clip": clip, "start": decoded.starts[j], "stride": decoded.stride,
                "label": src.label, "caption": src.caption_entry, "last_of_source": clip == decoded.last_clip,
            }  # fmt: skip
            batch.append((decoded.frames[j], meta))
            if len(batch) == batch_size:
                flush()
    if batch:
        flush()
    bar.close()
    if pool.num_replaced:
        log.info("replaced %d hung or crashed decode worker(s)", pool.num_replaced)
    elapsed = time.monotonic() - steady["since"]
    return quarantined, (steady["clips"] / elapsed if steady["clips"] and elapsed > 0 else None)
