"""Clips for a tokenizer: the shape check, and in-memory clip sampling for tokenizer training.

:func:`check_clip_shape` tells whether a tokenizer accepts clips of a given length and size.
:class:`ClipPool` holds a dataset of videos and/or images in memory. Every file is decoded once
(decord, with fallbacks in :mod:`core.video_io`), resized so its short side equals ``size``, and
kept as uint8. Batches are random windows of ``num_frames``
frames with random ``size``x``size`` crops; a fraction of batches are single frames, so the
tokenizer learns images (1-frame videos) and videos in one token space.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from core.frames import resize_center_crop
from core.video_io import read_video
from videodata.cache.decode import count_frames
from videodata.cache.sources import discover_sources

if TYPE_CHECKING:
    from tokenizer import VideoTokenizer

log = logging.getLogger(__name__)


MAX_FRAME_SIDE = 4096  # px: a 17-frame clip at 4096x4096 is 3.4 GB of float32 before the model sees it


def check_clip_shape(tokenizer: VideoTokenizer, num_frames: int, size: int | tuple[int, int]) -> None:
    """Checks that the tokenizer accepts clips of ``num_frames`` frames of ``size`` pixels.

    Args:
        tokenizer: anything with ``config.temporal_compression`` (ct) and
            ``config.spatial_compression`` (cs).
        num_frames: T, which must be ``1 + k * ct``.
        size: H = W, or (H, W); each a positive multiple of cs.

    Raises:
        ValueError: naming the offending ``--num-frames`` or ``--size`` and a value that works.
    """
    ct, cs = tokenizer.config.temporal_compression, tokenizer.config.spatial_compression
    if num_frames < 1 or (num_frames - 1) % ct:
        lo = 1 + max(0, (num_frames - 1) // ct) * ct
        raise ValueError(
            f"--num-frames {num_frames} is not of the form 1 + k*{ct} for this tokenizer; use e.g. {lo} or {lo + ct}"
        )
    h, w = (size, size) if isinstance(size, int) else size
    if h < cs or w < cs or h % cs or w % cs:
        raise ValueError(f"--size {h}x{w} must be a positive multiple of the spatial compression {cs}")
    if max(h, w) > MAX_FRAME_SIDE:  # --size 100000 asked numpy for 475 GiB, or quarantined every clip of a cache
        raise ValueError(f"--size {h}x{w} is larger than {MAX_FRAME_SIDE} px a side")


@dataclass(frozen=True, kw_only=True)
class ClipDataConfig:
    """Where clips come from and what they look like.

    Attributes:
        paths: folders (scanned recursively), media files and/or ``.csv`` / ``.jsonl`` manifests
            (a ``path`` column, relative to the manifest's folder or absolute).
        num_frames: frames per training clip (1 + k*ct).
        size: square crop size in pixels.
        stride: take every ``stride``-th frame.
        image_ratio: fraction of batches made of single frames (joint image-video training).
        max_frames_per_video: decode at most this many frames of each file (memory bound).
    """

    paths: tuple[str, ...] = ()
    num_frames: int = 17
    size: int = 64
    stride: int = 1
    image_ratio: float = 0.0
    max_frames_per_video: int = 300

    def __post_init__(self) -> None:
        if isinstance(self.paths, (str, os.PathLike)):  # a string was read letter by letter: "/" first, scanned whole
            raise ValueError(f"data.paths must be a list of paths, got the single {type(self.paths).__name__} "
                             f"{str(self.paths)!r}: write [{str(self.paths)!r}]")  # fmt: skip
        if self.size > MAX_FRAME_SIDE:  # ClipPool asked for a 100000x100000 frame (30 GB) per file
            raise ValueError(f"data.size {self.size} is larger than {MAX_FRAME_SIDE} px a side")
        counts = {"num_frames": self.num_frames, "size": self.size, "stride": self.stride,
                  "max_frames_per_video": self.max_frames_per_video}  # fmt: skip
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"data.{name} must be >= 1, got {value}")
        if not 0.0 <= self.image_ratio <= 1.0:  # NaN fails too
            raise ValueError(f"data.image_ratio must be in [0, 1], got {self.image_ratio}")
        if self.image_ratio < 1.0 and self.max_frames_per_video < self.num_frames:  # else "no video is long enough"
            raise ValueError(
                f"data.max_frames_per_video={self.max_frames_per_video} keeps fewer frames than the "
                f"data.num_frames={self.num_frames} of a training clip"
            )


class ClipPool:
    """All decoded media of a dataset, sampled into (B, 3, T, size, size) batches in [-1, 1]."""

    def __init__(self, cfg: ClipDataConfig) -> None:
        files: list[Path] = []
        for p in cfg.paths:  # a folder, a media file or a manifest: the token cache's source rules
            root, sources = discover_sources(p)
            files.extend(root / s.path for s in sources)
        if not files:
            raise ValueError(f"no data paths given (paths={list(cfg.paths)})")
        self.cfg = cfg
        self.videos: list[np.ndarray] = []  # each (T, H, W, 3) uint8, short side = size
        self.skipped: list[tuple[str, str]] = []
        for f in files:
            try:
                frames = _resize_short_side(read_capped(f, cfg.max_frames_per_video, cfg.stride), cfg.size)
            except ValueError as err:
                self.skipped.append((str(f), str(err)))
                log.warning("skipping %s: %s", f, err)
                continue
            self.videos.append(frames)
        self.clip_videos = [i for i, v in enumerate(self.videos) if len(v) >= cfg.num_frames]
        if not self.videos:
            raise ValueError(f"none of the {len(files)} media files could be decoded")
        if not self.clip_videos and cfg.image_ratio < 1.0:
            span = 1 + (cfg.num_frames - 1) * cfg.stride  # source frames of one clip
            raise ValueError(
                f"no video gives the {cfg.num_frames} frames a training clip needs at stride {cfg.stride} ({span} "
                f"source frames); the longest gives {max(len(v) for v in self.videos)}"
            )
        counts = len(self.videos), len(self.clip_videos), len(self.skipped)
        log.info("clip pool: %d files (%d long enough for clips), %d skipped", *counts)

    def sample(self, batch_size: int, generator: torch.Generator, images: bool | None = None) -> torch.Tensor:
        """A random batch: (B, 3, T, size, size) float in [-1, 1], T = 1 for image batches.

        Args:
            batch_size: clips in the batch.
            generator: drives every random choice.
            images: force an image (True) or clip (False) batch; None draws it from
                ``generator`` with probability ``image_ratio``. Data-parallel trainers decide it
                once per step for all ranks, so every rank runs the same kind of batch.
        """
        cfg = self.cfg
        if images is None:
            images = cfg.image_ratio > 0 and torch.rand((), generator=generator).item() < cfg.image_ratio
        T = 1 if images else cfg.num_frames
        pool = range(len(self.videos)) if images else self.clip_videos
        if not pool:
            raise ValueError(f"no video has the {cfg.num_frames} frames a clip batch needs (only images can be drawn)")
        clips = []
        for _ in range(batch_size):
            v = self.videos[pool[int(torch.randint(len(pool), (), generator=generator))]]
            t0 = int(torch.randint(len(v) - T + 1, (), generator=generator))
            y0 = int(torch.randint(v.shape[1] - cfg.size + 1, (), generator=generator))
            x0 = int(torch.randint(v.shape[2] - cfg.size + 1, (), generator=generator))
            clips.append(torch.from_numpy(v[t0 : t0 + T, y0 : y0 + cfg.size, x0 : x0 + cfg.size]))
        batch = torch.stack(clips)  # (B, T, H, W, C) uint8
        return batch.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)  # (B, C, T, H, W)


def read_capped(path: Path, max_frames: int, stride: int) -> np.ndarray:
    """Every ``stride``-th frame of a file, at most ``max_frames`` of them, decoding no more than that.

    Reading the whole file and slicing held every frame at full size first (a 720p clip of 132 frames
    took 730 MB for 2 kept). The frame count comes from the file's headers; when they overstate it, the
    file is read to its end instead.
    """
    total = count_frames(path)
    take = min(max_frames, (total - 1) // stride + 1) if total > 0 else max_frames
    try:
        return read_video(path, num_frames=take, stride=stride)
    except ValueError:  # headers that count more frames than decode
        return read_video(path, num_frames=None, stride=stride)[:max_frames]


def _resize_short_side(frames: np.ndarray, size: int) -> np.ndarray:
    """Resizes (T, H, W, 3) so min(H, W) == size, keeping the aspect ratio (no crop)."""
    H, W = frames.shape[1:3]
    scale = size / min(H, W)
    h, w = max(size, round(H * scale)), max(size, round(W * scale))
    if (h, w) == (H, W):
        return frames
    return resize_center_crop(frames, (h, w))
