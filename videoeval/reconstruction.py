"""Reconstruction quality of a video tokenizer: PSNR, SSIM and (optionally) LPIPS per video, and one round trip.

Each video gives one clip: ``num_frames`` frames ``stride`` apart from the first frame, resized
so the short side is ``size`` and center-cropped. The clip goes through
``tokenizer.reconstruct`` and is scored against itself. :func:`evaluate_dataset` is the work of
``tools/eval_tokenizer.py``, :func:`roundtrip` that of ``tools/roundtrip.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.files import check_dir_target, check_file_target
from core.frames import frames_to_tensor, resize_center_crop, tensor_to_frames
from core.tables import format_table
from core.video_io import IMAGE_EXTS, read_video
from core.video_probe import video_fps
from core.video_write import write_contact_sheet, write_video
from tokenizer import VideoTokenizer
from videodata.cache.sources import discover_sources
from videodata.clips import check_clip_shape
from videoeval.metrics import LPIPS, SSIM_WINDOW, psnr, ssim

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "lpips")
_DIGITS = {"psnr": 3, "ssim": 4, "lpips": 4}  # decimals in tables

# Called with (path, original (T, H, W, 3) uint8, reconstruction (T, H, W, 3) uint8).
VideoCallback = Callable[[Path, np.ndarray, np.ndarray], None]


@torch.no_grad()
def check_ssim_size(size: int | tuple[int, int]) -> None:
    """ValueError for frames (``size`` or (H, W)) too small for SSIM's window, before any video is decoded or
    file written."""
    if min(size if isinstance(size, tuple) else (size,)) < SSIM_WINDOW:
        raise ValueError(f"--size must be at least {SSIM_WINDOW} for SSIM, got {size}")


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
    check_ssim_size(size)
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
        recon = tokenizer.reconstruct(x).float()  # (1, 3, T, H, W)
        if not bool(torch.isfinite(recon).all()):  # clamp keeps NaN: a diverged tokenizer was scored "nan", exit 0
            raise ValueError(f"the tokenizer returned non-finite values for {str(path)!r}: has its training diverged?")
        recon = recon.clamp(-1, 1)
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
    """Mean of every metric present in all of ``results`` (PSNR is averaged in dB)."""
    keys = [k for k in METRICS if results and all(k in r for r in results)]
    return {k: float(np.mean([r[k] for r in results])) for k in keys}


def recon_table(
    results: Sequence[dict[str, Any]], mean: dict[str, float], root: str | os.PathLike | None = None
) -> str:
    """Markdown table: one row per video (its path relative to ``root`` when that is a folder), then the mean."""
    keys = [k for k in METRICS if k in mean]
    root = Path(root) if root is not None else None

    def name(p: str) -> str:
        return Path(p).relative_to(root).as_posix() if root is not None and root.is_dir() else Path(p).name

    rows = [[name(r["path"]), *(f"{r[k]:.{_DIGITS[k]}f}" for k in keys)] for r in results]
    rows.append(["mean", *(f"{mean[k]:.{_DIGITS[k]}f}" for k in keys)])
    return format_table(["video", *keys], rows)


def _preview_writer(folder: Path, paths: Sequence[Path]) -> VideoCallback:
    # Index prefix: videos with the same name in different subfolders get distinct previews.
    index = {p: i for i, p in enumerate(paths)}

    def write(path: Path, original: np.ndarray, recon: np.ndarray) -> None:
        write_contact_sheet(folder / _preview_name(index[path], path), [original, recon])

    return write


def _preview_name(index: int, path: Path) -> str:
    return f"{index:04d}_{path.stem}.png"


def evaluate_dataset(
    tokenizer_dir: str | os.PathLike,
    data: str | os.PathLike,
    *,
    num_frames: int = 17,
    size: int = 128,
    stride: int = 1,
    max_videos: int | None = None,
    lpips_path: str | os.PathLike | None = None,
    previews: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Loads a tokenizer and scores its reconstruction of one clip per video of a dataset.

    Args:
        tokenizer_dir: an exported tokenizer folder (``VideoTokenizer.from_pretrained``).
        data: a video or image file, a folder searched recursively, or a .csv/.jsonl manifest.
            In a folder or manifest, unreadable or too-short videos are skipped (and listed).
        num_frames: frames per clip, 1 + k*ct.
        size: square crop side, a multiple of cs.
        stride: step between the frames of a clip.
        max_videos: only the first N videos (sorted by path).
        lpips_path: TorchScript LPIPS file; LPIPS is left out without it.
        previews: a folder for one original-over-reconstruction PNG per video.
        device: where the tokenizer runs; None picks CUDA when available, else the CPU.

    Returns:
        A JSON-ready report: ``tokenizer``, ``data``, ``settings``, ``mean`` (per metric),
        ``videos`` (rows of :func:`evaluate`) and ``skipped`` (paths).

    Raises:
        ValueError: bad settings, a clip shape the tokenizer cannot take, no videos, or none readable.
    """
    if max_videos is not None and max_videos < 1:
        raise ValueError(f"--max-videos must be >= 1, got {max_videos}")
    if stride < 1:
        raise ValueError(f"--stride must be >= 1, got {stride}")
    if previews is not None:
        check_dir_target(previews, "--previews")  # "[Errno 20] Not a directory" came at the first preview
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = VideoTokenizer.from_pretrained(tokenizer_dir).to(device).eval()
    check_clip_shape(tokenizer, num_frames, size)
    lpips = LPIPS(lpips_path) if lpips_path is not None else None
    data = Path(data)
    root, sources = discover_sources(data)
    paths = [root / s.path for s in sources][:max_videos]
    if previews is not None:  # a run over its own previews folder wrote each preview over an input image
        sources = {p.resolve() for p in paths}
        clash = [t for i, p in enumerate(paths) if (t := Path(previews) / _preview_name(i, p)).resolve() in sources]
        if clash:
            raise ValueError(f"--previews {str(previews)!r} would write {clash[0].name} over an input: give another "
                             "folder")  # fmt: skip
    if num_frames > 1 and paths and all(p.suffix.lower() in IMAGE_EXTS for p in paths):
        # each would be skipped as too short, ending in "none could be read"; a folder of a video's frames is one
        # video to eval_video, but here, as in the token cache the tokenizer trains on, an image is one frame
        raise ValueError(
            f"the {len(paths)} sources under {str(data)!r} are images, one frame each (as the token cache reads "
            f"them), too short for --num-frames {num_frames}: give --num-frames 1 to score them as images, or "
            "videos (a folder of one video's frames is scored by tools/eval_video.py recon)"
        )
    results = evaluate(
        tokenizer, paths, num_frames=num_frames, size=size, stride=stride, lpips=lpips,
        skip_unreadable=not data.is_file() or data.suffix.lower() in (".csv", ".jsonl"),  # one bad file of many
        on_video=_preview_writer(Path(previews), paths) if previews is not None else None,
    )  # fmt: skip
    if not results:
        raise ValueError(f"none of the {len(paths)} videos under {str(data)!r} could be read (see warnings)")
    done = {r["path"] for r in results}
    return {
        "tokenizer": str(tokenizer_dir),
        "data": str(data),
        "settings": {"num_frames": num_frames, "size": size, "stride": stride},
        "mean": summarize(results),
        "videos": results,
        "skipped": [str(p) for p in paths if str(p) not in done],
    }


