"""What a video file holds, read from its headers and index without decoding its frames: frame count and rate.

Reading frames is :mod:`core.video_io`; this module answers the questions asked before a read, such as which
frames are the last ones of an upload that may hold 10^5 of them.
"""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path

from PIL import Image, ImageSequence

from core.pil_frames import is_still
from core.video_display import ffmpeg_path
from core.video_io import (
    PIL_DECODE_ERRORS,
    PIL_EXTS,
    PYAV_ONLY_EXTS,
    decord,
    decord_reader,
    decord_reason,
    frame_files,
)


def frame_count(path: str | os.PathLike) -> int:
    """Number of frames in a video, GIF, image or folder of image frames, without decoding them.

    Videos: decord's index (the same reader :func:`core.video_io.read_frames` then reuses), else PyAV's header
    count or, without one, its count of non-empty packets. GIFs and images: Pillow's frame count. A folder of
    frames: its image files.

    Raises:
        ValueError: the path does not exist, or no backend can open it (each backend's reason in one line).
    """
    path = Path(path)
    if path.is_dir():  # a folder of frames: one video (see core.video_io.read_video)
        return len(frame_files(path))
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes)")
    if path.suffix.lower() in PIL_EXTS:
        return len(image_durations(path))
    reasons = []
    if decord is not None:
        try:
            return len(decord_reader(path))
        except (RuntimeError, decord.DECORDError, UnicodeError) as err:  # a name that is not UTF-8: PyAV takes it
            reasons.append("decord: " + decord_reason(err))
    import av

    try:
        with av.open(ffmpeg_path(path)) as container:
            if not container.streams.video:
                raise ValueError(f"cannot decode {str(path)!r}: PyAV: the file has no video stream")
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as err:
        reasons.append(f"PyAV: {err}")
    raise ValueError(f"cannot decode {str(path)!r}: " + "; ".join(reasons))


def video_fps(path: str | os.PathLike) -> float:
    """Average frame rate of a video or animated GIF.

    Raises:
        ValueError: the file is missing, cannot be decoded, or is a still image.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} does not exist or is empty")
    if path.suffix.lower() in PIL_EXTS:
        rate = fps_from_durations(image_durations(path))
        if rate is None:
            raise ValueError(f"{str(path)!r} is a still image and has no frame rate")
        return rate
    if decord is not None:
        try:
            return float(decord_reader(path).get_avg_fps())
        except (RuntimeError, decord.DECORDError, UnicodeError):
            pass
    import av

    try:
        with av.open(ffmpeg_path(path)) as container:
            if container.streams.video:
                rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
                if rate:
                    return float(rate)
    except av.FFmpegError as err:
        raise ValueError(f"cannot decode {str(path)!r}: {err}") from None
    raise ValueError(f"{str(path)!r} has no video stream with a frame rate")


def frame_starts(path: str | os.PathLike) -> list[float] | None:
    """When each frame starts, in seconds, without decoding: an animated image's (GIF, WebP, APNG) from its frame
    delays, a video file's from its presentation timestamps (:func:`video_frame_starts`). A GIF's frames may each last
    a different time (a title card, a pause), and a phone's video is often recorded at a variable rate; one average
    rate misplaces their frames. None for stills, folders, and files whose times are missing or not increasing.

    Raises:
        ValueError: the file cannot be decoded.
    """
    path = Path(path)
    if path.suffix.lower() in PIL_EXTS:
        return starts_from_durations(image_durations(path))
    return video_frame_starts(path) if path.is_file() else None


def video_frame_starts(path: str | os.PathLike) -> list[float] | None:
    """A video file's frame start times in seconds, in display order, from its index (decord's, as reads use; PyAV's
    packet timestamps for files decord does not read): no frame is decoded. None when a frame has no timestamp or two
    frames share one (then the average rate is all there is)."""
    path = Path(path)
    starts = None
    if decord is not None and path.suffix.lower() not in PYAV_ONLY_EXTS:
        try:
            reader = decord_reader(path)
            starts = reader.get_frame_timestamp(range(len(reader)))[:, 0].tolist()
        except (RuntimeError, decord.DECORDError, UnicodeError):
            starts = None
    if starts is None:
        import av

        try:
            with av.open(ffmpeg_path(path)) as container:
                if not container.streams.video:
                    return None
                stream = container.streams.video[0]
                pts = [packet.pts for packet in container.demux(stream) if packet.size]
                if not pts or any(p is None for p in pts) or stream.time_base is None:
                    return None
                starts = sorted(float(p * stream.time_base) for p in pts)
        except av.FFmpegError:
            return None
    if len(starts) < 2 or any(b <= a for a, b in itertools.pairwise(starts)):
        return None
    return starts


def starts_from_durations(durations: list[int]) -> list[float] | None:
    """Frame start times in seconds from an animated image's frame delays in ms (see :func:`frame_starts`)."""
    if len(durations) < 2 or any(d <= 0 for d in durations[:-1]):
        return None
    return [total / 1000.0 for total in itertools.accumulate(durations[:-1], initial=0)]


