"""GPT-style sampling: one token at a time in the layout's order, with a static KV cache."""

from __future__ import annotations

from dataclasses import replace

import torch
from tqdm import tqdm

from generator.conditioning import Condition
from generator.sampling.candidates import condition_scores
from generator.sampling.config import SamplingConfig
from generator.sampling.context import (
    START_COORDS,
    DecodeContext,
    StepTables,
    context_sequence,
    prepare_sampling,
)
from generator.sampling.filtering import sample_logits
from generator.transformer import Generator
from generator.units import UnitLayout, make_layout

__all__ = ["START_COORDS", "sample_ar"]


def sample_ar(
    model: Generator,
    cond: Condition,
    grid: tuple[int, int, int],
    *,
    order: str = "token",
    context: torch.Tensor | None = None,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Samples a (B, t, h, w) token grid autoregressively.

    The condition prefix, the start token and any context tokens are prefilled in one pass; each
    later step feeds one token.

    Args:
        model: a generator with style "ar".
        cond: B-row condition.
        grid: (t, h, w) to generate.
        order: unit order ('token', 'cube' or 'frame'); must be one the model supports.
        context: (B, t_c, h, w) ids of the first ``t_c`` latent frames to continue from (kept as
            given in the result), or None; the order's units must not cross the context boundary.
        sampling: temperature, top-k/p and CFG settings (None: ``SamplingConfig()``); with ``context``,
            its ``context_temperature`` when set. With ``first_frame_candidates`` > 1, no ``context`` and a
            condition not all null, the first latent frame is drawn that many times per row and the best by
            :func:`generator.sampling.candidates.condition_scores` is kept; the rest continues from it, at the
            same temperature, as if it had been sampled once.
        generator: RNG for sampling.
        use_cache: use the static KV cache (False recomputes the context every step).
        progress: show a progress bar.

    Returns:
        ids: (B, t, h, w) long.
    """
    sampling, layout = prepare_sampling(model, grid, order, sampling, "ar", context)
    known, n_ctx = context_sequence(layout, context, cond.batch_size, whole_units=False)
    # One bar over the grid's tokens to generate: a step of the candidates' first frame counts one token, as does
    # each later step.
    with tqdm(total=layout.num_tokens - n_ctx, desc="sampling (ar)", disable=not progress, leave=False) as bar:
        if sampling.first_frame_candidates > 1 and context is None and not _all_null(cond):
            first = _best_first_frame(model, cond, layout, sampling, generator, use_cache, bar)  # (B, 1, h, w)
            if grid[0] == 1:
                return first
            # the rest continues from it, at the prompt's temperature (not the after-context one)
            sampling = replace(sampling, first_frame_candidates=1, context_temperature=None)
            known, n_ctx = context_sequence(layout, first, cond.batch_size, whole_units=False)
        seq = _decode(model, cond, layout, known, n_ctx, sampling, generator, use_cache, bar)  # (B, L)
    return layout.to_grid(seq)


def _decode(
    model: Generator,
    cond: Condition,
    layout: UnitLayout,
    known: torch.Tensor | None,
    n_ctx: int,
    sampling: SamplingConfig,
    generator: torch.Generator | None,
    use_cache: bool,
    bar: tqdm,
) -> torch.Tensor:
    """(B, L) ids in sequence order: the first ``n_ctx`` from ``known``, the rest sampled one token a step."""
    B, L = cond.batch_size, layout.num_tokens
    device = model.device
    ctx = DecodeContext(model, cond, sampling, max_tokens=1 + L, use_cache=use_cache)
    # inference_mode: no autograd bookkeeping in the ~L * depth * 20 small ops of the loop. The
    # returned ids are copied outside it, so they are an ordinary tensor.
    with torch.inference_mode():
        seq = torch.empty(B, L, dtype=torch.long, device=device)
        start = torch.full((B, 1), model.config.start_id, dtype=torch.long, device=device)
        # Each input predicts the next position of the layout (used by models with target_positions).
        targets = layout.coords if model.config.target_positions else None
        prev, prev_coords = start, torch.tensor([START_COORDS])
        if n_ctx:  # the start token and the whole context in one prefill
            seq[:, :n_ctx] = known[:, :n_ctx]
            prev = torch.cat([start, seq[:, :n_ctx]], dim=1)
            prev_coords = torch.cat([prev_coords, layout.coords[:n_ctx]])
        # The first step feeds the start token (and any context) through the model's forward pass, which fills
        # the cache; every later step feeds one token through the lean decode_step, looking its tables up.
        tables = StepTables.build(model, layout) if use_cache else None
        for i in range(n_ctx, L):
            if use_cache and i > n_ctx:
                logits = ctx.step_logits(prev, tables, i - 1, progress=i / L)
            else:
                step_targets = None if targets is None else targets[i + 1 - prev.shape[1] : i + 1]
                logits = ctx.logits(prev, prev_coords, keep=True, progress=i / L, targets=step_targets)[:, -1]
            seq[:, i] = sample_logits(logits, sampling, generator)
            prev, prev_coords = seq[:, i : i + 1], layout.coords[i : i + 1]
            bar.update()
    return seq.clone()


def _all_null(cond: Condition) -> bool:
    return cond.drop is not None and bool(cond.drop.all())


def _best_first_frame(
    model: Generator,
    cond: Condition,
    layout: UnitLayout,
    sampling: SamplingConfig,
    generator: torch.Generator | None,
    use_cache: bool,
    bar: tqdm,
) -> torch.Tensor:
    """(B, 1, h, w): of ``sampling.first_frame_candidates`` first latent frames drawn per row, the one with the
    highest condition score."""
    k, (_, h, w) = sampling.first_frame_candidates, layout.grid
    B = cond.batch_size
    rows = cond.repeat_interleave(k)  # (B * k) rows: row b's candidates side by side
    first = make_layout((1, h, w), layout.order, model.config.cube_size)  # the first frame as a grid of its own
    seq = _decode(model, rows, first, None, 0, sampling, generator, use_cache, bar)  # (B * k, h * w)
    scores = condition_scores(model, rows, first, seq).view(B, k)
    best = scores.argmax(dim=1)  # (B,)
    ids = first.to_grid(seq)  # (B * k, 1, h, w)
    return ids.view(B, k, 1, h, w)[torch.arange(B, device=ids.device), best]
