"""Visual context for a pipeline call: an image to animate, or the frames of a video to continue.

Inputs are arrays or file paths. A video file is first brought to the model's frame rate (a 30 fps phone
video continued by an 8 fps model would otherwise show its motion at a quarter of its speed, and be
continued that way); arrays carry no rate and are taken frame for frame. Frames are resized so they cover
the model's frame size, keeping the aspect ratio, and center-cropped
(:func:`core.frames.resize_center_crop`, the same transform ``tools/cache_tokens.py`` applies to training
clips); files are read at that size, scaled inside the decoder as the token cache does, and only the frames a
continuation keeps are decoded (a file is counted from its index first).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
import statistics
from pathlib import Path

import numpy as np

from core.checks import is_int
from core.frames import resize_center_crop
from core.video_io import PIL_EXTS, VIDEO_EXTS, read_frames, read_video
from core.video_probe import (
    fps_from_durations,
    frame_count,
    image_durations,
    image_frames_at_most,
    starts_from_durations,
    video_fps,
    video_frame_starts,
)

log = logging.getLogger(__name__)
# The most frames a file may give at the model's rate (2.3 hours at 8 fps); a continuation reads only its last ones.
MAX_RESAMPLED_FRAMES = 65_536

FrameSource = np.ndarray | str | os.PathLike


def load_frames(
    source: FrameSource,
    what: str,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    last: int | None = None,
) -> np.ndarray:
    """(T, H, W, 3) uint8 frames from an array or a video / image file.

    Args:
        source: (H, W, 3) or (T, H, W, 3) uint8 array, or a path.
        what: "image" or "video", named in errors.
        fps: the model's frame rate: a video file (or animated GIF) at another rate is resampled to it (see
            :func:`frame_indices`). None, an array or a still image keeps every frame.
        size: (H, W) a file is read at, scaled to cover it and center-cropped by the decoder, so that a long or
            large video never holds its frames at full size (a minute of 1080p is 11 GB of them); None keeps
            the file's size. Arrays are returned as given.
        last: keep only the last ``last`` frames (after resampling); a file then decodes only those, so an
            upload of 10^5 frames costs the frames it gives, not its length. None keeps every frame.

    Raises:
        ValueError: an unreadable, empty or wrongly shaped input.
    """
    if last is not None and (not is_int(last) or last < 1):
        raise ValueError(f"last must be a positive integer or None, got {last!r}")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        keep = frame_indices(path, fps)
        keep = keep if last is None else keep[-last:]
        frames = read_kept(path, keep, size)
    elif isinstance(source, np.ndarray):
        frames = source[None] if source.ndim == 3 else source
        frames = frames if last is None or frames.ndim != 4 else frames[-last:]
    else:
        raise ValueError(f"{what} must be a uint8 array or a file path, got {type(source).__name__}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"{what} must be (H, W, 3) or (T, H, W, 3) uint8 RGB, got {frames.dtype} {frames.shape}")
    return frames


def read_kept(path: Path, keep: list[int], size: tuple[int, int] | None) -> np.ndarray:
    """The frames ``keep`` of a file (from :func:`frame_indices`) at ``size``; a file with none gives its reader's
    error, one line."""
    return read_frames(path, keep, size=size) if keep else read_video(path, size=size)


def frame_indices(path: str | os.PathLike, fps: float | None = None) -> list[int]:
    """The file's frames :func:`load_frames` takes, as indices, counted from the file's index without decoding:
    every frame, or at ``fps`` those :func:`resample_indices` keeps of a constant-rate video, or those
    :func:`resample_times` keeps at their own frame times of a variable-rate video or an animated image (GIF, WebP,
    APNG).

    Raises:
        ValueError: a path that does not exist or that no backend can open.
    """
    path = Path(path)
    durations = image_durations(path) if path.is_file() and path.suffix.lower() in PIL_EXTS else None
    n = frame_count(path) if durations is None else len(durations)  # one walk over an animated image's frames
    keep = list(range(n))
    if fps is not None and n > 1 and path.is_file():  # VIDEO_EXTS alone took an animated WebP or APNG frame by frame
        # an animated image's own times, or a video's timestamps (a variable-rate phone video: its average rate put
        # the context 0.8 s early and 1.6x too fast)
        starts = starts_from_durations(durations) if durations is not None else video_frame_starts(path)
        rate = None
        if starts is not None and len(starts) == n and durations is None and _steady(starts):
            rate = _steady_rate(starts)  # a constant-rate video: its one rate, ties as resample_indices takes them
        elif starts is not None and len(starts) == n:
            keep = resample_times(starts, fps)
            if keep != list(range(n)):
                log.info("%s: %d frames over %.3g s -> %d at %.3g fps", path.name, n, starts[-1] - starts[0],
                         len(keep), fps)  # fmt: skip
            return keep
        if rate is None:
            rate = video_fps(path) if durations is None else fps_from_durations(durations)
        if rate is None:  # an animated GIF without frame delays (browsers play those at their own rate)
            log.info("%s has no frame delays: its frames are taken one for one", path.name)
        else:
            keep = resample_indices(n, rate, fps)
            if keep != list(range(n)):
                log.info("%s: %d frames at %.3g fps -> %d at %.3g fps", path.name, n, rate, len(keep), fps)
    return keep


def probe_frames(source: FrameSource, what: str) -> None:
    """Fails fast, before any model loads, on a context file that cannot be read: a ValueError with one line.

    Reads a video file's header (its frame rate) and the first frame of anything else; the frames themselves are
    read later, at the model's size, by :func:`context_frames`. Arrays pass.
    """
    if not isinstance(source, (str, os.PathLike)):
        return
    path = Path(source)
    if path.is_file() and path.suffix.lower() in VIDEO_EXTS - PIL_EXTS and what == "video":
        video_fps(path)
    else:  # images and GIFs (a one-frame GIF, or one without delays, has no rate and is still a valid context)
        read_video(path, num_frames=1)
    if what == "image":  # an animated or multi-page file was refused only after the model had loaded
        check_one_frame(path)


def check_one_frame(path: Path) -> None:
    """ValueError unless the image file is one frame (counted without decoding: an animation's second frame is
    enough to refuse it)."""
    if path.is_file() and path.suffix.lower() in PIL_EXTS:
        if image_frames_at_most(path, 1) > 1:
            raise ValueError(f"image must be one frame, but {path.name!r} has several (an animation or a multi-page "
                             "file): give it as --video, or save one frame of it")  # fmt: skip
    elif (count := frame_count(path)) != 1:
        raise ValueError(f"image must be one frame, got {count}")


def resample_indices(num_frames: int, source_fps: float, target_fps: float) -> list[int]:
    """Indices of the frames of a ``num_frames`` clip at ``source_fps`` that show it at ``target_fps``.

    Time steps of ``1 / target_fps`` are counted back from the last frame, the one a continuation follows, and
    each takes the nearest source frame (so a slower source repeats frames), a tie the later one: one tie rule,
    so the cadence stays even (Python's ``round`` sends ties to the even index, which showed a frame of a 4 fps
    source three times at 8 fps and its neighbours once). Equal rates keep every frame.
    """
    if not (math.isfinite(source_fps) and source_fps > 0 and math.isfinite(target_fps) and target_fps > 0):
        raise ValueError(f"frame rates must be positive, got {source_fps} and {target_fps}")
    step = source_fps / target_fps  # source frames per target frame
    if abs(step - 1.0) < 1e-3:
        return list(range(num_frames))
    count = math.floor((num_frames - 1) / step + 1e-6) + 1  # target frames within the clip's span
    _check_resampled_count(count, (num_frames - 1) / source_fps, target_fps)
    return [math.floor(num_frames - 1 - k * step + 0.5) for k in reversed(range(count))]


def _check_resampled_count(count: int, span: float, target_fps: float) -> None:
    """ValueError when a file's frames span so long that they give more than :data:`MAX_RESAMPLED_FRAMES` at the
    model's rate: an 8-frame animated image of 632 bytes with 4.6-hour delays listed 940,867 indices, and 4,096 such
    frames would take minutes and gigabytes before anything was refused."""
    if count > MAX_RESAMPLED_FRAMES:
        raise ValueError(f"the frames span {span:.6g} s, {count} frames at {target_fps:g} fps, more than "
                         f"{MAX_RESAMPLED_FRAMES}: trim the video, or give it shorter frame delays")  # fmt: skip


def _steady(starts: list[float]) -> bool:
    """Whether frame times are a constant rate, give or take 10% of the median frame interval (timestamps rounded to
    a millisecond or stored in float32 jitter that much)."""
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    median = statistics.median(gaps)
    return all(abs(g - median) <= 0.1 * median for g in gaps)


def _steady_rate(starts: list[float]) -> float:
    """The rate of constant-rate frame times: the least-squares slope (millisecond rounding averages out), then the
    simplest fraction within 0.05% of it (30, 12, or 29.97 as 30000/1001 and the like), so that the half-frame ties of
    a 12 fps video at 8 fps stay exact ties. A container's declared rate can be another than its times."""
    n = len(starts)
    mean_i, mean_t = (n - 1) / 2, sum(starts) / n
    slope = sum((i - mean_i) * (t - mean_t) for i, t in enumerate(starts)) / sum((i - mean_i) ** 2 for i in range(n))
    rate = 1.0 / slope
    for denominator in range(1, 1002):
        snapped = round(rate * denominator) / denominator
        if abs(snapped - rate) <= 5e-4 * rate:
            return snapped
    return rate