def fps_from_durations(durations: list[int]) -> float | None:
    """An animated image's average frame rate from its frame delays in ms; None for a still or one without delays."""
    if len(durations) < 2 or sum(durations) <= 0:
        return None
    return 1000.0 * len(durations) / sum(durations)


def image_frames_at_most(path: str | os.PathLike, limit: int) -> int:
    """The frames of an image file (GIF, WebP, APNG, a still), counted by seeking at most ``limit + 1`` of them: a
    result over ``limit`` means "more". Counting every frame of a 1 MB GIF of 10^5 tiny frames takes seconds per
    walk; this bound is what a server checks first.

    Raises:
        ValueError: the file cannot be decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                count = 1
                while count <= limit and not is_still(im):
                    try:
                        im.seek(count)
                    except EOFError:
                        break
                    count += 1
                return count
    except PIL_DECODE_ERRORS as err:
        raise ValueError(f"cannot decode {str(path)!r}: Pillow: {err or type(err).__name__}") from None


def _frame_duration(frame: Image.Image) -> int:
    """One animated frame's display time in ms, 0 where none is given. WebP sets it when the frame is decoded, not
    when it is sought (an animated WebP was read as having no delays, its frames taken one for one at any rate)."""
    if frame.info.get("duration") is None:
        frame.load()
    return frame.info.get("duration") or 0


def image_durations(path: str | os.PathLike) -> list[int]:
    """Each frame's display time in ms (0 where the file gives none) of an image or GIF Pillow opens, one walk over
    its frames: its frame count, start times and rate all follow from it (:func:`starts_from_durations`,
    :func:`fps_from_durations`), so a caller that needs several walks the frames once.

    Raises:
        ValueError: the file cannot be decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, as core.video_io refuses it
            with Image.open(path) as im:
                if getattr(im, "n_frames", 1) < 2 or is_still(im):  # a still: nothing to decode for its timing
                    return [im.info.get("duration") or 0]
                return [_frame_duration(f) for f in ImageSequence.Iterator(im)]
    except PIL_DECODE_ERRORS as err:
        raise ValueError(f"cannot decode {str(path)!r}: Pillow: {err or type(err).__name__}") from None


def image_canvas(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file's canvas, from its header: an animated image composes every frame on it, so a
    walk over its frames costs about frames x width x height whatever the frames' own sizes.

    Raises:
        ValueError: the file cannot be decoded, or its canvas is past Pillow's decompression-bomb limit.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except PIL_DECODE_ERRORS as err:
        raise ValueError(f"cannot decode {str(path)!r}: Pillow: {err or type(err).__name__}") from None


def video_pixels_to_decode(path: str | os.PathLike, index: int) -> int:
    """Pixels a decoder produces to reach frame ``index`` of a video: every frame from the keyframe at or before it,
    times the frame size, read from the headers and index alone (decord's keyframes, else PyAV's keyframe packets in
    decode order). A 0.7 MB mp4 of 20,000 near-still 1080p frames after one keyframe costs 4 * 10^10 to reach its
    last frame: 35 s here.

    Raises:
        ValueError: the file cannot be opened or has no video stream.
    """
    import av

    path = Path(path)
    keys = None
    if decord is not None and path.suffix.lower() not in PYAV_ONLY_EXTS:
        try:
            keys = [int(k) for k in decord_reader(path).get_key_indices()]
        except (RuntimeError, decord.DECORDError, UnicodeError):
            keys = None
    try:
        with av.open(ffmpeg_path(path)) as container:
            if not container.streams.video:
                raise ValueError(f"cannot decode {str(path)!r}: PyAV: the file has no video stream")
            stream = container.streams.video[0]
            size = stream.codec_context.width * stream.codec_context.height
            if keys is None:
                packets = (packet for packet in container.demux(stream) if packet.size)
                keys = [i for i, packet in enumerate(packets) if packet.is_keyframe]
    except av.FFmpegError as err:
        raise ValueError(f"cannot decode {str(path)!r}: PyAV: {err}") from None
    start = max((k for k in keys if k <= index), default=0)
    return (index - start + 1) * size
