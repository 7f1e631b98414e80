"""How a video file's stored frames are meant to be shown: the sample aspect ratio and the display rotation.

Players apply both; a reader that ignores them returns anamorphic video squeezed and a phone's portrait video on
its side. :mod:`core.video_io` reads frames as shown.
"""

from __future__ import annotations

import functools
import math
import os
import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class Display:
    """How a video file's stored frames are meant to be shown.

    Attributes:
        sar: sample aspect ratio, the width of a stored pixel over its height (not 1 on anamorphic DV or DVD
            sources).
        turns: quarter turns counter-clockwise (``np.rot90``'s ``k``, 0-3) from the display matrix, as phones
            store portrait video: landscape frames with a rotation to apply.
        flip: the turned frame is then mirrored left to right (a matrix that mirrors: QuickTime's "Flip
            Horizontal", some front cameras); see :func:`orientation`.
    """

    sar: float = 1.0
    turns: int = 0
    flip: bool = False


def video_display(path: str | os.PathLike) -> Display:
    """How ``path``'s first video stream is shown (square pixels and no rotation when unknown).

    Read with PyAV from the header and the first frame (decord exposes neither), once per file while it is
    unchanged: the token cache reads a file's clips in turns with other files', and opening a large file costs
    milliseconds.

    Raises:
        ValueError: PyAV cannot open the file at all (then decord, on an older FFmpeg, cannot either, and callers
            need not try it: its C++ logging would print to stderr past any error handling).
    """
    stat = os.stat(path)
    return _video_display(os.fspath(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)


def ffmpeg_path(path: str | os.PathLike) -> str:
    """``path`` as FFmpeg, PyAV and decord should be given it: absolute, so that a relative name with a colon
    ("take1:2.mp4") is not read as a protocol ("Protocol not found")."""
    return os.path.abspath(os.fspath(path))


@functools.lru_cache(maxsize=4096)
def _video_display(path: str, inode: int, mtime_ns: int, size: int) -> Display:
    del inode, mtime_ns, size  # the cache key: a changed file is read again
    import av  # only for video files

    try:
        container = av.open(ffmpeg_path(path))
    except av.FFmpegError as err:
        raise ValueError(f"cannot decode {path!r}: {err}") from None
    with container:
        if not container.streams.video:
            return Display()  # the readers report it
        stream = container.streams.video[0]
        sar = pixel_aspect(stream.sample_aspect_ratio)
        try:
            first = next(container.decode(stream), None)  # the display matrix comes with the frames
        except av.FFmpegError:
            first = None  # a damaged start: the readers report what they cannot decode
        turns, flip = orientation(first) if first is not None else (0, False)
    return Display(sar=sar, turns=turns, flip=flip)


# The display matrix's 2x2 part, by sign (a, b, c, d of ``[a b u; c d v; x y w]``), -> (quarter turns, mirror) that
# shows the stored frame as FFmpeg's autorotate does: checked against ffmpeg for every rotation x hflip x vflip that
# ffmpeg writes. PyAV's ``rotation`` alone read a mirrored matrix as a turn (hflip as -180) or as nothing (vflip).
_ORIENTATIONS: dict[tuple[int, int, int, int], tuple[int, bool]] = {
    (1, 0, 0, 1): (0, False), (1, 0, 0, -1): (2, True), (-1, 0, 0, 1): (0, True), (-1, 0, 0, -1): (2, False),
    (0, -1, 1, 0): (1, False), (0, 1, 1, 0): (3, True), (0, -1, -1, 0): (1, True), (0, 1, -1, 0): (3, False),
}  # fmt: skip


def orientation(frame: object) -> tuple[int, bool]:
    """(quarter turns counter-clockwise, then mirror left to right) that show a decoded PyAV frame as players do,
    from its display matrix; a matrix of another angle is turned to the nearest quarter, as before."""
    data = getattr(frame, "side_data", ())
    for entry in data:
        side = entry if hasattr(entry, "type") else data[entry]  # PyAV 18.1.1 iterates its keys, 18.1.0 its items
        if "DISPLAYMATRIX" in str(getattr(side, "type", "")).upper():
            m = struct.unpack("<9i", bytes(side))
            signs = tuple(int(v > 0) - int(v < 0) for v in (m[0], m[1], m[3], m[4]))
            if signs in _ORIENTATIONS:
                return _ORIENTATIONS[signs]
    return quarter_turns(getattr(frame, "rotation", 0)), False  # 0 from an older PyAV


def pixel_aspect(value: object) -> float:
    """A stream's sample aspect ratio as a float; 1.0 when it is unset, 0 or not a positive finite number (PyAV
    gives a Fraction or None, and from version 19 an AVRational that is 0/1 when unset)."""
    try:
        ratio = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return 1.0
    return ratio if math.isfinite(ratio) and ratio > 0 else 1.0


def quarter_turns(degrees: float) -> int:
    """Counter-clockwise ``degrees`` (PyAV's ``VideoFrame.rotation``) as quarter turns 0-3, to the nearest."""
    return round(degrees / 90) % 4