def resample_times(starts: list[float], target_fps: float) -> list[int]:
    """Indices of the frames starting at ``starts`` (seconds, increasing) that show them at ``target_fps``: time
    steps of ``1 / target_fps`` counted back from the last frame's start, each taking the frame that starts nearest,
    a tie the later one. At a constant rate this is :func:`resample_indices`; with uneven delays (a GIF's title card
    or pause, a variable-rate video) the frames follow their own times, where one average rate spread them evenly and
    so continued the motion before the end at the wrong speed. Nearest start, not the frame on screen: after a long
    pause the next frame is taken from half a step before it starts."""
    if not (math.isfinite(target_fps) and target_fps > 0):
        raise ValueError(f"frame rates must be positive, got {target_fps}")
    # Times closer than 1% of a frame count as equal: decord gives timestamps in float32 (1/30 s is 5e-8 off), and a
    # tie read as no tie picked the earlier frame at half the steps of a 12 fps video (a stutter, steps 1, 2, 2, 1).
    tol = 0.01 * statistics.median(b - a for a, b in itertools.pairwise(starts)) if len(starts) > 1 else 1e-9
    step, last, keep = 1.0 / target_fps, starts[-1], []
    _check_resampled_count(math.floor((last - starts[0] + tol) / step) + 1, last - starts[0], target_fps)
    for k in itertools.count():
        t = last - k * step
        if t < starts[0] - tol:
            break
        i = min(bisect.bisect_left(starts, t - tol), len(starts) - 1)  # the first frame starting at or after t
        keep.append(i if i == 0 or starts[i] - t <= t - starts[i - 1] + tol else i - 1)
    return keep[::-1]


