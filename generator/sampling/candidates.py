"""Ranking sampled candidates by how well their condition explains them, under the generator itself.

The score of a token sequence ``x`` under condition ``c`` is ``log p(x | c) - log p(x | null)``, both
teacher-forced through the GPT-style model (:func:`generator.objectives.next_token_logits`, the pass training
uses) with no guidance and no temperature: the log-likelihood ratio that
classifier-free guidance sharpens token by token (its implicit classifier), summed over the whole sequence.
Plain likelihood is no use here: for a prompt the model has never seen together (a held-out combination), the most
likely first frame is an empty one, background tokens being the easiest to predict; the ratio of an empty frame is
near zero, since the condition says nothing about background.
"""

from __future__ import annotations

import torch

from generator.conditioning import Condition
from generator.objectives import next_token_logits
from generator.transformer import Generator
from generator.units import UnitLayout

SCORE_ROWS = 32  # sequences scored per forward pass: 64 rows of (L, vocabulary) logits, ~72 MB for the shapes model


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
    if cond.batch_size != B:
        raise ValueError(f"the condition has {cond.batch_size} rows, seq {B}")
    scores = []
    for lo in range(0, B, SCORE_ROWS):  # the logits of 2 * SCORE_ROWS rows at a time: (rows, L, V) floats
        part = seq[lo : lo + SCORE_ROWS]
        n = part.shape[0]
        both = cond.rows(lo, lo + n).with_null()  # rows 0..n-1 conditioned, n..2n-1 null
        twice = torch.cat([part, part])  # (2n, L)
        logp = next_token_logits(model, twice, both, layout).float().log_softmax(-1)  # (2n, L, V)
        per_row = logp.gather(-1, twice[..., None])[..., 0].sum(1)  # (2n,)
        scores.append(per_row[:n] - per_row[n:])
    return torch.cat(scores)
