"""What a token cache is made of: its sources, read from a folder, a file or a manifest, and their identity.

Sources come from a folder scanned recursively, a single media file, or a manifest CSV /
JSONL with a ``path`` column (relative to the manifest's folder, or absolute) and optional
``caption`` and ``label`` (int; -1 or empty when absent). A JSONL row may give ``captions``, a list of
several captions of the same video, instead of ``caption``: a text-conditional trainer draws one per
step. Sources are sorted by path, so the work items ``(source index, clip index)`` are fixed by the
data and the clip window alone.

:class:`SourceError` is a bad source, with the short reason its quarantine entry gives. The clip window and the
decoding of one source into clips are :mod:`videodata.cache.decode`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.checks import has_text
from core.files import sha256_bytes
from core.video_io import list_media

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
