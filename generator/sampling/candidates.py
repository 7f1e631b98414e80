"""Ranking sampled candidates by how well their condition explains them, under the generator itself.

The score of a token sequence ``x`` under condition ``c`` is ``log p(x | c) - log p(x | null)``, both
teacher-forced through the GPT-style model with no guidance and no temperature: the log-likelihood ratio that
classifier-free guidance sharpens token by token (its implicit classifier), summed over the whole sequence.
Plain likelihood is no use here: for a prompt the model has never seen together (a held-out combination), the most
likely first frame is an empty one, background tokens being the easiest to predict; the ratio of an empty frame is
near zero, since the condition says nothing about background.
"""

from __future__ import annotations

import torch

from generator.conditioning import Condition
from generator.sampling.config import SamplingConfig
from generator.sampling.context import START_COORDS, DecodeContext
from generator.transformer import Generator
from generator.units import UnitLayout


@torch.no_grad()
def condition_scores(model: Generator, cond: Condition, layout: UnitLayout, seq: torch.Tensor) -> torch.Tensor:
    """``log p(seq | cond) - log p(seq | null)`` per row, in nats.

    Args:
        model: a GPT-style generator.
        cond: B-row condition (rows marked ``drop`` score 0).
        layout: the layout ``seq`` is ordered by: a whole grid, generated from its start (no context).
        seq: (B, L) token ids in ``layout``'s sequence order.

    Returns:
        (B,) float32 scores.
    """
    B, L = seq.shape
    if L != layout.num_tokens:
        raise ValueError(f"seq has {L} tokens, the layout {layout.num_tokens}")
    both = cond.with_null()  # rows 0..B-1 conditioned, B..2B-1 null
    ctx = DecodeContext(model, both, SamplingConfig(), max_tokens=L, use_cache=False)
    start = torch.full((2 * B, 1), model.config.start_id, dtype=torch.long, device=seq.device)
    ids = torch.cat([start, torch.cat([seq, seq])[:, :-1]], dim=1)  # (2B, L): the start token, then seq but its last
    coords = torch.cat([torch.tensor([START_COORDS]), layout.coords[:-1]])  # (L, 3)
    targets = layout.coords if model.config.target_positions else None  # each input predicts the next position
    logp = ctx.logits(ids, coords, keep=False, progress=0.0, targets=targets).log_softmax(-1)  # (2B, L, V)
    per_row = logp.gather(-1, torch.cat([seq, seq])[..., None])[..., 0].sum(1)  # (2B,)
    return per_row[:B] - per_row[B:]
