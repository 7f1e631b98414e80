"""Cache a dataset as token shards made by a frozen tokenizer, and verify such a cache.

Usage::

    python tools/cache_tokens.py --data videos/ --tokenizer runs/tok/tokenizer --out cache/ \\
        --num-frames 17 --size 128 --clips-per-video 2 --num-workers 8
    torchrun --nproc_per_node 8 tools/cache_tokens.py --data ... --out /shared/cache   # or deepspeed
    python tools/cache_tokens.py verify cache/

``--data`` is a folder (scanned recursively, linked folders included), a media file, or a ``.csv``/``.jsonl`` manifest
with ``path`` and optional ``caption`` and ``label`` columns. Each source gives up to
``--clips-per-video`` clips (evenly spread, or at ``--start-offsets``). Killing a run and
rerunning the same command resumes it; every rank of a torchrun / deepspeed launch writes its
own shards and rank 0 writes ``manifest.json``. The job is :func:`videodata.cache.build.build_cache`;
the format is described in :mod:`videodata.cache.format`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli import CliParser, parse_device, run_cli, setup_logging
from videodata.cache.build import BuildConfig, BuildSummary, build_cache
from videodata.cache.decode import ClipWindow
from videodata.cache.format import MANIFEST_NAME, verify_cache


def _start_offsets(text: str) -> tuple[int, ...] | None:
    """``--start-offsets``: 'even' (None) or comma-separated start frames."""
    if text.strip().lower() == "even":
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'even' or frame numbers like '0,32,64', got {text!r}") from None


def build_parser() -> CliParser:
    p = CliParser(prog="cache_tokens.py", description="Dataset -> frozen tokenizer -> token shards + manifest.")
    p.add_argument("--data", required=True, type=Path, help="folder, media file, or .csv/.jsonl manifest")
    p.add_argument("--tokenizer", required=True, type=Path, help="exported tokenizer folder (from_pretrained)")
    p.add_argument("--out", required=True, type=Path, help="cache folder (shared by all ranks)")
    p.add_argument("--num-frames", type=int, default=17, help="frames per clip, 1 + k*ct (default 17)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--stride", type=int, default=None, help="step between clip frames (default 1)")
    rate.add_argument("--fps", type=float, default=None, help="target fps: stride = round(source fps / fps)")
    p.add_argument("--size", type=int, default=128, help="short side resize, then square center crop (default 128)")
    p.add_argument("--clips-per-video", type=int, default=None, help="clips per source (default 1)")
    p.add_argument(
        "--start-offsets", type=_start_offsets, default=None,
        help="'even' (spread over the video, the default) or start frames '0,32,64'",
    )  # fmt: skip
    p.add_argument("--shard-size", type=int, default=1024, help="clips per shard (default 1024)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per tokenizer batch (default 8)")
    p.add_argument(
        "--num-workers", type=int, default=None,
        help="decode processes (default: CPUs per local rank - 1, at most 8); 0 decodes here, without timeouts",
    )  # fmt: skip
    p.add_argument(
        "--decode-timeout", type=float, default=120.0,
        help="seconds one file may decode, from when its worker begins it, before the worker is killed (default 120)",
    )  # fmt: skip
    p.add_argument("--wait-timeout", type=float, default=86400.0, help="seconds rank 0 waits for the other ranks")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda:LOCAL_RANK if any, else cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads for encoding (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    return p


def _describe(s: BuildSummary, out: Path) -> str:
    rate = "" if s.steady_clips_per_s is None else f" ({s.steady_clips_per_s:.2f} clips/s after the first batch)"
    if s.manifest is None:
        return (
            f"rank {s.rank}: {s.rank_clips} clips in {s.rank_shards} shards; "
            f"{s.rank_quarantined} quarantined this run; {s.seconds:.1f} s{rate}"
        )
    m = s.manifest
    return (
        f"cached {m['num_clips']} clips from {s.num_sources} sources in {m['num_shards']} shards; "
        f"{len(m['quarantine'])} quarantined; {s.seconds:.1f} s{rate} -> {out / MANIFEST_NAME}"
    )


def run_build(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    window = ClipWindow.from_options(
        num_frames=args.num_frames, size=args.size, stride=args.stride, fps=args.fps,
        clips_per_video=args.clips_per_video, start_offsets=args.start_offsets,
    )  # fmt: skip
    cfg = BuildConfig(
        data=args.data, tokenizer=args.tokenizer, out=args.out, window=window, shard_size=args.shard_size,
        batch_size=args.batch_size, num_workers=args.num_workers, decode_timeout_s=args.decode_timeout,
        wait_timeout_s=args.wait_timeout, device=parse_device(args.device) if args.device else None,
        threads=args.threads, progress=not args.no_progress, local_rank=args.local_rank,
    )  # fmt: skip
    result = build_cache(cfg)
    print(_describe(result, args.out))
    if result.manifest is not None and result.manifest["num_clips"] == 0:  # exit 0 said a useless cache was made
        where = args.out / MANIFEST_NAME
        print(f"error: no clip was cached from {result.num_sources} sources; {len(result.manifest['quarantine'])} "
              f"were quarantined (listed under 'quarantine' in {where})", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def run_verify(argv: Sequence[str]) -> int:
    p = CliParser(prog="cache_tokens.py verify", description="Recompute and check every shard file's sha256.")
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
    return run_build(argv[1:] if argv and argv[0] == "build" else argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: build (default, or ``build ...``) or ``verify CACHE_DIR``.

    Returns:
        0 on success, 1 when verify finds a mismatch or a build cached no clip (every source quarantined), 2 on bad
        input (one ``error:`` line).
    """
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
