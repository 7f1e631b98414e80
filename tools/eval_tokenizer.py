"""Reconstruction quality of a video tokenizer: PSNR, SSIM and (optionally) LPIPS per video.

Usage::

    python tools/eval_tokenizer.py --tokenizer runs/tok/export --data videos/ \\
        --num-frames 17 --size 128 --json eval.json --previews previews/

Each video gives one clip: ``--num-frames`` frames ``--stride`` apart from the first frame,
resized so the short side is ``--size`` and center-cropped to a square. The clip goes through
``tokenizer.reconstruct`` and is scored against itself. The table lists every video and the
mean; ``--json`` writes the same numbers, ``--previews`` a PNG per video with the original
frames over the reconstruction.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/eval_tokenizer.py`: make the repo importable
    _ROOT = str(Path(__file__).resolve().parents[1])
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)

import argparse
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from core.files import atomic_write_text
from tokenizer import VideoTokenizer
from videoeval.metrics import LPIPS, psnr, ssim
from core.video_io import frames_to_tensor, list_media, read_video, resize_center_crop, tensor_to_frames, write_contact_sheet

log = logging.getLogger("tools.eval_tokenizer")

METRICS = ("psnr", "ssim", "lpips")

# Called with (path, original (T, H, W, 3) uint8, reconstruction (T, H, W, 3) uint8).
VideoCallback = Callable[[Path, np.ndarray, np.ndarray], None]


def check_clip_shape(tokenizer: nn.Module, num_frames: int, size: int | tuple[int, int]) -> None:
    """Raises ValueError unless the tokenizer accepts clips of ``num_frames`` x ``size``."""
    ct, cs = tokenizer.config.temporal_compression, tokenizer.config.spatial_compression
    if num_frames < 1 or (num_frames - 1) % ct:
        lo = 1 + max(0, (num_frames - 1) // ct) * ct
        raise ValueError(
            f"--num-frames {num_frames} is not of the form 1 + k*{ct} for this tokenizer; "
            f"use e.g. {lo} or {lo + ct}"
        )
    h, w = (size, size) if isinstance(size, int) else size
    if h < cs or w < cs or h % cs or w % cs:
        raise ValueError(f"--size {h}x{w} must be a positive multiple of the spatial compression {cs}")


@torch.no_grad()
def evaluate(
    tokenizer: nn.Module,
    paths: Sequence[str | os.PathLike],
    *,
    num_frames: int,
    size: int | tuple[int, int],
    stride: int = 1,
    lpips: LPIPS | None = None,
    skip_unreadable: bool = False,
    on_video: VideoCallback | None = None,
) -> list[dict[str, Any]]:
    """Reconstructs one clip per video and scores it.

    Args:
        tokenizer: a ``VideoTokenizer`` (anything with ``config.temporal_compression``,
            ``config.spatial_compression`` and ``reconstruct((B, 3, T, H, W)) -> same``).
            Clips are moved to the device of its parameters.
        paths: video or image files.
        num_frames: frames per clip, 1 + k*ct.
        size: clip side (square crop) or (h, w), multiples of cs.
        stride: step between the frames of a clip.
        lpips: optional LPIPS network; it is moved to the tokenizer's device.
        skip_unreadable: log and skip videos that cannot be read or are too short instead of
            raising (skipped videos are absent from the result).
        on_video: called per video with (path, original, reconstruction) uint8 frames, e.g.
            to write previews.

    Returns:
        One dict per evaluated video, in the order of ``paths``: ``path``, ``num_frames``,
        ``height``, ``width``, ``psnr`` (dB), ``ssim`` and, with ``lpips``, ``lpips``.

    Raises:
        ValueError: a clip shape the tokenizer cannot take, or (without skip_unreadable) an
            unreadable or too-short video.
    """
    check_clip_shape(tokenizer, num_frames, size)
    param = next(iter(tokenizer.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    if lpips is not None:
        lpips = lpips.to(device)
    results = []
    for path in map(Path, paths):
        try:
            frames = resize_center_crop(read_video(path, num_frames=num_frames, stride=stride), size)
        except ValueError as err:
            if not skip_unreadable:
                raise
            log.warning("skipping %s", err)
            continue
        x = frames_to_tensor(frames).unsqueeze(0).to(device)  # (1, 3, T, H, W)
        recon = tokenizer.reconstruct(x).float().clamp(-1, 1)  # (1, 3, T, H, W)
        row: dict[str, Any] = {
            "path": str(path),
            "num_frames": frames.shape[0],
            "height": frames.shape[1],
            "width": frames.shape[2],
            "psnr": float(psnr(x, recon)[0]),
            "ssim": float(ssim(x, recon)[0]),
        }
        if lpips is not None:
            row["lpips"] = float(lpips(x, recon)[0])
        results.append(row)
        log.debug("%s: psnr %.3f ssim %.4f", path, row["psnr"], row["ssim"])
        if on_video is not None:
            on_video(path, frames, tensor_to_frames(recon[0]))
    return results


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean of every metric present in ``results`` (PSNR is averaged in dB)."""
    keys = [k for k in METRICS if results and all(k in r for r in results)]
    return {k: float(np.mean([r[k] for r in results])) for k in keys}


