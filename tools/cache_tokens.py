"""Cache a dataset as token shards made by a frozen tokenizer, and verify such a cache.

Usage::

    python tools/cache_tokens.py --data videos/ --tokenizer runs/tok/tokenizer --out cache/ \\
        --num-frames 17 --size 128 --clips-per-video 2 --num-workers 8
    torchrun --nproc_per_node 8 tools/cache_tokens.py --data ... --out /shared/cache   # or deepspeed
    python tools/cache_tokens.py verify cache/

``--data`` is a folder (scanned recursively), a media file, or a ``.csv``/``.jsonl`` manifest
with ``path`` and optional ``caption`` and ``label`` columns. Sources are sorted by path and
each gives up to ``--clips-per-video`` clips (evenly spread, or at ``--start-offsets``), so
the work items (source, clip) are fixed by the data and the clip spec. The file format is
described in :mod:`videodata.cache.format`; training reads caches with :mod:`videodata.cache.reader`.

Distribution: RANK / WORLD_SIZE / LOCAL_RANK come from the environment (torchrun, the
deepspeed launcher); no process group is created. Each rank owns a contiguous block of the
sorted sources and writes its own shards to the shared ``--out`` folder; rank 0 then waits for
every rank's done file and writes ``manifest.json``. Global clip order is work-item order for
any world size.

Robustness: decoding runs in worker processes (see :mod:`videodata.cache.decode_pool`) with a hard
per-file ``--decode-timeout``; a hung or crashed worker is killed and replaced and its file is
quarantined, as are missing, empty, too-short and undecodable files. Killing the run at any
moment and rerunning the same command continues from the completed shards and gives the same
cache; a rerun with another tokenizer, clip spec, source list or world size is refused.

Test-only hooks (a hanging or crashing decoder, a kill after N file writes) are read from
``TOKVID_CACHE_TEST_HOOKS``; see :mod:`videodata.cache.sources`.

Determinism: tokens are computed in fp32 with TF32 off and deterministic cuDNN. On CPU the
tokens of a clip do not depend on what else is in its batch; on GPU a different batch
composition (another world size) can in rare near-tie cases flip a token.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/cache_tokens.py`: make the repo importable
    _ROOT = str(Path(__file__).resolve().parents[1])
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)

import argparse
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.cli import UsageError, run_cli, setup_logging
from core.config import to_dict
from tokenizer import VideoTokenizer
from videodata.cache.sources import (
    TEST_HOOKS_ENV,
    ClipSpec,
    DecodedSource,
    DecodeTask,
    Source,
    decode_source,
    discover_sources,
    parse_test_hooks,
    rank_slice,
    sources_sha256,
    worker_init,
)
from videodata.cache.writer import RankWriter, merge_manifest, prepare_cache_dir
from videodata.cache.decode_pool import DecodePool, Failure
from tools.eval_tokenizer import check_clip_shape
from videodata.cache.format import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, token_dtype, tokenizer_fingerprint, verify_cache

log = logging.getLogger("tools.cache_tokens")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line through run_cli, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cache_tokens.py", description="Dataset -> frozen tokenizer -> token shards + manifest.")
    p.add_argument("--data", required=True, type=Path, help="folder, media file, or .csv/.jsonl manifest")
    p.add_argument("--tokenizer", required=True, type=Path, help="exported tokenizer folder (from_pretrained)")
    p.add_argument("--out", required=True, type=Path, help="cache folder (shared by all ranks)")
    p.add_argument("--num-frames", type=int, default=17, help="frames per clip, 1 + k*ct (default 17)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--stride", type=int, default=None, help="step between clip frames (default 1)")
    rate.add_argument("--fps", type=float, default=None, help="target fps: stride = round(source fps / fps)")
    p.add_argument("--size", type=int, default=128, help="short side resize, then square center crop (default 128)")
    p.add_argument("--clips-per-video", type=int, default=None, help="clips per source (default 1)")
    p.add_argument("--start-offsets", default="even", help="'even' (spread over the video) or start frames '0,32,64'")
    p.add_argument("--shard-size", type=int, default=1024, help="clips per shard (default 1024)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per tokenizer batch (default 8)")
    p.add_argument(
        "--num-workers", type=int, default=None,
        help="decode processes (default: CPUs per local rank - 1, at most 8); 0 decodes in this process, without timeouts",
    )  # fmt: skip
    p.add_argument("--decode-timeout", type=float, default=120.0, help="seconds per file before its decoder is killed")
    p.add_argument("--wait-timeout", type=float, default=86400.0, help="seconds rank 0 waits for the other ranks")
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if CUDA is available, else cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads for encoding (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    return p


def dist_env(local_rank_arg: int | None = None) -> tuple[int, int, int, int]:
    """(rank, world_size, local_rank, local_world_size) from the launcher's environment."""
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