@dataclass
class RoundTrip:
    """One video through a tokenizer and back (see :func:`roundtrip`).

    Attributes:
        ids_shape: the token grid (t, h, w).
        clip_shape: the clip (T, H, W).
        codebook_size: number of codes.
        psnr: dB; ssim: structural similarity of the reconstruction.
        written: the side-by-side mp4 and the PNG contact sheet.
    """

    ids_shape: tuple[int, ...]
    clip_shape: tuple[int, ...]
    codebook_size: int
    psnr: float
    ssim: float
    written: list[Path]


@torch.inference_mode()
def roundtrip(
    tokenizer_dir: str | os.PathLike,
    video: str | os.PathLike,
    out: str | os.PathLike,
    *,
    num_frames: int = 17,
    size: int = 128,
    start: int = 0,
) -> RoundTrip:
    """Tokenizes and detokenizes one clip; writes ``roundtrip.mp4`` (original | reconstruction) and ``roundtrip.png``.

    Args:
        tokenizer_dir: a folder written by ``VideoTokenizer.save_pretrained``.
        video: a video or image file.
        out: output folder.
        num_frames: frames of the clip, 1 + k*ct.
        size: square crop side, a multiple of cs.
        start: first frame of the clip.

    Raises:
        ValueError: a clip shape the tokenizer cannot take, or an unreadable or too-short video.
    """
    out = Path(out)
    check_dir_target(out, "--out")  # before the work: "[Errno 17] File exists" came after it
    source, target = Path(video).resolve(), out.resolve()
    if source.is_dir() and (target == source or source in target.parents):
        # an mp4 and png written into a folder of frames made it a folder that "holds a video": the frames were lost
        raise ValueError(f"--out {str(out)!r} lies inside the frame folder --video {str(video)!r}: give another")
    for name in ("roundtrip.mp4", "roundtrip.png"):  # --video out/roundtrip.mp4 was replaced by its own round trip
        check_file_target(out / name, "--out", {"--video": video})
    tok = VideoTokenizer.from_pretrained(tokenizer_dir)
    check_clip_shape(tok, num_frames, size)  # fail before decoding on unreachable sizes
    check_ssim_size(size)  # and before writing anything: SSIM is computed last
    frames = resize_center_crop(read_video(video, num_frames=num_frames, start=start), size)  # (T, H, W, 3)
    fps = _written_fps(video, len(frames))  # before the work: it failed after it, on a GIF without frame delays
    clip = frames_to_tensor(frames)[None]  # (1, 3, T, H, W)
    ids = tok.encode(clip)  # (1, t, h, w)
    recon = tok.decode(ids).clamp(-1, 1)  # (1, 3, T, H, W)
    rec_frames = tensor_to_frames(recon[0])
    write_video(out / "roundtrip.mp4", np.concatenate([frames, rec_frames], axis=2), fps)  # side by side in W
    write_contact_sheet(out / "roundtrip.png", [frames, rec_frames])
    return RoundTrip(
        ids_shape=tuple(ids.shape[1:]),
        clip_shape=tuple(clip.shape[2:]),
        codebook_size=tok.codebook_size,
        psnr=float(psnr(recon, clip)[0]),
        ssim=float(ssim(recon, clip)[0]),
        written=[out / "roundtrip.mp4", out / "roundtrip.png"],
    )


UNTIMED_FPS = 8.0  # the rate a round trip of frames without timing (a folder, a GIF without delays) is written at


def _written_fps(video: str | os.PathLike, num_frames: int) -> float:
    """The rate the round trip is written at: the file's own; 1 for a still; :data:`UNTIMED_FPS` for frames that
    carry no timing (a frame folder, a GIF without frame delays), which are valid input, taken frame for frame."""
    if num_frames == 1:
        return 1.0
    if Path(video).is_dir():
        return UNTIMED_FPS
    try:
        return video_fps(video)
    except ValueError:  # the frames decoded already: what is missing is the timing
        log.info("%s has no frame timing: written at %g fps", Path(video).name, UNTIMED_FPS)
        return UNTIMED_FPS
