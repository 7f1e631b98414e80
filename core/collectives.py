"""Keeping state that a model updates outside autograd equal on every data-parallel rank.

Gradients are averaged by the training engine, but buffers a module updates in its forward (a VQ codebook's
EMA statistics, its dead-code restarts) are not: without these calls every rank drifts to its own codebook
and the checkpoint keeps rank 0's. Both are no-ops in a single process or without an initialised
``torch.distributed`` process group, so models stay usable anywhere. Every rank must make the same calls
in the same order (they are collectives).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the default group; 1 without an initialised ``torch.distributed``."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mean_across_ranks_(tensor: torch.Tensor) -> torch.Tensor:
    """Replaces ``tensor`` in place by its mean over all ranks; returns it."""
    n = world_size()
    if n > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(n)
    return tensor


def broadcast_from_first_(tensor: torch.Tensor) -> torch.Tensor:
    """Replaces ``tensor`` in place by rank 0's; returns it."""
    if world_size() > 1:
        dist.broadcast(tensor, src=0)
    return tensor