def format_table(results: Sequence[dict[str, Any]], mean: dict[str, float], root: Path | None = None) -> str:
    """Plain-text table: one line per video, then the mean."""
    keys = [k for k in METRICS if k in mean]

    def name(p: str) -> str:
        if root is not None and root.is_dir():
            return Path(p).relative_to(root).as_posix()
        return Path(p).name

    names = [name(r["path"]) for r in results]
    width = max([len("video"), len("mean"), *map(len, names)])
    fmt = {"psnr": "{:>8.3f}", "ssim": "{:>8.4f}", "lpips": "{:>8.4f}"}
    lines = [f"{'video':<{width}}" + "".join(f"{k:>9}" for k in keys)]
    for n, r in zip(names, results):
        lines.append(f"{n:<{width}}" + "".join(" " + fmt[k].format(r[k]) for k in keys))
    lines.append("-" * len(lines[0]))
    lines.append(f"{'mean':<{width}}" + "".join(" " + fmt[k].format(mean[k]) for k in keys))
    return "\n".join(lines)


class _UsageError(Exception):
    """argparse rejected the command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="eval_tokenizer.py", description="Tokenizer reconstruction PSNR/SSIM/LPIPS.")
    p.add_argument("--tokenizer", required=True, type=Path, help="exported tokenizer folder (from_pretrained)")
    p.add_argument("--data", required=True, type=Path, help="a video/image file, a folder searched recursively, or a .csv/.jsonl manifest")
    p.add_argument("--num-frames", type=int, default=17, help="frames per clip, 1 + k*ct (default 17)")
    p.add_argument("--size", type=int, default=128, help="square crop side, a multiple of cs (default 128)")
    p.add_argument("--stride", type=int, default=1, help="step between clip frames (default 1)")
    p.add_argument("--max-videos", type=int, default=None, help="evaluate only the first N videos (sorted)")
    p.add_argument("--lpips", type=Path, default=None, help="TorchScript LPIPS file (see tools/metrics.py)")
    p.add_argument("--json", type=Path, default=None, help="write per-video and mean metrics here")
    p.add_argument("--previews", type=Path, default=None, help="write an original-over-recon PNG per video here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if available")
    return p


def _preview_writer(folder: Path, paths: Sequence[Path]) -> VideoCallback:
    # Index prefix: videos with the same name in different subfolders get distinct previews.
    index = {p: i for i, p in enumerate(paths)}

    def write(path: Path, original: np.ndarray, recon: np.ndarray) -> None:
        write_contact_sheet(folder / f"{index[path]:04d}_{path.stem}.png", [original, recon])

    return write


def run(args: argparse.Namespace) -> int:
    """Runs the evaluation for parsed arguments; raises ValueError/OSError on bad input."""
    if args.max_videos is not None and args.max_videos < 1:
        raise ValueError(f"--max-videos must be >= 1, got {args.max_videos}")
    if args.stride < 1:
        raise ValueError(f"--stride must be >= 1, got {args.stride}")
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        raise ValueError(f"--device {args.device!r} is not a device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available")
    tokenizer = VideoTokenizer.from_pretrained(args.tokenizer).to(device).eval()
    check_clip_shape(tokenizer, args.num_frames, args.size)
    lpips = LPIPS(args.lpips) if args.lpips is not None else None
    manifest = args.data.is_file() and args.data.suffix.lower() in (".csv", ".jsonl")
    if manifest:
        from videodata.cache.sources import discover_sources

        root, sources = discover_sources(args.data)
        paths = [root / s.path for s in sources][: args.max_videos]
    else:
        paths = list_media(args.data)[: args.max_videos]
    if not paths:
        raise ValueError(f"no videos or images found under {str(args.data)!r}")
    on_video = _preview_writer(args.previews, paths) if args.previews is not None else None
    results = evaluate(
        tokenizer,
        paths,
        num_frames=args.num_frames,
        size=args.size,
        stride=args.stride,
        lpips=lpips,
        skip_unreadable=args.data.is_dir() or manifest,  # one bad file in a folder should not end the run
        on_video=on_video,
    )
    if not results:
        raise ValueError(f"none of the {len(paths)} videos under {str(args.data)!r} could be read (see warnings)")
    mean = summarize(results)
    print(format_table(results, mean, args.data))
    done = {r["path"] for r in results}
    skipped = [str(p) for p in paths if str(p) not in done]
    if skipped:
        print(f"skipped {len(skipped)} of {len(paths)} videos (unreadable or too short)")
    if args.json is not None:
        report = {
            "tokenizer": str(args.tokenizer),
            "data": str(args.data),
            "settings": {"num_frames": args.num_frames, "size": args.size, "stride": args.stride},
            "mean": mean,
            "videos": results,
            "skipped": skipped,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(report, indent=2, allow_nan=False) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point. Returns 0 on success, 2 on bad input (one line on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        return run(args)
    except (_UsageError, ValueError, OSError) as err:
        print(f"eval_tokenizer: error: {err}".splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
