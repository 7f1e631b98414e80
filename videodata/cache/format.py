"""On-disk format of a token cache: names, dtypes, hashing, atomic writes and verification.

A cache folder written by ``tools/cache_tokens.py`` holds::

    spec.json                          what the cache is made of (tokenizer, clip spec, sources,
                                       world size); a resumed run must match it exactly
    shard-r{rank:03d}-{i:05d}.tokens.npy   (N, t, h, w) uint16 (codebook <= 65,536) else int32
    shard-r{rank:03d}-{i:05d}.meta.npy     (N,) structured int64: source, clip, start, stride, label
    shard-r{rank:03d}-{i:05d}.captions.json  JSON list of N entries: a string ("" when absent), or a
                                       list of strings for a source with several captions
    shard-r{rank:03d}-{i:05d}.done.json    written last: counts, sha256 of every file, quarantine
    rank-{rank:03d}.done.json          written when a rank has finished its slice
    manifest.json                      written by rank 0 once every rank is done

A shard exists only once its ``.done.json`` does, so a killed run never lists a partial
shard. ``manifest.json`` lists shards in (rank, index) order; because every rank owns a
contiguous block of the sorted sources, that order is the order of the work items
(source, clip) whatever the world size.

Text-encoder hook: a later stage may add ``shard-...text.npy`` (cached text features) to a
shard's ``files`` mapping and set the manifest's ``text_features`` field; verification
covers every file listed, and readers ignore file kinds they do not know.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from core.files import atomic_write_bytes, read_json, sha256_bytes, sha256_file  # noqa: F401 - re-exported for the cache modules
from core.weights import folder_fingerprint

FORMAT_NAME = "tokvid-token-cache"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPEC_NAME = "spec.json"
SHARD_FILES = ("tokens", "meta", "captions")  # kinds every shard has; "text" is the optional hook
META_DTYPE = np.dtype([("source", "<i8"), ("clip", "<i8"), ("start", "<i8"), ("stride", "<i8"), ("label", "<i8")])
UINT16_MAX_CODEBOOK = 65_536


def shard_name(rank: int, index: int) -> str:
    """``shard-r{rank:03d}-{index:05d}``: the stem shared by a shard's files."""
    return f"shard-r{rank:03d}-{index:05d}"


def shard_file(name: str, kind: str) -> str:
    """File name of one kind (tokens, meta, captions, text, done) of shard ``name``."""
    ext = {"tokens": "npy", "meta": "npy", "text": "npy", "captions": "json", "done": "json"}[kind]
    return f"{name}.{kind}.{ext}"


def rank_done_name(rank: int) -> str:
    return f"rank-{rank:03d}.done.json"


def token_dtype(codebook_size: int) -> np.dtype:
    """uint16 when every id fits (codebook <= 65,536), else int32; larger than int32 holds is refused."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    if codebook_size > 2**31:  # astype(int32) wrapped the larger ids to negative ones without a word
        raise ValueError(f"a codebook of {codebook_size:,} ids does not fit the cache's int32 ids (at most 2**31)")
    return np.dtype(np.uint16) if codebook_size <= UINT16_MAX_CODEBOOK else np.dtype(np.int32)


def tokenizer_fingerprint(directory: str | os.PathLike) -> str:
    """sha256 identifying an exported tokenizer (:func:`core.weights.folder_fingerprint`).

    Raises:
        ValueError: the folder or one of its two files is missing.
    """
    return folder_fingerprint(directory, "tokenizer")


def npy_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` serialisation of a non-object array (no pickling)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False) + "\n").encode()


def load_manifest(cache_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads and sanity-checks ``manifest.json`` of a finished cache.

    Raises:
        ValueError: no manifest (the cache is unfinished or the path is wrong), another format,
            or a newer format version.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise ValueError(f"token cache {str(cache_dir)!r} " + ("is a file, not a cache folder" if cache_dir.exists()
                                                               else "does not exist"))  # fmt: skip
    if not (cache_dir / MANIFEST_NAME).is_file():
        raise ValueError(f"token cache {str(cache_dir)!r} has no {MANIFEST_NAME} (unfinished or not a cache)")
    manifest = read_json(cache_dir / MANIFEST_NAME, "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{str(cache_dir / MANIFEST_NAME)!r} is not a {FORMAT_NAME} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{str(cache_dir / MANIFEST_NAME)!r} has format version {manifest.get('format_version')!r}; "
            f"this code reads version {FORMAT_VERSION}"
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise ValueError(f"{str(cache_dir / MANIFEST_NAME)!r} is damaged: {problem}")
    return manifest


_FILE_FIELDS = {"file": str, "bytes": int, "sha256": str}


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """The first field a reader or ``verify`` needs that is missing or of the wrong type, or None."""
    for key, tp in {"shards": list, "sources": list, "grid": list, "dtype": str, "codebook_size": int}.items():
        if not isinstance(manifest.get(key), tp):
            return f"{key!r} is missing or not a {tp.__name__}"
    if not isinstance(manifest.get("tokenizer"), dict) or not isinstance(manifest["tokenizer"].get("fingerprint"), str):
        return "'tokenizer.fingerprint' is missing"
    for i, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict) or not isinstance(shard.get("name"), str):
            return f"shard {i} has no name"
        if not isinstance(shard.get("num_clips"), int) or not isinstance(shard.get("files"), dict):
            return f"shard {shard['name']} lacks num_clips or files"
        missing = [kind for kind in SHARD_FILES if kind not in shard["files"]]
        if missing:  # verify checked only the files listed, and the reader then failed with a KeyError
            return f"shard {shard['name']} lists no {' or '.join(missing)} file"
        for kind, entry in shard["files"].items():
            for field, tp in _FILE_FIELDS.items():
                if not isinstance(entry, dict) or not isinstance(entry.get(field), tp):
                    return f"shard {shard['name']}: {kind} file entry lacks {field!r}"
    return None


def verify_cache(cache_dir: str | os.PathLike) -> tuple[list[str], int]:
    """Recomputes the size and sha256 of every file the manifest lists.

    Args:
        cache_dir: a finished token cache.

    Returns:
        (problems, num_files): one line per missing or mismatching file, naming its shard,
        and how many files were checked. No problems means every byte matches.

    Raises:
        ValueError: the manifest is missing or unreadable.
    """
    cache_dir = Path(cache_dir)
    manifest = load_manifest(cache_dir)
    problems, num_files = [], 0
    for shard in manifest["shards"]:
        for kind, entry in sorted(shard["files"].items()):
            num_files += 1
            path = cache_dir / entry["file"]
            where = f"shard {shard['name']}: {kind} file {entry['file']}"
            if not path.is_file():
                problems.append(f"{where} is missing")
                continue
            size = path.stat().st_size
            if size != entry["bytes"]:
                problems.append(f"{where} has {size} bytes, the manifest says {entry['bytes']}")
                continue
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                problems.append(f"{where} has sha256 {digest}, the manifest says {entry['sha256']}")
    return problems, num_files
