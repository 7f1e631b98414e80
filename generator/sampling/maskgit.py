"""MaskGIT-style sampling: units in order, each filled in by iterative parallel decoding.

Inside a unit every step predicts all masked tokens at once, keeps the most confident ones
and re-masks the rest, following the shared mask schedule so that the last step leaves
nothing masked. Confidences get Gumbel noise scaled by ``choice_temperature`` and annealed to
zero over the steps. The condition prefix is prefilled into the KV cache once, before the first
unit; a finished unit is committed to the cache (one clean pass) and becomes context for the next.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from generator.conditioning import Condition
from generator.sampling.config import SamplingConfig
from generator.sampling.context import DecodeContext, context_sequence, prepare_sampling
from generator.sampling.filtering import sample_logits
from generator.schedules import num_masked_after_step
from generator.transformer import Generator


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
            n = int((cur[0] == mask_id).sum())  # tokens this unit generates
            for s in range(steps):
                masked = cur == mask_id
                num_masked = int(masked[0].sum())
                if num_masked == 0:  # done early (more steps than tokens): the remaining steps draw nothing
                    bar.update(steps - s)
                    break
                logits = ctx.logits(cur, coords, keep=False, progress=(u + s / steps) / layout.num_units)
                sampled = sample_logits(logits, sampling, generator)
                conf = torch.log_softmax(logits, -1).gather(-1, sampled[..., None])[..., 0]
                anneal = sampling.choice_temperature * (1.0 - (s + 1) / steps)
                if anneal > 0:
                    u01 = torch.rand(conf.shape, generator=generator, device=conf.device).clamp(1e-20, 1 - 1e-7)
                    conf = conf + anneal * -torch.log(-torch.log(u01))
                conf = conf.masked_fill(~masked, float("inf"))  # fixed tokens are never re-masked
                cur = torch.where(masked, sampled, cur)
                keep_masked = min(num_masked_after_step(s, steps, n, sampling.mask_schedule), num_masked - 1)
                if keep_masked > 0:
                    lowest = torch.topk(conf, keep_masked, dim=-1, largest=False).indices
                    cur = cur.scatter(1, lowest, mask_id)
                bar.update(1)
            seq[:, a:b] = cur
            if u + 1 < layout.num_units:
                ctx.logits(cur, coords, keep=True, progress=(u + 1) / layout.num_units)
    bar.close()
    return layout.to_grid(seq)
