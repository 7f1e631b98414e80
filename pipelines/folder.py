"""What a pipeline folder holds, and the check before one is replaced.

A pipeline folder is ``pipeline.yaml``, ``tokenizer/``, one folder per generator, the text encoder's folder when
``text_encoder.path`` is relative, and optionally ``holdout.json``. Replacing a folder (``make_pipeline --force``,
``save_pretrained`` onto an existing pipeline) writes a whole new one in its place, so anything else in it (a model
card, contact sheets) would be lost: such a folder is refused, naming what it holds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

from core.weights import load_config
from pipelines.config import PipelineConfig

PIPELINE_CONFIG = "pipeline.yaml"
HOLDOUT_FILE = "holdout.json"  # held-out attribute combinations of the training data, read by eval_shapes
LOAD_TRIES = 3

log = logging.getLogger(__name__)
T = TypeVar("T")


def load_pipeline_config(directory: str | os.PathLike) -> PipelineConfig:
    """The :class:`PipelineConfig` of a pipeline folder (its ``pipeline.yaml``), without loading any weights."""
    hint = ": is it a tokvid pipeline? (tools/make_pipeline.py assembles one from a tokenizer and generator exports)"
    return load_config(PipelineConfig, directory, PIPELINE_CONFIG, hint)


def owned_entries(config: PipelineConfig) -> set[str]:
    """The top-level names a pipeline folder of ``config`` holds."""
    names = {PIPELINE_CONFIG, HOLDOUT_FILE, "tokenizer"}
    names |= {PurePosixPath(sub).parts[0] for sub in config.generators.values()}
    encoder = relative_text_encoder(config)
    return names | ({PurePosixPath(encoder).parts[0]} if encoder is not None else set())


def relative_text_encoder(config: PipelineConfig) -> str | None:
    """``text_encoder.path`` when it names a folder inside the pipeline (relative, no package), else None."""
    if config.text_encoder is None or config.text_encoder_package:
        return None
    path = PurePosixPath(config.text_encoder.path)
    return None if path.is_absolute() or not path.parts else str(path)


def check_replaceable(out: str | os.PathLike, config: PipelineConfig | None = None) -> None:
    """ValueError when ``out`` is a file, a folder that is neither empty nor a pipeline (no ``pipeline.yaml``), or a
    pipeline folder that also holds entries no pipeline writes (neither the old one's, as its ``pipeline.yaml``
    names them, nor ``config``'s): replacing it would delete what was never a pipeline's.
    ``make_pipeline --force`` over ``models/shapes`` deleted its model card and failure sheets."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{str(out)!r} is a file, not a pipeline folder: give a folder")
    if not out.is_dir():
        return
    entries = {p.name for p in out.iterdir() if not p.name.startswith(".")}  # hidden: temps of an earlier write
    if not entries:
        return
    if PIPELINE_CONFIG not in entries:
        raise ValueError(
            f"{str(out)!r} is a folder of other files, not a pipeline (no {PIPELINE_CONFIG}): "
            "give a new or empty folder, or a pipeline folder to replace"
        )
    owned = owned_entries(config) if config is not None else {PIPELINE_CONFIG, HOLDOUT_FILE, "tokenizer"}
    try:
        owned |= owned_entries(load_pipeline_config(out))
    except ValueError:  # a damaged pipeline.yaml: only the names every pipeline has
        pass
    others = sorted(entries - owned)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ValueError(
            f"{str(out)!r} also holds {shown}, which a pipeline does not write: replacing the folder would delete "
            "them; move them, or give another folder"
        )


def _identity(directory: Path) -> tuple[int, int, int] | None:
    """The folder's device, inode and modification time (a swapped-in folder is another inode), or None if gone."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def load_unchanged(directory: Path, load: Callable[[Path], T]) -> T:
    """``load(directory)``, run again while the folder changes under it.

    A pipeline's parts are read one after another, so a folder replaced meanwhile (``make_pipeline --force`` swaps
    in a whole new one) gave one build's tokenizer with another's generators, silently. A load that sees the folder
    change starts over; after :data:`LOAD_TRIES` tries it is a ValueError.
    """
    for _ in range(LOAD_TRIES):
        before = _identity(directory)
        loaded = load(directory)
        if before is not None and _identity(directory) == before:
            return loaded
        log.info("%s was replaced while it loaded; loading it again", directory)
    raise ValueError(f"the pipeline folder {str(directory)!r} kept being replaced while it loaded; try again")
