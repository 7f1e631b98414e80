"""The shapes dataset on disk: rendering it with its manifests, and reading its clips and manifests back.

Each clip shows one saturated circle, square or upright triangle (6 colors) moving left, right,
up or down on a near-black background: 17 frames of 64x64 at 8 fps (see
:mod:`videodata.shapes.render`), as an H.264 mp4 or a folder of PNG frames. Every block of 72
consecutive clips holds each class once, in an order shuffled by the seed, and all of clip
``i``'s randomness comes from ``numpy.random.default_rng([seed, i])``, so the output does not
depend on the number of workers.

:func:`render_dataset` writes, under its ``out`` folder: ``clips/`` (``000000.mp4`` ... or
``000000/00.png`` ...), ``holdout.jsonl`` / ``holdout.csv`` when holdout combinations are given
(for measuring compositional generalization), ``dataset.json`` (the parameters), then
``manifest.csv`` and, last of all, ``manifest.jsonl``: a folder without ``manifest.jsonl`` is an
unfinished render. Manifest rows hold ``path`` (relative to the manifest), ``caption``,
``label``, ``color``, ``shape``, ``motion`` and ``split`` (``train`` or ``holdout``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.files import atomic_dir, atomic_write_json, atomic_write_text, read_json
from core.video_io import read_video
from core.video_write import write_video
from videodata.shapes.render import (
    ATTRIBUTES,
    FPS,
    NUM_CLASSES,
    NUM_FRAMES,
    SIZE,
    ClipSpec,
    all_captions,
    attributes_of,
    caption_for,
    label_of,
    render_clip,
    sample_spec,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"  # the training rows; written last, so it marks a finished render
HOLDOUT_MANIFEST = "holdout.jsonl"
FORMATS = ("mp4", "png")
COLUMNS = ("path", "caption", "label", "color", "shape", "motion", "split")


RENDER_MARK = ".shapes-render"  # written before the first clip: the folder is a (maybe unfinished) render of ours


def parse_holdout(holdout: str | Iterable[str] | None) -> tuple[tuple[str, str, str], ...]:
    """Parses held-out combinations such as ``"green triangle up,blue circle left"``.

    Each combination names one color, one shape and one motion, separated by spaces, in any
    order. Duplicates are dropped; the result is sorted by class label.

    Args:
        holdout: a comma-separated string, an iterable of combination strings, or None.

    Returns:
        ``(color, shape, motion)`` tuples.

    Raises:
        ValueError: a combination has an unknown word or does not name exactly one of each.
    """
    if holdout is None:
        return ()
    if not isinstance(holdout, str) and not isinstance(holdout, Iterable):
        raise ValueError(f"holdout must be a comma-separated string or a list of combinations, got {holdout!r}")
    items = holdout.split(",") if isinstance(holdout, str) else list(holdout)
    combos = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"holdout combinations must be strings, got {item!r}")
        words = item.lower().split()
        if not words:
            continue
        found = {}
        for word in words:
            kind = next((k for k, values in ATTRIBUTES.items() if word in values), None)
            if kind is None or kind in found:
                why = f"{word!r} is not a known color, shape or motion" if kind is None else f"it names two {kind}s"
                raise ValueError(
                    f"unknown holdout combination {item.strip()!r}: {why} (expected e.g. 'green triangle up')"
                )
            found[kind] = word
        if len(found) != 3:
            raise ValueError(f"holdout combination {item.strip()!r} must name a color, a shape and a motion")
        combos.add((found["color"], found["shape"], found["motion"]))
    if not combos and isinstance(holdout, str) and holdout.strip():  # "," ("$A,$B" unset) rendered no holdout
        raise ValueError(f"holdout {holdout!r} names no combination (expected e.g. 'green triangle up')")
    return tuple(sorted(combos, key=lambda c: label_of(*c)))


MAX_SEED = 2**32 - 1  # numpy splits larger seeds into 32-bit words: [s + 2**32 k, 0] draws what [s, k] draws


def check_seed(seed: int) -> None:
    """ValueError unless ``seed`` is an int in [0, 2**32): beyond it clip 0 of one seed repeated clip k of another."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")


