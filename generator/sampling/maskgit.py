"""MaskGIT-style sampling: units in order, each filled in by iterative parallel decoding.

Inside a unit every step predicts all masked tokens at once, keeps the most confident ones
and re-masks the rest, following the shared mask schedule so that the last step leaves
nothing masked. Confidences get Gumbel noise scaled by ``choice_temperature`` and annealed to
zero over the steps. The condition prefix is prefilled into the KV cache once, before the first
unit; a finished unit is committed to the cache (one clean pass) and becomes context for the next.

Optional predictor-corrector rounds (``SamplingConfig.corrector_rounds``) revisit a filled unit before it is
committed: tokens drawn in the same step are drawn independently, so two of them can start two objects, or a
colour the rest of the unit does not share. A round scores every generated token with the model, its own
position masked (a quarter of the unit at a time), and draws the least likely again given all the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from tqdm import tqdm

from generator.conditioning import Condition
from generator.sampling.config import SamplingConfig
from generator.sampling.context import DecodeContext, context_sequence, prepare_sampling
from generator.sampling.filtering import sample_logits
from generator.schedules import num_masked_after_step
from generator.transformer import Generator

CORRECTOR_GROUPS = 4  # a corrector round scores a unit's generated tokens a quarter at a time
CORRECTOR_DRAW_STEPS = 2  # ... and draws the re-masked ones again in this many steps


def sample_maskgit(
    model: Generator,
    cond: Condition,
    grid: tuple[int, int, int],
    *,
    order: str = "clip",
    context: torch.Tensor | None = None,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Samples a (B, t, h, w) token grid by MaskGIT decoding unit by unit.

    Args:
        model: a generator with style "maskgit".
        cond: B-row condition.
        grid: (t, h, w) to generate.
        order: 'token', 'cube', 'frame' or 'clip'; must be one the model supports.
        context: (B, t_c, h, w) ids of the first ``t_c`` latent frames to continue from (kept as
            given in the result), or None. Whole context units are committed to the cache before
            the first free unit; order 'clip' keeps the context tokens unmasked inside its one
            unit, as MAGVIT's frame prediction does.
        sampling: steps per unit, schedule, temperatures, top-k/p and CFG (None: ``SamplingConfig()``); with
            ``context``, its ``context_temperature`` when set.
        generator: RNG for token draws and Gumbel noise.
        use_cache: cache completed units (False recomputes the context every step).
        progress: show a progress bar.

    Returns:
        ids: (B, t, h, w) long.
    """
    sampling, layout = prepare_sampling(model, grid, order, sampling, "maskgit", context)
    B, L = cond.batch_size, layout.num_tokens
    device = model.device
    known, n_ctx = context_sequence(layout, None if context is None else context.to(device), B, whole_units=True)
    ctx = DecodeContext(model, cond, sampling, max_tokens=L, use_cache=use_cache)
    # The condition prefix is computed once; every step of every unit (order 'clip' included) attends to it.
    ctx.prefill()
    mask_id = model.config.mask_id
    steps = sampling.steps
    bar = tqdm(total=layout.num_units * steps, desc="sampling (maskgit)", disable=not progress, leave=False)
    with torch.inference_mode():  # the grid returned is built outside it: an ordinary tensor
        seq = torch.empty(B, L, dtype=torch.long, device=device)
        for u, (a, b) in enumerate(layout.bounds):
            coords = layout.coords[a:b]
            if b <= n_ctx and layout.num_units > 1:  # a whole context unit: committed as it is
                seq[:, a:b] = known[:, a:b]
                ctx.logits(seq[:, a:b], coords, keep=True, progress=u / layout.num_units)
                bar.update(steps)
                continue
            cur = torch.full((B, b - a), mask_id, dtype=torch.long, device=device)
            if known is not None:  # order 'clip': the context tokens are given, never masked
                cur = torch.where(known[:, a:b] >= 0, known[:, a:b], cur)
            free = cur[0] == mask_id  # (n,) the positions this unit generates
            done = (u + 1) / layout.num_units
            cur = _fill(ctx, cur, coords, sampling, generator, steps,
                        lambda s, u=u: (u + s / steps) / layout.num_units, bar.update)  # fmt: skip
            for _ in range(sampling.corrector_rounds):
                cur = _correct(ctx, cur, free, coords, sampling, generator, done)
            seq[:, a:b] = cur
            if u + 1 < layout.num_units:
                ctx.logits(cur, coords, keep=True, progress=done)
    bar.close()
    return layout.to_grid(seq)