def clip_spec_from_args(args: argparse.Namespace) -> ClipSpec:
    """Validates the clip flags; explicit ``--start-offsets`` fix the number of clips per video."""
    offsets = None
    if args.start_offsets.strip().lower() != "even":
        try:
            offsets = tuple(int(v) for v in args.start_offsets.split(","))
        except ValueError:
            want = "'even' or frame numbers like '0,32,64'"
            raise ValueError(f"--start-offsets must be {want}, got {args.start_offsets!r}") from None
        if args.clips_per_video not in (None, len(offsets)):
            raise ValueError(f"--clips-per-video {args.clips_per_video} disagrees with {len(offsets)} --start-offsets")
        if min(offsets) < 0 or len(set(offsets)) != len(offsets):
            raise ValueError(f"--start-offsets must be distinct frame numbers >= 0, got {args.start_offsets!r}")
    clips = len(offsets) if offsets is not None else (args.clips_per_video if args.clips_per_video is not None else 1)
    checks = {"--num-frames": args.num_frames, "--size": args.size, "--clips-per-video": clips, "--stride": args.stride or 1}
    for flag, value in checks.items():
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if args.fps is not None and not (args.fps > 0 and np.isfinite(args.fps)):
        raise ValueError(f"--fps must be a positive number, got {args.fps}")
    return ClipSpec(
        num_frames=args.num_frames, size=args.size, stride=args.stride or 1, fps=args.fps,
        clips_per_video=clips, start_offsets=offsets,
    )  # fmt: skip


def _device(arg: str | None, local_rank: int) -> torch.device:
    if arg is None:
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(arg)
    except RuntimeError as err:
        raise ValueError(f"--device {arg!r} is not a device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available")
    return device


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


def _quarantine_entry(source_index: int, source: Source, failure: Failure) -> dict[str, Any]:
    reason = (failure.error_kind or "undecodable") if failure.kind == "error" else failure.kind
    return {"source": source_index, "path": source.path, "reason": reason, "detail": failure.detail}


@dataclass(frozen=True)
class _Work:
    """This rank's share of the work items: sources ``own`` of the sorted ``sources``."""

    root: Path
    sources: list[Source]
    own: range
    spec: ClipSpec
    hooks: tuple[tuple[str, str], ...]

    def tasks(self, resume: tuple[int, int] | None) -> Iterator[DecodeTask]:
        """Decode tasks from the resume point (source, first clip) on, lazily."""
        first = resume[0] if resume is not None else self.own.start
        for i in range(first, self.own.stop):
            min_clip = resume[1] if resume is not None and i == resume[0] else 0
            path = str(self.root / self.sources[i].path)
            yield DecodeTask(index=i, file=path, spec=self.spec, min_clip=min_clip, hooks=self.hooks)


