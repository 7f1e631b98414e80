"""What a token cache is made of: its sources, the clip window, and decoding one source into clips.

Sources come from a folder scanned recursively, a single media file, or a manifest CSV /
JSONL with a ``path`` column (relative to the manifest's folder, or absolute) and optional
``caption`` and ``label`` (int; -1 or empty when absent). A JSONL row may give ``captions``, a list of
several captions of the same video, instead of ``caption``: a text-conditional trainer draws one per
step. Sources are sorted by path, so the work items ``(source index, clip index)`` are fixed by the
data and the clip window alone.

:func:`decode_source` runs in decode worker processes: it probes the frame count, plans the
clip starts, reads every clip of one source in one decoding pass at the target size, and raises :class:`SourceError`
with a short reason (``missing``, ``empty``, ``too_short``, ``undecodable``) for a bad file.
An image is a 1-frame clip: it is cached when ``num_frames == 1`` and quarantined as
``too_short`` otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.checks import has_text
from core.files import sha256_bytes
from core.video_io import list_media, read_frames
from core.video_probe import frame_count, video_fps

MANIFEST_EXTS = (".csv", ".jsonl")
_LOG_TIME = re.compile(r"\[\d{2}:\d{2}:\d{2}\] ")


class SourceError(ValueError):
    """A source cannot give clips; ``kind`` is the short quarantine reason."""

    def __init__(self, kind: str, detail: str) -> None:
        detail = _LOG_TIME.sub("", detail)  # decord's "[12:34:56] " prefixes would make reruns differ
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


@dataclass(frozen=True, kw_only=True)
class Source:
    """One input file. ``path`` is relative to the data root (or absolute, from a manifest)."""

    path: str
    captions: tuple[str, ...] = ()
    label: int = -1

    @property
    def caption(self) -> str:
        """The first caption, "" when there is none."""
        return self.captions[0] if self.captions else ""

    @property
    def caption_entry(self) -> str | list[str]:
        """How the cache stores the captions: one string, or a list of several."""
        return list(self.captions) if len(self.captions) > 1 else self.caption


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


# ----------------------------------------------------------------------------- sources
def discover_sources(data: str | os.PathLike) -> tuple[Path, list[Source]]:
    """Finds the sources of a dataset, sorted by path.

    Args:
        data: a folder (scanned recursively), a media file, or a ``.csv`` / ``.jsonl`` manifest.

    Returns:
        (root, sources): the folder that relative source paths are joined to, and the sources.

    Raises:
        ValueError: missing path, malformed manifest, or no sources at all.
    """
    data = Path(data)
    if not data.exists():
        raise ValueError(f"data path {str(data)!r} does not exist")
    if data.is_file() and data.suffix.lower() in MANIFEST_EXTS:
        root, sources = data.parent, _read_manifest(data)
    elif data.is_dir():
        root, sources = data, [Source(path=p.relative_to(data).as_posix()) for p in list_media(data)]
    else:
        root, sources = data.parent, [Source(path=p.name) for p in list_media(data)]
    for s in sources:  # a name that is not UTF-8 (Latin-1 bytes) stopped the build later without naming the file
        _check_utf8(s.path, f"file name {s.path!r} under {str(root)!r}")
    if not sources:
        raise ValueError(f"no videos or images found under {str(data)!r}")
    order = sorted(range(len(sources)), key=lambda i: (sources[i].path, i))
    return root, [sources[i] for i in order]


def _parse_label(value: Any, where: str) -> int:
    if value is None or value == "":
        return -1
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{where}: label {value!r} is not an integer") from None
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= np.iinfo(np.int64).max:
        raise ValueError(f"{where}: label must be an integer >= 0 (or -1 / empty for none), got {value!r}")
    return value


def _source(row: dict[str, Any], where: str) -> Source:
    path, caption, several = row.get("path"), row.get("caption"), row.get("captions")
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{where}: needs a non-empty 'path'")
    if caption is not None and not isinstance(caption, str):
        raise ValueError(f"{where}: caption must be a string, got {caption!r}")
    if several is not None:
        if caption is not None:
            raise ValueError(f"{where}: give 'caption' or 'captions', not both")
        if not isinstance(several, list) or not several or not all(isinstance(c, str) and has_text(c) for c in several):
            # a blank entry ("   ", a zero-width space) passed, and stopped a text-conditional run when it was drawn
            raise ValueError(f"{where}: captions must be a non-empty list of non-blank strings, got {several!r}")
    captions = tuple(several) if several is not None else ((caption,) if caption else ())
    for text in captions:  # JSON's "\ud800" is a lone surrogate: no text encoder or JSON writer takes it
        _check_utf8(text, f"{where}: caption {text!r}")
    return Source(path=path.strip(), captions=captions, label=_parse_label(row.get("label"), where))


def _check_utf8(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8 text (a lone surrogate, or bytes of another encoding)") from None


def _check_unique(sources: list[Source], wheres: list[str], root: Path) -> None:
    """ValueError when two rows name one file (``a.mp4`` and ``./a.mp4`` too): each row became its own source, so
    the same clip could be held out for evaluation and trained on."""
    seen: dict[str, str] = {}
    for source, where in zip(sources, wheres):
        key = os.path.normcase(os.path.abspath(os.path.join(root, source.path)))
        if key in seen:
            raise ValueError(f"{where} names {source.path!r} again (as {seen[key]} did): list each video once; "
                             "several captions of one video go in a JSONL row's 'captions' list")  # fmt: skip
        seen[key] = where


def _read_manifest(path: Path) -> list[Source]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (spreadsheet exports) is not text
    except UnicodeDecodeError as err:
        raise ValueError(f"manifest {str(path)!r} is not UTF-8 text: {err}") from None
    sources, wheres = [], []
    if path.suffix.lower() == ".csv":
        # newline="": line breaks inside quoted fields stay part of the field (csv's own rule)
        # strict: a quote opened and never closed is an error; without it the rest of the file became that
        # field (every later row silently gone) or passed csv's field size limit with a csv.Error traceback
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        done = 0  # lines read by the last complete row
        try:
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise ValueError(f"manifest {str(path)!r} needs a header row with a 'path' column")
            done = reader.line_num
            for row in reader:
                wheres.append(f"{path.name} line {done + 1}")  # the line the row starts on
                sources.append(_source(row, wheres[-1]))
                done = reader.line_num
        except csv.Error as err:
            raise ValueError(f"{path.name} line {done + 1}: not valid CSV: {err} (an unclosed quote?)") from None
        _check_unique(sources, wheres, path.parent)
        return sources
    # JSON Lines ends a line only at \n; str.splitlines() also splits at U+2028, U+0085 and \x0c, which JSON
    # allows unescaped inside strings (json.dumps(ensure_ascii=False) writes them so)
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path.name} line {i}: not valid JSON: {err}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path.name} line {i}: expected a JSON object, got {type(row).__name__}")
        wheres.append(f"{path.name} line {i}")
        sources.append(_source(row, wheres[-1]))
    _check_unique(sources, wheres, path.parent)
    return sources


def sources_sha256(sources: list[Source]) -> str:
    """sha256 over the sorted source list (path, caption, label): the identity of the work list."""
    blob = json.dumps([[s.path, s.caption_entry, s.label] for s in sources], ensure_ascii=False)
    return sha256_bytes(blob.encode())


def source_sizes_sha256(root: Path, sources: list[Source]) -> str:
    """sha256 over each source's size in bytes (a folder of frames: the sum over its files; missing: -1).

    The source list names files by path only, so a resume with ``--data`` on another folder with the same names
    passed its check and mixed two datasets in one cache. Sizes are a cheap stat each and still allow the folder
    to move; a same-size edit of a file goes unseen.
    """
    sizes = []
    for s in sources:
        path = root / s.path
        try:
            if path.is_dir():
                sizes.append(sum(e.stat().st_size for e in os.scandir(path) if e.is_file()))
            else:
                sizes.append(path.stat().st_size)
        except OSError:
            sizes.append(-1)
    return sha256_bytes(json.dumps(sizes).encode())


def rank_slice(num_sources: int, rank: int, world_size: int) -> range:
    """The contiguous block of source indices a rank owns (sizes differ by at most one).

    Contiguous blocks keep the concatenation of all ranks' shards in work-item order, so a
    global clip index means the same clip whatever the world size.
    """
    return range(num_sources * rank // world_size, num_sources * (rank + 1) // world_size)


# ----------------------------------------------------------------------------- decoding
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