def class_of(index: int, seed: int) -> int:
    """Class of clip ``index``: each block of 72 clips holds every class once, shuffled by ``seed``.

    So the first ``72 k`` clips are exactly balanced, and a shorter prefix is a random subset
    of classes without repeats (not, say, only the red ones).
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    check_seed(seed)
    block, position = divmod(index, NUM_CLASSES)
    return int(np.random.default_rng([seed, block, 1]).permutation(NUM_CLASSES)[position])


def clip_spec(index: int, seed: int, num_captions: int = 1) -> tuple[ClipSpec, tuple[str, ...]]:
    """Spec and captions of clip ``index`` of the dataset made with ``seed``.

    The captions are distinct draws of :func:`caption_for`; the first is the same whatever ``num_captions``.
    """
    color, shape, motion = attributes_of(class_of(index, seed))
    rng = np.random.default_rng([seed, index])
    spec = sample_spec(color, shape, motion, rng)
    captions = [caption_for(color, shape, motion, rng)]
    for _ in range(50 * num_captions):
        if len(captions) == num_captions:
            break
        caption = caption_for(color, shape, motion, rng)
        if caption not in captions:
            captions.append(caption)
    return spec, tuple(captions)


@dataclass(frozen=True)
class RenderSummary:
    """What :func:`render_dataset` wrote.

    Attributes:
        manifest: path of the training manifest (``manifest.jsonl``).
        holdout_manifest: path of ``holdout.jsonl``, or None without holdout combinations.
        num_train, num_holdout: rows in each manifest.
        seconds: wall time of the render.
    """

    manifest: Path
    holdout_manifest: Path | None
    num_train: int
    num_holdout: int
    seconds: float


def _write_png_folder(folder: Path, frames: np.ndarray) -> None:
    """Writes frames as ``00.png, 01.png, ...`` into a temp folder that then takes ``folder``'s place whole."""
    with atomic_dir(folder) as tmp:
        for t, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"{t:02d}.png", format="PNG")


def _render_one(index: int, seed: int, out: Path, fmt: str, held: frozenset, num_captions: int) -> dict:
    spec, captions = clip_spec(index, seed, num_captions)
    rel = f"clips/{index:06d}" + (".mp4" if fmt == "mp4" else "")
    frames = render_clip(spec)
    if fmt == "mp4":
        write_video(out / rel, frames, FPS)
    else:
        _write_png_folder(out / rel, frames)
    split = "holdout" if (spec.color, spec.shape, spec.motion) in held else "train"
    values = (rel, captions[0], spec.label, spec.color, spec.shape, spec.motion, split)
    return {**dict(zip(COLUMNS, values)), "captions": list(captions)}