def _check_flags(args: argparse.Namespace) -> None:
    for flag, value in (("--shard-size", args.shard_size), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if args.threads < 0 or (args.num_workers is not None and args.num_workers < 0):
        raise ValueError(f"--threads and --num-workers must be >= 0, got {args.threads} and {args.num_workers}")
    if not args.decode_timeout > 0:
        raise ValueError(f"--decode-timeout must be > 0 seconds, got {args.decode_timeout}")
    if not args.data.exists():
        raise ValueError(f"--data {str(args.data)!r} does not exist")
    if not args.tokenizer.is_dir():
        raise ValueError(f"--tokenizer {str(args.tokenizer)!r} does not exist or is not a folder")


def _default_num_workers(local_world: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus // max(1, local_world) - 1))


def run_build(args: argparse.Namespace) -> int:
    """Caches this rank's slice and, on rank 0, writes the manifest. Returns the exit code."""
    t0 = time.monotonic()
    rank, world, local_rank, local_world = dist_env(args.local_rank)
    spec = clip_spec_from_args(args)
    _check_flags(args)
    hooks = parse_test_hooks(os.environ.get(TEST_HOOKS_ENV))
    fingerprint = tokenizer_fingerprint(args.tokenizer)
    tokenizer = VideoTokenizer.from_pretrained(args.tokenizer)
    check_clip_shape(tokenizer, spec.num_frames, spec.size)
    grid = tokenizer.latent_shape(spec.num_frames, spec.size, spec.size)
    dtype = token_dtype(tokenizer.codebook_size)
    device = _device(args.device, local_rank)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Tokens must not depend on the hardware's fast paths: fp32 everywhere, fixed algorithms.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True

    root, sources = discover_sources(args.data)
    root = root.resolve()
    cache_spec = {
        "format": FORMAT_NAME,
        "identity": {  # everything a resumed run must share with the run that started the cache
            "format_version": FORMAT_VERSION,
            "tokenizer_fingerprint": fingerprint,
            "codebook_size": tokenizer.codebook_size,
            "grid": list(grid),
            "dtype": dtype.name,
            "clip_spec": spec.to_dict(),
            "shard_size": args.shard_size,
            "world_size": world,
            "num_sources": len(sources),
            "sources_sha256": sources_sha256(sources),
        },
        "tokenizer": {"path": str(args.tokenizer.resolve()), "config": to_dict(tokenizer.config)},
        "data": str(root),
        "sources": [{"path": s.path, "caption": s.caption, "label": s.label} for s in sources],
    }
    prepare_cache_dir(args.out, cache_spec)
    exit_after = next((int(v) for k, v in hooks if k == "exit_after_writes"), None)
    writer = RankWriter(
        args.out, rank=rank, world_size=world, shard_size=args.shard_size, dtype=dtype, grid=grid, exit_after_writes=exit_after
    )
    quarantined = 0
    if not writer.complete:
        work = _Work(root=root, sources=sources, own=rank_slice(len(sources), rank, world), spec=spec, hooks=hooks)
        num_workers = args.num_workers if args.num_workers is not None else _default_num_workers(local_world)
        pool = DecodePool(
            decode_source, num_workers=num_workers, timeout_s=args.decode_timeout,
            initializer=worker_init, preload=["videodata.cache.sources", "av"],
        )  # fmt: skip
        with pool:
            quarantined = _encode_slice(
                work, pool, ClipEncoder(tokenizer, device, dtype), writer,
                batch_size=args.batch_size, window=2 * max(1, num_workers) + 2, progress=not args.no_progress and rank == 0,
            )  # fmt: skip
        writer.finish()
    if rank != 0:
        print(
            f"rank {rank}: {writer.num_clips} clips in {len(writer.shards)} shards; "
            f"{quarantined} quarantined this run; {time.monotonic() - t0:.1f} s"
        )
        return 0
    manifest = merge_manifest(
        args.out, cache_spec, world_size=world, wait_timeout_s=args.wait_timeout, elapsed_s=time.monotonic() - t0
    )
    print(
        f"cached {manifest['num_clips']} clips from {len(sources)} sources in {manifest['num_shards']} shards; "
        f"{len(manifest['quarantine'])} quarantined; {time.monotonic() - t0:.1f} s -> {args.out / MANIFEST_NAME}"
    )
    return 0


def _encode_slice(
    work: _Work, pool: DecodePool, encoder: ClipEncoder, writer: RankWriter, *, batch_size: int, window: int, progress: bool
) -> int:
    """Streams decoded sources through the encoder into the writer. Returns how many were quarantined.

    Decoding runs ahead in the pool (at most ``window`` sources in flight) while this process
    encodes batches of ``batch_size`` clips, so decode and encode overlap.
    """
    spec = work.spec
    bar = tqdm(
        total=len(work.own) * spec.clips_per_video, initial=writer.num_clips, unit="clip", dynamic_ncols=True,
        desc="caching (rank 0)" if writer.world_size > 1 else "caching", disable=not progress, mininterval=1.0,
    )  # fmt: skip
    batch: list[tuple[np.ndarray, dict[str, Any]]] = []
    quarantined = 0

    def flush() -> None:
        ids = encoder(np.stack([frames for frames, _ in batch]))  # (B, t, h, w)
        for (_, meta), row in zip(batch, ids):
            writer.add(row, **meta)
        bar.update(len(batch))
        batch.clear()

    for task, result in pool.imap(work.tasks(writer.resume_from), window=window):
        src = work.sources[task.index]
        if isinstance(result, Failure):
            bar.total -= spec.clips_per_video
            if task.min_clip > 0:  # its first clips are already in a shard: never quarantine it now
                log.warning("%s failed on resume (%s: %s); its remaining clips are skipped", src.path, result.kind, result.detail)
                continue
            entry = _quarantine_entry(task.index, src, result)
            writer.quarantine(entry)
            quarantined += 1
            log.warning("quarantined %s (%s): %s", src.path, entry["reason"], entry["detail"])
            bar.set_postfix(quarantined=quarantined, refresh=False)
            continue
        decoded: DecodedSource = result
        bar.total -= spec.clips_per_video - decoded.num_planned
        for j, clip in enumerate(decoded.clips):
            meta = dict(
                source=task.index, clip=clip, start=decoded.starts[j], stride=decoded.stride,
                label=src.label, caption=src.caption, last_of_source=clip == decoded.last_clip,
            )  # fmt: skip
            batch.append((decoded.frames[j], meta))
            if len(batch) == batch_size:
                flush()
    if batch:
        flush()
    bar.close()
    if pool.num_replaced:
        log.info("replaced %d hung or crashed decode worker(s)", pool.num_replaced)
    return quarantined


def run_verify(argv: Sequence[str]) -> int:
    p = _Parser(prog="cache_tokens.py verify", description="Recompute and check every shard file's sha256.")
    p.add_argument("cache", type=Path, help="token cache folder")
    args = p.parse_args(argv)
    problems, num_files = verify_cache(args.cache)
    for line in problems:
        print(f"verify: {line}", file=sys.stderr)
    if problems:
        print(f"verify: {len(problems)} of {num_files} files do not match {MANIFEST_NAME}", file=sys.stderr)
        return 1
    print(f"ok: {num_files} files match {args.cache / MANIFEST_NAME}")
    return 0


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    if argv and argv[0] == "verify":
        return run_verify(argv[1:])
    if argv and argv[0] == "build":
        argv = argv[1:]
    return run_build(build_parser().parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: build (default) or ``verify CACHE_DIR``.

    Returns:
        0 on success, 1 when verify finds a mismatch, 2 on bad input (one ``error:`` line).
    """
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
