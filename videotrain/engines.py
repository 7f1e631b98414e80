"""Small pieces of training-run state shared by the trainers, next to :mod:`videotrain.distributed`
and :mod:`videotrain.checkpoint`: several DeepSpeed engines checkpointed as one, buffers kept equal
across data-parallel ranks, and an environment restored after an in-process run.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class EngineGroup:
    """Several DeepSpeed engines that :mod:`videotrain.checkpoint` saves and loads as one.

    ``checkpoint.save`` / ``checkpoint.load`` take one engine; this gives them one. The main
    engine writes its files under ``<ckpt_dir>/<tag>/`` as usual and each extra engine under
    ``<ckpt_dir>/<tag>/<name>/``, so the ``COMPLETE`` marker that ``checkpoint.save`` writes
    after this returns covers every engine, and pruning a tag removes them all.

    Args:
        main: the engine whose files sit directly in the tag folder.
        extras: name -> engine; a name is a sub-folder of the tag folder.
    """

    def __init__(self, main: Any, **extras: Any) -> None:
        self.main, self.extras = main, extras

    def save_checkpoint(self, save_dir: str, tag: str, save_latest: bool = False) -> None:
        """Collective: every rank calls it, like ``DeepSpeedEngine.save_checkpoint``."""
        self.main.save_checkpoint(save_dir, tag=tag, save_latest=save_latest)
        for name, engine in self.extras.items():
            engine.save_checkpoint(str(Path(save_dir) / tag), tag=name, save_latest=False)

    def load_checkpoint(self, load_dir: str, tag: str, **kwargs: Any) -> tuple[str | None, Any]:
        """Loads every engine; an extra engine with no folder in the checkpoint starts fresh.

        Returns:
            the main engine's ``(path, client_state)``; path is None if it could not load.

        Raises:
            ValueError: an extra engine's folder exists but DeepSpeed could not load it.
        """
        path, client = self.main.load_checkpoint(load_dir, tag=tag, **kwargs)
        if path is None:
            return path, client
        for name, engine in self.extras.items():
            folder = Path(load_dir) / tag / name
            if not folder.is_dir():  # e.g. adversarial training switched on after a warm-up run
                log.warning("checkpoint %s has no %s state: it starts from scratch", tag, name)
                continue
            sub, _ = engine.load_checkpoint(str(folder.parent), tag=name, **kwargs)
            if sub is None:
                raise ValueError(f"DeepSpeed could not load the {name} engine from {folder}")
        return path, client


def persistent_buffers(*modules: nn.Module) -> list[torch.Tensor]:
    """The floating-point buffers that ``modules`` save in their state dicts.

    These are state a forward may update (a VQ codebook and its EMAs); non-persistent
    buffers are constants.
    """
    return [
        b
        for m in modules
        for sub in m.modules()
        for name, b in sub.named_buffers(recurse=False)
        if b.dtype.is_floating_point and name not in sub._non_persistent_buffers_set
    ]


@torch.no_grad()
def average_buffers(*modules: nn.Module) -> None:
    """All-reduces the floating-point buffers of ``modules`` to their mean over ranks.

    Statistics that a module updates in its forward (a VQ codebook's EMAs, LeCam's EMAs) would
    otherwise drift apart on ranks that see different data; averaged after every step they stay
    identical, so rank 0's checkpoint is every rank's state and resume is exact. Only
    :func:`persistent_buffers` take part. One collective for all of them; a no-op on one
    process or without such buffers.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    if world == 1:
        return
    bufs = persistent_buffers(*modules)
    if not bufs:
        return
    flat = torch.cat([b.detach().double().reshape(-1) for b in bufs])  # (N,)
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for b in bufs:
        n = b.numel()
        b.copy_(flat[offset : offset + n].view_as(b).to(b.dtype))
        offset += n


@contextlib.contextmanager
def restored_env(keys: tuple[str, ...] = DIST_ENV) -> Iterator[None]:
    """Restores ``keys`` of ``os.environ`` on exit.

    ``distributed.init_distributed`` fills RANK, MASTER_PORT, ... for a bare single process;
    a trainer called in-process (a test, a notebook) should not leave them behind for the next
    run or a child process.
    """
    saved = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
