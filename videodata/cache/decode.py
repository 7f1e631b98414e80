"""Cutting clips from one source: the clip window, and the decode step that a decode worker runs.

:func:`decode_source` probes the frame count, plans the clip starts, reads every clip of one source in one decoding
pass at the target size, and raises :class:`~videodata.cache.sources.SourceError` with a short reason
(``missing``, ``empty``, ``too_short``, ``undecodable``) for a bad file. An image is a 1-frame clip: it is cached
when ``num_frames == 1`` and quarantined as ``too_short`` otherwise.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.video_io import read_frames
from core.video_probe import frame_count, video_fps
from videodata.cache.sources import SourceError


@dataclass(frozen=True, kw_only=True)
class ClipWindow:
    """How clips are cut from a source: frames per clip, frame rate, crop size and start frames.

    Not to be confused with :class:`videodata.shapes.render.ClipSpec` (one rendered shapes clip).
    Cache files record a window under the key ``clip_spec`` (see :meth:`to_dict`).

    Attributes:
        num_frames: frames per clip (1 + k*ct for the tokenizer).
        size: short side resized to ``size``, then center-cropped to ``size`` x ``size``.
        stride: step between clip frames in source frames (used when ``fps`` is None).
        fps: target frame rate; the per-source stride is ``max(1, round(source_fps / fps))``.
        clips_per_video: clips wanted per source.
        start_offsets: explicit start frames (one clip each), or None to spread
            ``clips_per_video`` starts evenly from the first frame to the last possible one.
    """

    num_frames: int = 17
    size: int = 128
    stride: int = 1
    fps: float | None = None
    clips_per_video: int = 1
    start_offsets: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("num_frames", "size", "stride", "clips_per_video"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.fps is not None and not (self.fps > 0 and np.isfinite(self.fps)):
            raise ValueError(f"fps must be a positive number, got {self.fps}")
        offsets = self.start_offsets
        if offsets is not None and (
            len(offsets) != self.clips_per_video or min(offsets) < 0 or len(set(offsets)) != len(offsets)
        ):
            raise ValueError(f"start_offsets {list(offsets)} must be {self.clips_per_video} distinct frames >= 0")

    @classmethod
    def from_options(
        cls,
        *,
        num_frames: int,
        size: int,
        stride: int | None = None,
        fps: float | None = None,
        clips_per_video: int | None = None,
        start_offsets: Sequence[int] | None = None,
    ) -> ClipWindow:
        """A window from command-line style options, where unset ones take their defaults.

        Args:
            num_frames, size: frames per clip and crop size (both >= 1).
            stride: step between frames (default 1); excludes ``fps``.
            fps: target frame rate; the stride is derived per source.
            clips_per_video: clips per source (default 1, or ``len(start_offsets)``).
            start_offsets: explicit start frames, distinct and >= 0; they fix the number of clips.

        Raises:
            ValueError: a value out of range, both ``stride`` and ``fps``, or ``clips_per_video``
                disagreeing with ``start_offsets``.
        """
        if stride is not None and fps is not None:
            raise ValueError("stride and fps exclude each other: give one")
        offsets = tuple(start_offsets) if start_offsets is not None else None
        if offsets is not None and clips_per_video not in (None, len(offsets)):
            raise ValueError(f"clips_per_video {clips_per_video} disagrees with {len(offsets)} start offsets")
        clips = len(offsets) if offsets is not None else (clips_per_video if clips_per_video is not None else 1)
        return cls(
            num_frames=num_frames, size=size, stride=1 if stride is None else stride, fps=fps,
            clips_per_video=clips, start_offsets=offsets,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; ``start_offsets`` is a list, or ``"even"`` when None."""
        d = asdict(self)
        d["start_offsets"] = list(self.start_offsets) if self.start_offsets is not None else "even"
        return d


@dataclass(frozen=True, kw_only=True)
class DecodeTask:
    """Work for a decode worker: one source, and the first clip index still wanted."""

    index: int
    file: str
    window: ClipWindow
    min_clip: int = 0


@dataclass(frozen=True, kw_only=True)
class DecodedSource:
    """Clips of one source. ``frames``: (n, T, size, size, 3) uint8; lists have n items.

    ``num_planned`` counts every clip the source gives (including those below ``min_clip``)
    and ``last_clip`` is the index of its last one.
    """

    index: int
    frames: np.ndarray
    clips: list[int]
    starts: list[int]
    stride: int
    num_planned: int
    last_clip: int


