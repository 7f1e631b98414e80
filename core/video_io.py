"""Reading and resizing video clips as uint8 (T, H, W, 3) arrays (writing: :mod:`core.video_write`).

With :mod:`core.video_write` this is the only place tokvid touches video files. Readers return RGB
uint8 frames; models see float (3, T, H, W) tensors in [-1, 1] made by :func:`core.frames.frames_to_tensor`.

Decoding tries decord first (fast random access) and falls back to PyAV when decord is
missing or fails. Images and GIFs (and other formats Pillow reads, such as animated WebP)
are read with Pillow; a still image is a 1-frame clip. With a target ``size`` the video
decoders scale inside the decoder, so full-size frames never reach numpy. Video frames come back as
they are shown (:mod:`core.video_display`): an anamorphic file (sample aspect ratio not 1, as on DV or
DVD sources) is stretched to its display width by the decoder, and a rotated one (a phone's portrait
video) is turned upright.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from core.checks import first_line, is_int
from core.frames import cover_size, decoded_size, resize_center_crop
from core.pil_frames import PIL_DECODE_ERRORS, FrameRefused, exif_turn, is_still, shrunk_rgb
from core.video_display import ffmpeg_path, orientation, pixel_aspect, video_display

try:  # decord has no wheels for some platforms; PyAV covers those.
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg's messages; errors are raised and reported by us
except ImportError:  # pragma: no cover - depends on the platform
    decord = None

log = logging.getLogger(__name__)

VIDEO_EXTS: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".gif"})
IMAGE_EXTS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
MEDIA_EXTS: frozenset[str] = VIDEO_EXTS | IMAGE_EXTS
# Formats read with Pillow rather than a video decoder.
PIL_EXTS: frozenset[str] = IMAGE_EXTS | {".gif"}


class _DecodeError(Exception):
    """A backend could not decode the file; the next backend may still succeed."""


def list_media(root: str | os.PathLike, exts: Iterable[str] | None = None) -> list[Path]:
    """Lists media files under ``root``, recursively, in sorted order: tokvid's one media lister.

    Args:
        root: a folder, or a single media file (returned as a one-item list).
        exts: the suffixes to keep, lower-case with the dot (e.g. ``VIDEO_EXTS``); default
            ``VIDEO_EXTS | IMAGE_EXTS``.

    Returns:
        Paths whose lower-cased suffix is in ``exts``, sorted by their path relative to
        ``root`` so the order is the same on every machine. Hidden files and folders (names
        starting with ".", e.g. temps of an unfinished write) are skipped; linked folders are followed, each
        folder once.

    Raises:
        ValueError: ``root`` does not exist, or is a file whose suffix is not in ``exts``.
    """
    root = Path(root)
    exts = MEDIA_EXTS if exts is None else frozenset(exts)
    if root.is_file():
        if root.suffix.lower() not in exts:
            raise ValueError(f"{str(root)!r} is not a media file of a known type (known: {sorted(exts)})")
        return [root]
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} does not exist")
    found, walked = [], set()  # walked: (device, inode) of each folder, as a linked folder can lead back up
    for folder, dirs, files in os.walk(root, followlinks=True):  # rglob("*") never entered a linked folder
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in walked:
            dirs[:] = []
            continue
        walked.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder, f) for f in files if not f.startswith(".") and Path(f).suffix.lower() in exts]
    return [root / r for r in sorted(p.relative_to(root) for p in found if p.is_file())]


def _needed_frames(num_frames: int | None, stride: int, start: int) -> int:
    """Validates the clip arguments; returns how many frames the file must have."""

    if num_frames is not None and (not is_int(num_frames) or num_frames < 1):
        raise ValueError(f"num_frames must be a positive integer or None, got {num_frames!r}")
    if not is_int(stride) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if not is_int(start) or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    return start + 1 if num_frames is None else start + (num_frames - 1) * stride + 1


class _Pick:
    """Which frame indices a read wants: ``start, start + stride, ...`` (``count`` of them), or an explicit set."""

    def __init__(self, start: int, stride: int, count: int | None, wanted: frozenset[int] | None = None) -> None:
        self.start, self.stride, self.wanted = start, stride, wanted
        # Index of the last wanted frame; None = read to the end.
        self.last = max(wanted) if wanted else (None if count is None else start + (count - 1) * stride)

    @classmethod
    def of(cls, indices: Iterable[int]) -> _Pick:
        wanted = frozenset(indices)
        return cls(min(wanted), 1, None, wanted)

    def __contains__(self, i: int) -> bool:
        if self.wanted is not None:
            return i in self.wanted
        return i >= self.start and (i - self.start) % self.stride == 0 and (self.last is None or i <= self.last)

    def indices(self, total: int) -> list[int]:
        if self.wanted is not None:
            return sorted(i for i in self.wanted if i < total)
        stop = total if self.last is None else min(total, self.last + 1)
        return list(range(self.start, stop, self.stride))


def _read_pil(path: Path, pick: _Pick, size: int | tuple[int, int] | None = None) -> tuple[list[np.ndarray], int]:
    """Decodes frames with Pillow; with ``size`` each is resized and cropped as it is decoded, so an animated GIF
    never holds all its frames at full size. Returns the wanted frames and the number of frames seen."""
    frames, total = [], 0
    try:
        with warnings.catch_warnings():
            # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that: both are refused here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                turn, still = exif_turn(im), is_still(im)  # the file's, for every frame
                for i, frame in enumerate(ImageSequence.Iterator(im)):
                    if still and i > 0:  # an MPO's further pictures are not frames
                        break
                    total = i + 1
                    if i in pick:
                        # Frame 0 alone was turned: an animated WebP mixed two orientations, or failed to stack.
                        rgb = shrunk_rgb(frame if turn is None else frame.transpose(turn), size)  # (H, W, 3)
                        frames.append(rgb if size is None else resize_center_crop(rgb[None], size)[0])
                    if pick.last is not None and i >= pick.last:
                        break
    except FrameRefused as err:
        raise ValueError(f"{str(path)!r}: {err}") from None
    except PIL_DECODE_ERRORS as err:
        raise _DecodeError(f"Pillow: {err or type(err).__name__}") from None
    return frames, total


def _natural_key(path: Path) -> tuple[object, ...]:
    """``frame2.png`` before ``frame10.png``, and ``99999.png`` before ``100000.png``: runs of digits compare as numbers
    (as text, frames 100000 on sorted between 10000 and 10001, and an unpadded 10.png before 2.png)."""
    parts = re.split(r"(\d+)", path.name)  # text, digits, text, ...: the kinds line up between names
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts))


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The image frames of a folder that is one video, in file-name order with numbers compared as numbers
    (hidden files skipped)."""
    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")]
    return sorted(files, key=_natural_key)