def _fill(
    ctx: DecodeContext,
    cur: torch.Tensor,
    coords: torch.Tensor,
    sampling: SamplingConfig,
    generator: torch.Generator | None,
    steps: int,
    progress: Callable[[int], float],
    on_step: Callable[[int], object],
) -> torch.Tensor:
    """Fills the masked entries of ``cur`` (B, n) in ``steps`` MaskGIT steps; the others stay as they are."""
    mask_id = ctx.model.config.mask_id
    n = int((cur[0] == mask_id).sum())  # tokens to draw
    for s in range(steps):
        masked = cur == mask_id
        num_masked = int(masked[0].sum())
        if num_masked == 0:  # done early (more steps than tokens): the remaining steps draw nothing
            on_step(steps - s)
            break
        logits = ctx.logits(cur, coords, keep=False, progress=progress(s))
        sampled = sample_logits(logits, sampling, generator)
        conf = torch.log_softmax(logits, -1).gather(-1, sampled[..., None])[..., 0]
        anneal = sampling.choice_temperature * (1.0 - (s + 1) / steps)
        if anneal > 0:
            u01 = torch.rand(conf.shape, generator=generator, device=conf.device).clamp(1e-20, 1 - 1e-7)
            conf = conf + anneal * -torch.log(-torch.log(u01))
        big = torch.finfo(conf.dtype).max  # a huge choice_temperature overflows to inf, which ties with "fixed"
        conf = conf.nan_to_num(nan=-big, posinf=big, neginf=-big).masked_fill(~masked, float("inf"))  # fixed: kept
        cur = torch.where(masked, sampled, cur)
        keep_masked = min(num_masked_after_step(s, steps, n, sampling.mask_schedule), num_masked - 1)
        if keep_masked > 0:
            lowest = torch.topk(conf, keep_masked, dim=-1, largest=False).indices
            cur = cur.scatter(1, lowest, mask_id)
        on_step(1)
    return cur


def _correct(
    ctx: DecodeContext,
    cur: torch.Tensor,
    free: torch.Tensor,
    coords: torch.Tensor,
    sampling: SamplingConfig,
    generator: torch.Generator | None,
    progress: float,
) -> torch.Tensor:
    """One predictor-corrector round over a filled unit ``cur`` (B, n) whose generated positions are ``free`` (n,).

    Every generated token is scored by the (guided) model with a random quarter of the generated tokens
    masked, its own among them; the ``corrector_fraction`` least likely per row are masked again and drawn
    given all the others, in ``CORRECTOR_DRAW_STEPS`` steps without choice noise. Context tokens are never
    touched.
    """
    mask_id = ctx.model.config.mask_id
    positions = free.nonzero()[:, 0]  # (m,)
    m = positions.numel()
    if m == 0:
        return cur
    order = torch.randperm(m, generator=generator, device=generator.device if generator is not None else "cpu")
    logp = torch.full(cur.shape, float("inf"), device=cur.device)  # context positions are never chosen
    # tensor_split, not chunk: chunk(4) of 5 positions gave groups of 2, 2, 1 (40% masked at once, not a quarter)
    for group in positions[order.to(positions.device)].tensor_split(min(CORRECTOR_GROUPS, m)):
        probe = cur.clone()
        probe[:, group] = mask_id
        logits = ctx.logits(probe, coords, keep=False, progress=progress)[:, group]  # (B, g, V)
        logp[:, group] = torch.log_softmax(logits, -1).gather(-1, cur[:, group, None])[..., 0]
    k = max(1, round(sampling.corrector_fraction * m))
    lowest = torch.topk(logp, k, dim=-1, largest=False).indices  # (B, k)
    cur = cur.scatter(1, lowest, mask_id)
    no_noise = replace(sampling, choice_temperature=0.0)
    return _fill(ctx, cur, coords, no_noise, generator, CORRECTOR_DRAW_STEPS, lambda s: progress, lambda n: None)