def check_context_count(has_image: bool, has_video: bool, num_context: int | None, ct: int) -> None:
    """The checks of :func:`context_frames` that need no file: one source at most, ``num_context`` with a video
    only (an image is one frame), and 1 + k*``ct`` frames, which the tokenizer encodes as a clip of their own.

    Raises:
        ValueError: one line saying which.
    """
    if has_image and has_video:
        raise ValueError("give an image or a video to continue, not both")
    if not has_video:
        if has_image and num_context not in (None, 1):
            raise ValueError("an image is one context frame: leave context_frames unset")
        if not has_image and num_context is not None:
            raise ValueError("context_frames needs a video to take them from")
        return
    if num_context is None:
        raise ValueError(f"continuing a video needs context_frames (1 + k*{ct} frames, e.g. {1 + ct})")
    if not is_int(num_context):
        raise ValueError(f"context_frames must be an integer, got {num_context!r}")
    if num_context < 1 or (num_context - 1) % ct:
        raise ValueError(
            f"context_frames={num_context} cannot be encoded on its own: the tokenizer needs 1 + k*{ct} frames "
            f"(e.g. 1, {1 + ct}, {1 + 2 * ct})"
        )


def context_frames(
    image: FrameSource | list[FrameSource] | None,
    video: FrameSource | list[FrameSource] | None,
    num_context: int | None,
    *,
    temporal_compression: int,
    size: tuple[int, int],
    fps: float | None = None,
) -> np.ndarray | None:
    """The frames a generation continues from, at the model's size; None without visual context.

    Args:
        image: an image to animate (one context frame), a list of one per video, or None.
        video: a video whose last ``num_context`` frames are continued, a list of one per video, or None.
        num_context: context frames taken from each video: 1 + k * ``temporal_compression``.
        temporal_compression: the tokenizer's ct.
        size: the model's (H, W).
        fps: the model's frame rate, for video files (see :func:`load_frames`).

    Returns:
        (R, N, H, W, 3) uint8 with R = 1, or R = the length of the list given; or None.

    Raises:
        ValueError: both or neither source with ``num_context``, an N the tokenizer cannot encode
            alone, or a video shorter than N.
    """
    check_context_count(image is not None, video is not None, num_context, temporal_compression)
    source = image if image is not None else video
    if source is None:
        return None
    rows = source if isinstance(source, list) else [source]
    if not rows:
        raise ValueError("the list of context images or videos is empty")
    kw = dict(size=size, fps=fps)
    return np.stack([_one_context(r if image is not None else None, r if video is not None else None,
                                  num_context, **kw) for r in rows])  # fmt: skip


def _one_context(
    image: FrameSource | None,
    video: FrameSource | None,
    num_context: int | None,
    *,
    size: tuple[int, int],
    fps: float | None,
) -> np.ndarray:
    """(N, H, W, 3) context frames of one image or video (see :func:`context_frames`, which checked the count)."""
    if image is not None:
        if isinstance(image, (str, os.PathLike)):
            check_one_frame(Path(image))  # before decoding them
        frames = load_frames(image, "image", size=size)
        if frames.shape[0] != 1:
            raise ValueError(f"image must be one frame, got {frames.shape[0]}")
        return resize_center_crop(frames, size)  # (1, H, W, 3)
    frames = load_frames(video, "video", fps, size, last=num_context)  # decodes only the frames it keeps
    if frames.shape[0] < num_context:
        rate = "" if fps is None or not isinstance(video, (str, os.PathLike)) else f" at the model's {fps:g} fps"
        raise ValueError(f"the video gives {frames.shape[0]} frames{rate}, fewer than context_frames={num_context}")
    return resize_center_crop(frames[-num_context:], size)  # (N, H, W, 3)