def _read_frame_folder(
    path: Path, pick: _Pick, size: int | tuple[int, int] | None = None
) -> tuple[list[np.ndarray], int]:
    """Reads a folder of image frames (sorted by file name) as one video, at the frames' own size."""
    files = frame_files(path)
    frames = [_read_pil(files[i], _Pick(0, 1, 1))[0][0] for i in pick.indices(len(files))]
    if len({f.shape for f in frames}) > 1:
        raise ValueError(f"the frames in {str(path)!r} differ in size")
    return frames, len(files)


_DECORD_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s+(Check failed: .*?\(-?\d+ vs\. -?\d+\)\s*)?(ERROR\s+)?")


def decord_reason(err: BaseException) -> str:
    """decord's error without its C++ log prefix (``[08:57:31] /github/.../video_reader.cc:151: Check failed: st_nb
    >= 0 (-1381258232 vs. 0) ERROR``): what a user can read, e.g. "cannot find video stream with wanted index: -1"."""
    line = first_line(err)
    return _DECORD_PREFIX.sub("", line) or line


_reader_slot = threading.local()  # per thread: decord readers are not safe to share between threads


def decord_reader(path: str | os.PathLike, width: int = -1, height: int = -1) -> decord.VideoReader:
    """A decord reader of ``path`` (scaled to ``width`` x ``height`` by the decoder when given).

    The reader decodes on one thread: tokvid parallelizes over files (the token cache's decode
    workers), and decord's own frame threads cost more CPU than they save on short clips (4.0 against
    2.6 ms of CPU per 17-frame 64x64 clip). The last reader this thread opened is reused while the
    file is unchanged (same path, size, modification time and inode), so counting a video's frames and
    then reading them opens it once: for short clips the opening costs as much as decoding.

    Raises:
        RuntimeError, decord.DECORDError: decord cannot open the file. A file PyAV cannot open is a RuntimeError
            without decord being tried: its C++ logging prints to stderr past any error handling.
    """
    stat = os.stat(path)
    key = (os.fspath(path), stat.st_ino, stat.st_mtime_ns, stat.st_size, width, height)
    if getattr(_reader_slot, "key", None) != key:
        _reader_slot.key, _reader_slot.reader = None, None  # never keep a reader for a key that failed
        try:
            video_display(path)  # PyAV opens it first: decord's C++ log would print past every handler
        except ValueError as err:
            raise RuntimeError(str(err)) from None
        _reader_slot.reader = decord.VideoReader(ffmpeg_path(path), width=width, height=height, num_threads=1)
        _reader_slot.key = key
    return _reader_slot.reader


