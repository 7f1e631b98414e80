"""One optimizer config and pure learning-rate schedules for every training task.

:class:`OptimConfig` describes an AdamW (a torch optimizer that DeepSpeed is handed), its
warmup-then-decay schedule, clipping and gradient accumulation. The schedule functions are pure:
step in, factor out, so tests and plots call them directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW with linear warmup, then ``schedule`` decay towards ``min_lr_ratio * lr`` at ``run.steps`` (see
    :func:`lr_at`).

    Attributes:
        lr: peak learning rate.
        betas / eps / weight_decay: AdamW's. Weight decay applies to the weights of linear and convolution
            layers only (:func:`decays`): biases, norms, embedding tables and free parameters are not decayed.
            A resumed run keeps all three (the optimizer's state holds them).
        warmup_steps: linear warmup from ``lr / warmup_steps`` to ``lr``.
        min_lr_ratio: the final learning rate as a fraction of ``lr``.
        schedule: "cosine", "linear" or "constant" (constant ignores ``min_lr_ratio``).
        grad_clip: global gradient-norm clipping (0 = off).
        grad_accum: micro-batches per optimizer step, each weighted equally (for MaskGIT, whose loss is a
            micro-batch's mean over its own masked tokens, not exactly one batch grad_accum times larger).
    """

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.05
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    grad_clip: float = 1.0
    grad_accum: int = 1

    def __post_init__(self) -> None:
        # `not x >= 0` also refuses NaN, which passed `x < 0` and made every learning rate NaN
        if not (self.lr >= 0 and math.isfinite(self.lr)) or self.warmup_steps < 0 or not self.grad_clip >= 0:
            raise ValueError(
                f"optim.lr, optim.warmup_steps and optim.grad_clip must be finite and >= 0, got "
                f"{self.lr}, {self.warmup_steps}, {self.grad_clip}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1) or not self.eps > 0 or not self.weight_decay >= 0:
            raise ValueError(
                f"optim.betas must lie in [0, 1), optim.eps > 0 and optim.weight_decay >= 0, got "
                f"{list(self.betas)}, {self.eps}, {self.weight_decay}"
            )
        if self.grad_accum < 1:
            raise ValueError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


def _decay_progress(step: int, warmup: int, total: int) -> float:
    """Fraction of the decay phase done at ``step``, in [0, 1]."""
    return min(1.0, (step - warmup) / max(1, total - warmup))


def lr_cosine(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then half a cosine down to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = _decay_progress(step, warmup, total)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_linear(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then a straight line down to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 1.0 - (1 - min_ratio) * _decay_progress(step, warmup, total)


def lr_constant(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then the peak learning rate."""
    del total, min_ratio
    return (step + 1) / warmup if step < warmup else 1.0


SCHEDULES: dict[str, Callable[..., float]] = {"cosine": lr_cosine, "linear": lr_linear, "constant": lr_constant}


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) in a run of ``total_steps``.

    The decay reaches ``min_lr_ratio * lr`` at step ``total_steps``, one past the last step run (as the common
    warmup-cosine schedules do): the last step runs at a rate just above it.
    """
    factor = SCHEDULES[cfg.schedule](step, warmup=cfg.warmup_steps, total=total_steps, min_ratio=cfg.min_lr_ratio)
    return cfg.lr * factor


def decays(owner: nn.Module, param: torch.Tensor) -> bool:
    """Whether weight decay applies to ``param`` of module ``owner``: the weight matrices and kernels of linear and
    convolution layers yes; biases, norms, embedding tables and free parameters (learned null conditions,
    positional tables, a learned VQ codebook) no. Decided by the module's type: a name test ("emb" in the path)
    also matched the linear projections inside a ``cond_emb`` module."""
    return isinstance(owner, (nn.Linear, nn.modules.conv._ConvNd)) and param is owner.weight


def build_adamw(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """An AdamW over ``model``'s trainable parameters, in two groups (decayed, not decayed)."""
    named, seen = [], set()
    for owner in model.modules():  # each parameter once, with the module that holds it
        for p in owner.parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                named.append((owner, p))
    groups = [
        {"params": [p for owner, p in named if decays(owner, p)], "weight_decay": cfg.weight_decay},
        {"params": [p for owner, p in named if not decays(owner, p)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