def worker_init() -> None:
    """Decode workers: one torch thread each, and Ctrl-C is left to the parent."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def count_frames(path: Path) -> int:
    """Number of frames in a video, GIF, image or folder of image frames, from headers (no full decode).

    Raises:
        SourceError: ``missing`` for a path that does not exist, ``undecodable`` when no backend can open the
            file (:func:`core.video_probe.frame_count`'s reasons).
    """
    if not path.exists():
        raise SourceError("missing", f"{str(path)!r} does not exist")
    try:
        return frame_count(path)
    except ValueError as err:
        raise SourceError("undecodable", str(err).removeprefix(f"cannot decode {str(path)!r}: ")) from None


def plan_starts(total: int, window: ClipWindow, stride: int) -> list[tuple[int, int]]:
    """(clip index, start frame) of every clip that fits in ``total`` frames.

    Even spreading puts clip k at ``round(k * (total - span) / (n - 1))``; starts that repeat
    an earlier one (a video too short for n distinct clips) are dropped, so no clip is cached
    twice. Explicit offsets that do not fit are dropped.
    """
    span = (window.num_frames - 1) * stride + 1
    if total < span:
        return []
    if window.start_offsets is not None:
        return [(k, s) for k, s in enumerate(window.start_offsets) if s + span <= total]
    n, last = window.clips_per_video, total - span
    planned, seen = [], set()
    for k in range(n):
        start = round(k * last / (n - 1)) if n > 1 else 0
        if start not in seen:
            seen.add(start)
            planned.append((k, start))
    return planned


def _source_stride(path: Path, window: ClipWindow, total: int) -> int:
    if window.fps is None or total == 1:
        return window.stride
    if path.is_dir():
        raise SourceError("undecodable", "a folder of frames has no frame rate: cache it with a frame stride, not fps")
    try:
        native = video_fps(path)
    except ValueError as err:
        raise SourceError("undecodable", f"frame rate: {err}") from None
    return max(1, round(native / window.fps))


def decode_source(task: DecodeTask) -> DecodedSource:
    """Reads, resizes and center-crops every planned clip of one source (runs in a worker).

    Returns:
        The clips with index >= ``task.min_clip``: frames (n, T, size, size, 3) uint8.

    Raises:
        SourceError: the file is missing, empty, too short, or cannot be decoded.
    """
    path, window = Path(task.file), task.window
    if not path.exists():
        raise SourceError("missing", f"{str(path)!r} does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise SourceError("empty", f"{str(path)!r} is 0 bytes")
    total = count_frames(path)
    if total == 0:
        what = "a folder without image frames" if path.is_dir() else "a file without frames"
        raise SourceError("empty", f"{str(path)!r} is {what}")
    stride = _source_stride(path, window, total)
    planned = plan_starts(total, window, stride)
    if not planned:
        span = (window.num_frames - 1) * stride + 1
        need = f"{window.num_frames} frames at stride {stride} need {span}"
        if window.start_offsets is not None:  # the earliest offset needs the fewest frames
            need += f", from start offset {min(window.start_offsets)}: {min(window.start_offsets) + span}"
        raise SourceError("too_short", f"has {total} frame(s); {need}")
    wanted = [(k, s) for k, s in planned if k >= task.min_clip]
    clips = np.zeros((0, window.num_frames, window.size, window.size, 3), np.uint8)
    if wanted:
        # One decoding pass for all clips of the source: read_frames decodes (and scales in the decoder)
        # each frame once, however many overlapping clips share it.
        offsets = np.arange(window.num_frames) * stride  # (T,)
        frame_ids = np.array([s for _, s in wanted])[:, None] + offsets  # (n, T)
        try:
            frames = read_frames(path, frame_ids.ravel().tolist(), size=window.size)  # (n * T, size, size, 3)
        except ValueError as err:
            kind = "too_short" if "too short" in str(err) else "undecodable"
            raise SourceError(kind, str(err)) from None
        clips = frames.reshape(*frame_ids.shape, *frames.shape[1:])  # (n, T, size, size, 3)
    return DecodedSource(
        index=task.index,
        frames=clips,  # (n, T, size, size, 3)
        clips=[k for k, _ in wanted],
        starts=[s for _, s in wanted],
        stride=stride,
        num_planned=len(planned),
        last_clip=planned[-1][0],
    )