def _read_decord(path: Path, pick: _Pick, size: int | tuple[int, int] | None = None) -> tuple[list[np.ndarray], int]:
    """Decodes with decord; the decoder itself scales to :func:`decoded_size`. Rotated videos are left to PyAV."""
    if decord is None:
        raise _DecodeError("decord: not installed")
    try:
        display = video_display(path)
    except ValueError:  # FFmpeg cannot open it (decord, on an older FFmpeg, cannot either): PyAV's reason says why
        raise _DecodeError("decord: not tried (FFmpeg cannot open the file)") from None
    if display.turns or display.flip:  # decord turns some rotated files (180) and fails on others (90: a size mismatch)
        raise _DecodeError("decord: the video is rotated by its display matrix")
    try:
        vr = decord_reader(path)
        total = len(vr)
        indices = pick.indices(total)
        if not indices or (pick.last is not None and pick.last >= total):
            return [], total  # too short: the caller reports it
        if size is not None or display.sar != 1.0:
            height, width = vr[indices[0]].shape[:2]
            new_h, new_w = decoded_size(height, width, display.sar, 0, size)
            if (new_h, new_w) != (height, width):  # scaling in the decoder: no full-size frame reaches numpy
                vr = decord_reader(path, width=new_w, height=new_h)
        batch = vr.get_batch(indices).asnumpy()  # (T, H, W, 3)
    except (RuntimeError, decord.DECORDError, UnicodeError) as err:  # DECORDError is not a RuntimeError; decord
        raise _DecodeError(f"decord: {decord_reason(err)}") from None  # takes no file name that is not UTF-8 (caf\xe9)
    if batch.ndim != 4 or batch.shape[0] != len(indices) or batch.shape[-1] != 3:
        raise _DecodeError(f"decord: returned frames of shape {batch.shape}")
    return list(batch), total


