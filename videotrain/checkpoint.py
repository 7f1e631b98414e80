"""Training checkpoints: DeepSpeed engine state plus our own per-rank state, made visible
only once complete, pruned to the last K; and export to a plain safetensors directory.

Layout under ``<run>/checkpoints``::

    step_00000500/            DeepSpeed's files for that tag (model, optimizer, ZeRO shards)
        rank00000.json        per-rank state: step, data position, RNG states (JSON)
        rank00000.safetensors per-rank tensors: RNG byte states, EMA weights (rank 0)
        COMPLETE              written last, by rank 0, after every rank finished

A directory without ``COMPLETE`` is ignored by :func:`latest_complete` (a run killed while
saving resumes from the previous checkpoint) and removed at the next save.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from core.config import from_dict, load_yaml, save_config, to_dict
from core.files import atomic_write_text, read_json_object
from core.weights import load_state, save_state
from videotrain import distributed

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
_TAG = re.compile(r"^step_(\d{8})$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def complete_tags(ckpt_dir: Path) -> list[str]:
    """Tags with a ``COMPLETE`` marker, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    tags = [p.name for p in ckpt_dir.iterdir() if _TAG.match(p.name) and (p / MARKER).is_file()]
    return sorted(tags)


def latest_complete(ckpt_dir: Path) -> str | None:
    tags = complete_tags(ckpt_dir)
    return tags[-1] if tags else None


def save(
    engine,
    ckpt_dir: Path,
    step: int,
    rank: int,
    state: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    keep_last: int,
    config: Any,
) -> str:
    """Saves a checkpoint collectively; every rank must call it. Returns the tag."""
    tag = tag_for(step)
    if rank == 0 and (ckpt_dir / tag).exists():  # a leftover incomplete save of the same step
        shutil.rmtree(ckpt_dir / tag)
    distributed.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, save_latest=False)
    folder = ckpt_dir / tag
    save_state(tensors, folder / f"rank{rank:05d}.safetensors")
    atomic_write_text(folder / f"rank{rank:05d}.json", json.dumps(state))
    distributed.barrier()
    if rank == 0:
        save_config(config, folder / "train_config.yaml")
        atomic_write_text(folder / MARKER, f"{tag}\n")
        _prune(ckpt_dir, keep_last)
    distributed.barrier()
    return tag


def _prune(ckpt_dir: Path, keep_last: int) -> None:
    complete = complete_tags(ckpt_dir)
    newest = complete[-1]
    for p in ckpt_dir.iterdir():
        if not _TAG.match(p.name):
            continue
        stale = p.name not in complete and p.name < newest  # an older, incomplete save
        if stale or (p.name in complete[:-keep_last] if keep_last > 0 else False):
            shutil.rmtree(p, ignore_errors=True)


def check_resumable(folder: Path, config: Any, keys: tuple[str, ...] = ()) -> None:
    """ValueError when the checkpoint in ``folder`` was written for another ``model`` section than ``config``'s,
    or with other values of the dotted ``keys`` (settings a resumed run must keep, such as what splits the data).

    Resuming may change how long a run lasts or how it logs, but not the model: another architecture would
    fail inside DeepSpeed's loader, and one with the same weight shapes (other FSQ levels, another order
    list) would resume silently into a different token space.
    """
    saved_path = folder / "train_config.yaml"
    if not saved_path.is_file() or not hasattr(config, "model"):
        return
    saved_all, own_all = load_yaml(saved_path), to_dict(config)
    changes = []
    if isinstance(saved_all.get("model"), dict):
        saved, own = _identity(config.model, saved_all["model"]), _identity(config.model, own_all["model"])
        diff = sorted(k for k in set(saved) | set(own) if saved.get(k) != own.get(k))
        changes += [f"model.{k}: {saved.get(k)!r} -> {own.get(k)!r}" for k in diff]
    changes += _changed(saved_all, own_all, keys)
    if changes:
        raise ValueError(
            f"checkpoint {folder} was written with other settings ({'; '.join(changes)}): resume with its config, "
            "or use a new --out"
        )


_MISSING = object()


def changed_settings(folder: Path, config: Any, keys: tuple[str, ...]) -> list[str]:
    """``"key: before -> now"`` for each dotted key whose value in the checkpoint's ``train_config.yaml`` differs
    from ``config``'s (a key the checkpoint lacks counts as unchanged)."""
    saved_path = folder / "train_config.yaml"
    if not saved_path.is_file():
        return []
    return _changed(load_yaml(saved_path), to_dict(config), keys)


def _changed(saved_all: dict, own_all: dict, keys: tuple[str, ...]) -> list[str]:
    changes = []
    for key in keys:
        before, now = _dotted(saved_all, key), _dotted(own_all, key)
        if before is not _MISSING and before != now:
            changes.append(f"{key}: {before!r} -> {now!r}")
    return changes


def _identity(model_config: Any, data: dict) -> dict:
    """The fields of a model config (as a mapping) that define its weights: its ``weights_identity()`` (runtime
    settings such as the attention backend may change on resume), or every field."""
    if not hasattr(model_config, "weights_identity"):
        return data
    try:
        return from_dict(type(model_config), data, "checkpoint model").weights_identity()
    except ValueError:  # written by another version of the config: compare the mappings as they are
        return data


def _dotted(data: dict, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def load(engine, ckpt_dir: Path, tag: str, rank: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Loads engine state (module, optimizer, ZeRO shards) and this rank's own state."""
    try:
        path, _ = engine.load_checkpoint(
            str(ckpt_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
        )
    except distributed.DamagedCheckpointFile as err:  # the whole checkpoint goes: its engines' states belong together
        raise ValueError(f"{err}; remove {ckpt_dir / tag} to resume from the checkpoint before it") from None
    if path is None:
        raise ValueError(f"DeepSpeed could not load checkpoint {ckpt_dir / tag}")
    folder = ckpt_dir / tag
    return read_state(folder, rank), load_state(folder / f"rank{rank:05d}.safetensors")


def read_state(folder: Path, rank: int) -> dict[str, Any]:
    """This rank's JSON state in the checkpoint ``folder`` (step, world size, ZeRO stage, the task's own)."""
    state_file = folder / f"rank{rank:05d}.json"
    if not state_file.is_file():
        others = sorted(folder.glob("rank*.json"))
        saved = _read_json(others[0]).get("world_size") if others else None
        why = f"it was saved by {saved} processes" if saved is not None else "it holds no rank state at all"
        if saved is not None and saved > rank:  # the world size fits: the file itself is missing
            why = f"its world size ({saved}) fits, so the file is missing (an incomplete copy?)"
        raise ValueError(f"checkpoint {folder} has no state for rank {rank}: {why}")
    return _read_json(state_file)


def _read_json(path: Path) -> dict[str, Any]:
    """A rank's JSON state; a damaged one is a ValueError naming it and the checkpoint to remove."""
    try:
        return read_json_object(path, "checkpoint state")
    except ValueError as err:
        raise ValueError(f"{err}; remove {path.parent} to resume from the checkpoint before it") from None
