"""Training objectives for the generators; they live outside the model.

- GPT-style: next-token cross-entropy over the layout's sequence, after a start token.
- MaskGIT-style: masked-token cross-entropy, with one mask ratio per unit drawn from the
  shared schedule. With several units, earlier units are given as a clean context stream
  (see :func:`generator.units.two_stream_mask`); ``context_mask_ratio`` optionally masks part
  of that context as a training augmentation.
Both apply condition dropout for classifier-free guidance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from generator.conditioning import Condition
from generator.schedules import SCHEDULES, training_mask
from generator.transformer import Generator
from generator.units import ORDERS, UnitLayout, causal_mask, make_layout, two_stream_mask


@dataclass(frozen=True, kw_only=True)
class ObjectiveConfig:
    """Loss settings.

    Attributes:
        orders: unit orders to train on, drawn uniformly per batch (empty = the model's orders).
        cond_dropout: probability of replacing a row's condition by the null condition.
        mask_schedule: MaskGIT schedule for drawing mask ratios.
        context_mask_ratio: MaskGIT: fraction of clean-context tokens masked (0 = clean context).
        label_smoothing: cross-entropy label smoothing.
    """

    orders: tuple[str, ...] = ()
    cond_dropout: float = 0.1
    mask_schedule: str = "cosine"
    context_mask_ratio: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        # written so that NaN fails too
        if not 0.0 <= self.cond_dropout <= 1.0:
            raise ValueError(f"objective.cond_dropout must be in [0, 1], got {self.cond_dropout}")
        if not 0.0 <= self.context_mask_ratio < 1.0:
            raise ValueError(f"objective.context_mask_ratio must be in [0, 1), got {self.context_mask_ratio}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"objective.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mask_schedule not in SCHEDULES:
            raise ValueError(f"objective.mask_schedule must be one of {sorted(SCHEDULES)}, got {self.mask_schedule!r}")
        unknown = [o for o in self.orders if o not in ORDERS]
        if unknown:
            raise ValueError(f"objective.orders: unknown order(s) {unknown}; choose from {list(ORDERS)}")


@dataclass
class LossOutput:
    """A scalar loss and detached statistics (``acc``: top-1 accuracy on predicted tokens)."""

    loss: torch.Tensor
    stats: dict[str, torch.Tensor]


def drop_condition(cond: Condition, p: float, generator: torch.Generator | None) -> Condition:
    """Marks each row dropped with probability ``p`` (rows already dropped stay dropped)."""
    if p <= 0:
        return cond
    B = cond.batch_size
    drop = torch.rand(B, generator=generator) < p
    drop = drop.to(cond.device)
    if cond.drop is not None:
        drop = drop | cond.drop
    return Condition(labels=cond.labels, text=cond.text, text_mask=cond.text_mask, drop=drop)


def next_token_logits(model: Generator, seq: torch.Tensor, cond: Condition, layout: UnitLayout) -> torch.Tensor:
    """(B, L, V) logits of a GPT-style model for every position of ``seq`` (B, L, in ``layout``'s order) given the
    start token and the positions before it: teacher forcing, one causal pass."""
    B, L = seq.shape
    start = torch.full((B, 1), model.config.start_id, dtype=seq.dtype, device=seq.device)
    inputs = torch.cat([start, seq[:, :-1]], dim=1)
    coords = torch.cat([torch.full((1, 3), -1, dtype=torch.long), layout.coords[:-1]])  # the start token: unrotated
    return model(inputs, cond, coords=coords, mask=causal_mask(L, seq.device), targets=layout.coords)


def ar_loss(model: Generator, ids: torch.Tensor, cond: Condition, order: str, cfg: ObjectiveConfig) -> LossOutput:
    """Next-token cross-entropy for a (B, t, h, w) grid in ``order``."""
    layout = make_layout(tuple(ids.shape[1:]), order, model.config.cube_size)
    seq = layout.to_sequence(ids)  # (B, L)
    logits = next_token_logits(model, seq, cond, layout)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), seq.flatten(), label_smoothing=cfg.label_smoothing)
    acc = (logits.argmax(-1) == seq).float().mean()
    return LossOutput(loss, {"acc": acc.detach()})


def maskgit_loss(
    model: Generator,
    ids: torch.Tensor,
    cond: Condition,
    order: str,
    cfg: ObjectiveConfig,
    generator: torch.Generator | None,
) -> LossOutput:
    """Masked-token cross-entropy for a (B, t, h, w) grid with units of ``order``: the mean over this batch's masked
    tokens, whose count varies with the drawn ratios (so accumulated micro-batches, and ranks, count equally rather
    than per token)."""
    layout = make_layout(tuple(ids.shape[1:]), order, model.config.cube_size)
    seq = layout.to_sequence(ids)
    B, L = seq.shape
    mask_id = model.config.mask_id
    unit_of = layout.unit_of.to(seq.device)
    masked = training_mask(layout.unit_of, B, cfg.mask_schedule, generator).to(seq.device)  # (B, L)
    noisy = seq.masked_fill(masked, mask_id)
    if layout.num_units == 1:
        inputs, coords = noisy, layout.coords
        attn = torch.ones(L, L, dtype=torch.bool, device=seq.device)
    else:
        context = seq
        if cfg.context_mask_ratio > 0:
            drop = torch.rand(B, L, generator=generator).to(seq.device) < cfg.context_mask_ratio
            context = seq.masked_fill(drop, mask_id)
        inputs = torch.cat([context, noisy], dim=1)  # (B, 2L): clean stream, masked stream
        coords = torch.cat([layout.coords, layout.coords])
        attn = two_stream_mask(unit_of)
    logits = model(inputs, cond, coords=coords, mask=attn)[:, -L:]
    target = seq[masked]
    picked = logits[masked].float()
    loss = F.cross_entropy(picked, target, label_smoothing=cfg.label_smoothing)
    acc = (picked.argmax(-1) == target).float().mean()
    return LossOutput(loss, {"acc": acc.detach(), "mask_ratio": masked.float().mean().detach()})


def processed_length(model: Generator, grid: tuple[int, int, int], order: str) -> int:
    """Positions the model runs on for one clip in ``order`` during training: the condition prefix plus the
    video tokens, twice for MaskGIT with several units (its clean context is a second stream)."""
    units = make_layout(grid, order, model.config.cube_size).num_units
    streams = 2 if model.config.style == "maskgit" and units > 1 else 1
    return model.prefix_len + streams * math.prod(grid)


def train_flops_per_clip(model: Generator, grid: tuple[int, int, int], orders: tuple[str, ...]) -> float:
    """Training FLOPs (forward and backward) for one clip, averaged over ``orders`` (drawn uniformly per batch,
    as :func:`generator_loss` does); ``Generator.flops_per_token`` at the length each order processes."""
    lengths = [processed_length(model, grid, order) for order in orders]
    return sum(model.flops_per_token(n) * n for n in lengths) / len(lengths)


def generator_loss(
    model: Generator, ids: torch.Tensor, cond: Condition, cfg: ObjectiveConfig, generator: torch.Generator | None = None
) -> LossOutput:
    """The model's objective on a batch: drops conditions, draws an order, dispatches by style.

    Args:
        model: the generator.
        ids: (B, t, h, w) token grids.
        cond: B-row condition.
        cfg: objective settings.
        generator: RNG for dropout, order and masks.
    """
    orders = cfg.orders or model.config.orders
    bad = [o for o in orders if o not in model.config.orders]
    if bad:
        raise ValueError(f"objective orders {bad} are not among the model's orders {list(model.config.orders)}")
    model.check_grid(tuple(ids.shape[1:]), "clip")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"token ids must be integers, got {ids.dtype}")
    lo, hi = (int(v) for v in ids.aminmax())
    if lo < 0 or hi >= model.config.vocab_size:  # the mask or start id as a target was an IndexError (on CUDA a
        # device assert), and unmasked in a MaskGIT grid it trained silently as a clean context token
        raise ValueError(f"token ids must be codes in [0, {model.config.vocab_size}), got ids in [{lo}, {hi}]")
    ids = ids.long()  # int32 or int16 ids (numpy's, a compact cache's) passed the check, then failed inside torch
    order = orders[int(torch.randint(len(orders), (), generator=generator))] if len(orders) > 1 else orders[0]
    cond = drop_condition(cond, cfg.cond_dropout, generator)
    if model.config.style == "ar":
        out = ar_loss(model, ids, cond, order, cfg)
    else:
        out = maskgit_loss(model, ids, cond, order, cfg, generator)
    return out