def _read_pyav(path: Path, pick: _Pick, size: int | tuple[int, int] | None = None) -> tuple[list[np.ndarray], int]:
    """Decodes with PyAV (threaded); libswscale scales each frame to :func:`decoded_size`, then it is turned as its
    display matrix says."""
    import av  # only needed on the fallback path

    frames, total = [], 0
    try:
        with av.open(ffmpeg_path(path)) as container:
            if not container.streams.video:
                raise _DecodeError("PyAV: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            sar = pixel_aspect(stream.sample_aspect_ratio)
            scaled, turns, flip = {}, 0, False
            for i, frame in enumerate(container.decode(stream)):
                total = i + 1
                if i in pick:
                    if not scaled:
                        turns, flip = orientation(frame)  # from the display matrix, mirroring included
                        new_hw = decoded_size(frame.height, frame.width, sar, turns, size)
                        scaled = dict(zip(("height", "width"), new_hw, strict=True))
                    rgb = frame.to_ndarray(format="rgb24", **scaled)  # (h, w, 3) as stored
                    shown = np.rot90(rgb, turns) if turns else rgb
                    frames.append(shown[:, ::-1] if flip else shown)  # as shown (np.stack copies the view)
                if pick.last is not None and i >= pick.last:
                    break
            else:  # read to the end: a file cut short still lists its whole length in its index
                listed = int(stream.frames or 0)
                # The index can overstate by a frame or two (edit lists, a dropped last frame): only more is a cut
                if listed - total > max(2, listed // 20):
                    raise _DecodeError(f"PyAV: the file ends after {total} of the {listed} frames its index lists")
    except av.FFmpegError as err:
        raise _DecodeError(f"PyAV: {err}") from None
    return frames, total


def read_video(
    path: str | os.PathLike,
    *,
    num_frames: int | None = None,
    stride: int = 1,
    start: int = 0,
    size: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """Reads frames ``start, start + stride, ...`` of a video, GIF, image or folder of frames.

    Args:
        path: a video file (decord, then PyAV), an image/GIF (Pillow; a still image is a
            1-frame clip), or a folder of image frames, one video in file-name order.
        num_frames: frames to return; None reads every ``stride``-th frame to the end.
        stride: step between returned frames.
        start: index of the first returned frame.
        size: None keeps the frames' (display) size. An int (square) or (h, w) resizes to cover it, keeping
            the aspect ratio, and crops the center, as :func:`core.frames.resize_center_crop`. Video decoders
            scale inside the decoder (libswscale), which is several times cheaper than resizing
            full-size frames and differs from :func:`resize_center_crop` by interpolation only.

    Returns:
        (T, H, W, 3) uint8 RGB frames, T = num_frames when given, (H, W) = size when given.

    Raises:
        ValueError: the file is missing, empty, cannot be decoded, or has fewer than
            ``start + (num_frames - 1) * stride + 1`` frames; or the arguments are invalid.
    """
    needed = _needed_frames(num_frames, stride, start)
    want = f"num_frames={num_frames}, stride={stride}, start={start}"
    return _read(Path(path), _Pick(start, stride, num_frames), needed, num_frames, want, size)


def read_frames(
    path: str | os.PathLike, indices: Iterable[int], *, size: int | tuple[int, int] | None = None
) -> np.ndarray:
    """Reads the frames at ``indices`` of a video, GIF, image or folder of frames, decoding each once.

    One pass serves many overlapping clips: read the union of their frames here and slice.

    Args:
        path: as :func:`read_video`.
        indices: frame indices >= 0, in any order; repeats are returned repeatedly.
        size: as :func:`read_video`.

    Returns:
        (len(indices), H, W, 3) uint8 frames in the order of ``indices``.

    Raises:
        ValueError: as :func:`read_video`, or no or negative indices.
    """
    order = list(indices)
    if not order or not all(is_int(i) for i in order) or min(order) < 0:  # int() took 2.9 as 2 and True as 1
        raise ValueError(f"indices must be a non-empty list of integer frame indices >= 0, got {order[:8]}")
    order = [int(i) for i in order]
    pick = _Pick.of(order)
    unique = sorted(pick.wanted)
    frames = _read(Path(path), pick, unique[-1] + 1, len(unique), f"frame {unique[-1]}", size)
    where = {f: k for k, f in enumerate(unique)}
    return frames[[where[i] for i in order]]


# Backends by file suffix, in turn (others: decord, then PyAV). AVI goes to PyAV's in-order decode: decord maps
# indices to the wrong frames of an AVI with B-frames (MPEG-4 Part 2, as UCF-101's Xvid files), so a strided or
# later read of a 60-frame clip returned frames 12-19 for 31-38, and frame 11 for 30, without an error.
PYAV_ONLY_EXTS = frozenset({".avi"})
BACKENDS: dict[str, list] = {**{ext: [_read_pil] for ext in PIL_EXTS}, **{ext: [_read_pyav] for ext in PYAV_ONLY_EXTS}}


def _read(
    path: Path, pick: _Pick, needed: int, count: int | None, want: str, size: int | tuple[int, int] | None
) -> np.ndarray:
    """The backends in turn: ``count`` frames (None: to the end) of a file with at least ``needed``."""
    if size is not None:
        cover_size(1, 1, size)  # validates size before any decoding
    if path.is_dir():
        backends = [_read_frame_folder]
    elif not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist or is not a file")
    elif path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes)")
    else:
        backends = BACKENDS.get(path.suffix.lower(), [_read_decord, _read_pyav])
    reasons = []
    for backend in backends:
        name = backend.__name__.removeprefix("_read_")
        try:
            frames, total = backend(path, pick, size)
        except _DecodeError as err:
            reasons.append(str(err))
            continue
        if total == 0:
            reasons.append(f"{name}: no frames decoded")
        elif total < needed:
            raise ValueError(f"{str(path)!r} is too short: it has {total} frames, {want} needs {needed}")
        elif count is not None and len(frames) != count:
            reasons.append(f"{name}: decoded {len(frames)} of {count} frames")
        else:
            stacked = np.stack(frames)  # (T, H, W, 3)
            return stacked if size is None else resize_center_crop(stacked, size)  # decoded frames: only the crop
    raise ValueError(f"cannot decode {str(path)!r}: " + "; ".join(reasons))