def _jsonl(rows: list[dict]) -> str:
    """One JSON object per row: ``captions`` (a list) for a clip with several captions, else ``caption``."""
    lines = []
    for row in rows:
        several = len(row["captions"]) > 1
        lines.append(json.dumps({k: v for k, v in row.items() if k != ("caption" if several else "captions")}))
    return "".join(line + "\n" for line in lines)


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")  # first caption
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def render_dataset(
    out: str | os.PathLike,
    num_clips: int,
    *,
    seed: int = 0,
    holdout: str | Iterable[str] | None = None,
    format: str = "mp4",
    num_workers: int = 1,
    overwrite: bool = False,
    captions_per_clip: int = 1,
) -> RenderSummary:
    """Renders the dataset into ``out`` and writes its manifests, ``manifest.jsonl`` last.

    Args:
        out: output folder (created if missing).
        num_clips: clips to render in all, >= 1; see :func:`class_of`. A clip goes to the
            held-out manifest when its (color, shape, motion) is a holdout combination.
        seed: seeds every clip (``default_rng([seed, i])``); same seed, same bytes.
        holdout: combinations to leave out of training, see :func:`parse_holdout`.
        format: ``"mp4"`` (H.264 via ``write_video``) or ``"png"`` (a folder of frames per clip).
        num_workers: threads rendering and encoding clips in parallel, >= 1.
        overwrite: replace a finished dataset already in ``out``.
        captions_per_clip: distinct captions drawn per clip; with more than one, the JSONL manifests give them
            as ``captions`` (a text-conditional trainer draws one per step) and the CSV ones keep the first.

    Returns:
        The manifests written and their row counts.

    Raises:
        ValueError: bad arguments, or ``out`` already holds a dataset and ``overwrite`` is False.
        OSError: a file cannot be written.
    """
    if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips < 1:
        raise ValueError(f"num_clips must be a positive integer, got {num_clips!r}")
    check_seed(seed)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
    if isinstance(captions_per_clip, bool) or not isinstance(captions_per_clip, int) or captions_per_clip < 1:
        raise ValueError(f"captions_per_clip must be a positive integer, got {captions_per_clip!r}")
    fewest = min(len(all_captions(*attributes_of(label))) for label in range(NUM_CLASSES))
    if captions_per_clip > fewest:  # it silently gave fewer while dataset.json recorded the number asked for
        raise ValueError(f"captions_per_clip must be at most {fewest}, the distinct captions of a class, got "
                         f"{captions_per_clip}")  # fmt: skip
    combos = parse_holdout(holdout)
    if len(combos) == NUM_CLASSES:
        raise ValueError("the holdout combinations cover all 72 classes: nothing is left to train on")
    drawn = {class_of(i, seed) for i in range(min(num_clips, NUM_CLASSES))}  # every class from 72 clips on
    if drawn <= {label_of(*c) for c in combos}:  # it wrote an empty manifest.jsonl and exited 0
        raise ValueError(f"the holdout combinations cover every class of the {num_clips} clip(s) of seed {seed}: "
                         "nothing is left to train on; render more clips")  # fmt: skip
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    finished = [out / name for name in (MANIFEST, HOLDOUT_MANIFEST, "manifest.csv", "holdout.csv", "dataset.json")]
    if (out / MANIFEST).exists() and not overwrite:
        raise ValueError(
            f"{str(out)!r} already holds a dataset ({MANIFEST}); pass overwrite=True / --overwrite to replace it"
        )
    clips_held = (out / "clips").is_dir() and any((out / "clips").iterdir())
    if clips_held and (out / "clips").is_symlink():  # rmtree refused the link, after the manifests were gone
        raise ValueError(f"{str(out / 'clips')!r} is a symbolic link to clips that rendering would replace; remove "
                         "the link or choose another --out")  # fmt: skip
    foreign = [p.name for p in finished if p.exists()] + (["clips/"] if clips_held else [])
    if foreign and not (out / RENDER_MARK).exists() and not overwrite:  # not a render of ours, finished or not
        raise ValueError(f"{str(out)!r} already holds {', '.join(foreign)}, which rendering would replace; choose an "
                         "empty --out or pass overwrite=True / --overwrite")  # fmt: skip
    for path in finished:  # manifest.jsonl first: from here on the folder reads as unfinished
        path.unlink(missing_ok=True)
    # Clips already here are an earlier render's, finished or interrupted, or --overwrite allows replacing them: kept,
    # fewer clips or another format left some beside the new ones, for anything that reads the folder.
    if clips_held:
        stale = out / f".clips-replaced-{os.getpid()}"
        (out / "clips").rename(stale)
        shutil.rmtree(stale)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / RENDER_MARK).touch()  # an interrupted render may be rerun into this folder without --overwrite

    start = time.perf_counter()
    held = frozenset(combos)
    log.info("rendering %d %s clips into %s with %d worker(s)", num_clips, format, out, num_workers)
    pool = ThreadPoolExecutor(max_workers=num_workers)
    rows = []
    try:
        work = lambda i: _render_one(i, seed, out, format, held, captions_per_clip)  # noqa: E731
        for row in pool.map(work, range(num_clips)):
            rows.append(row)
            if len(rows) % max(1, num_clips // 10) == 0 or len(rows) == num_clips:
                log.info("rendered %d/%d clips", len(rows), num_clips)
    finally:  # on an error, drop the clips not yet started rather than render them all
        pool.shutdown(wait=True, cancel_futures=True)
    train = [r for r in rows if r["split"] == "train"]
    held_rows = [r for r in rows if r["split"] == "holdout"]
    got = {(r["color"], r["shape"], r["motion"]) for r in held_rows}
    missing = sorted(set(combos) - got, key=lambda c: label_of(*c))
    if missing:
        names = [" ".join(c) for c in missing]
        log.warning("%d holdout combination(s) got no clip (num_clips < 72?): %s", len(missing), names)
    if combos:
        atomic_write_text(out / "holdout.csv", _csv(held_rows))
        atomic_write_text(out / HOLDOUT_MANIFEST, _jsonl(held_rows))
    info = {
        "num_clips": num_clips, "seed": seed, "format": format, "captions_per_clip": captions_per_clip,
        "holdout": [" ".join(c) for c in combos],
        "num_train": len(train), "num_holdout": len(held_rows), "num_frames": NUM_FRAMES, "size": SIZE, "fps": FPS,
        "num_classes": NUM_CLASSES, "label": "(color * 3 + shape) * 4 + motion", "attributes": dict(ATTRIBUTES),
    }  # fmt: skip
    atomic_write_json(out / "dataset.json", info, indent=2)
    atomic_write_text(out / "manifest.csv", _csv(train))
    atomic_write_text(out / MANIFEST, _jsonl(train))  # last: marks the dataset complete
    seconds = time.perf_counter() - start
    rate = num_clips / seconds
    log.info("wrote %d train + %d held-out clips in %.1f s (%.1f clips/s)", len(train), len(held_rows), seconds, rate)
    holdout_manifest = out / HOLDOUT_MANIFEST if combos else None
    return RenderSummary(out / MANIFEST, holdout_manifest, len(train), len(held_rows), seconds)


def load_clip(path: str | os.PathLike) -> np.ndarray:
    """Reads a video file, or a folder of image frames (sorted by name), as (T, H, W, 3) uint8.

    Args:
        path: an mp4 (or any format :func:`core.video_io.read_video` reads), or a folder of frames.

    Raises:
        ValueError: the path is missing or unreadable, or a folder has no frames or frames of
            different sizes.
    """
    return read_video(path)


def dataset_holdout(folder: str | os.PathLike) -> list[str]:
    """The held-out combinations recorded in a rendered dataset's ``dataset.json`` ("green triangle up", ...).

    Raises:
        ValueError: no ``dataset.json``, or one that is not a rendered dataset's (not an object, or a ``holdout``
            that is not a list of valid combinations).
    """
    meta = Path(folder) / "dataset.json"
    if not meta.is_file():
        raise ValueError(f"{folder} has no dataset.json: is it a tools/make_shapes.py folder?")
    info = read_json(meta, "dataset file")
    holdout = info.get("holdout", []) if isinstance(info, dict) else None
    if not isinstance(holdout, list) or not all(isinstance(h, str) for h in holdout):
        raise ValueError(f"{meta} is not a tools/make_shapes.py dataset.json: 'holdout' must be a list of strings")
    parse_holdout(holdout)  # each a valid "color shape motion"
    return holdout


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``.jsonl`` manifest, with ``path`` resolved against the manifest's folder.

    Raises:
        ValueError: the file is missing, or a line is not JSON or lacks path, color, shape or motion.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"manifest {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:  # the codec's message did not name the file
        raise ValueError(f"manifest {str(path)!r} is not UTF-8 text (byte {err.start})") from None
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # JSON Lines: lines end at \n only
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{str(path)!r} line {n} is not JSON: {err}") from None
        if not isinstance(row, dict) or not {"path", "color", "shape", "motion"} <= set(row):
            raise ValueError(f"{str(path)!r} line {n} lacks path, color, shape or motion")
        for key in ("path", "color", "shape", "motion"):  # a null attribute was a TypeError in the analyzer
            if not isinstance(row[key], str) or not row[key]:
                raise ValueError(f"{str(path)!r} line {n}: {key} must be a non-empty string, got {row[key]!r}")
        rows.append({**row, "path": str(path.parent / row["path"])})
    return rows
