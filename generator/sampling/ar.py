"""GPT-style sampling: one token at a time in the layout's order, with a static KV cache."""

from __future__ import annotations

import torch
from tqdm import tqdm

from generator.conditioning import Condition
from generator.sampling.config import SamplingConfig
from generator.sampling.context import DecodeContext, prepare_sampling
from generator.sampling.filtering import sample_logits
from generator.transformer import Generator

START_COORDS = (-1, -1, -1)  # the start token sits with the prefix: unrotated


def sample_ar(
    model: Generator,
    cond: Condition,
    grid: tuple[int, int, int],
    *,
    order: str = "token",
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Samples a (B, t, h, w) token grid autoregressively.

    The condition prefix and the start token are prefilled in one pass; each later step feeds
    one token. With ``t`` beyond the model's ``max_grid`` (orders 'token' and 'frame'), a
    sliding window of latent frames keeps positions in the trained range.

    Args:
        model: a generator with style "ar".
        cond: B-row condition.
        grid: (t, h, w) to generate.
        order: unit order ('token', 'cube' or 'frame'); must be one the model supports.
        sampling: temperature, top-k/p and CFG settings (None: ``SamplingConfig()``).
        generator: RNG for sampling.
        use_cache: use the static KV cache (False recomputes the context every step).
        progress: show a progress bar.

    Returns:
        ids: (B, t, h, w) long.
    """
    sampling, layout = prepare_sampling(model, grid, order, sampling, "ar")
    B, L = cond.batch_size, layout.num_tokens
    device = model.device
    frame_tokens = grid[1] * grid[2]
    max_tokens = 1 + min(L, model.config.max_grid[0] * frame_tokens)
    ctx = DecodeContext(model, cond, sampling, max_tokens=max_tokens, use_cache=use_cache)
    frame_of = layout.coords[:, 0].tolist()  # latent frame of each position, read once
    # inference_mode: no autograd bookkeeping in the ~L * depth * 20 small ops of the loop. The
    # returned grid is built outside it, so it is an ordinary tensor.
    with torch.inference_mode():
        seq = torch.empty(B, L, dtype=torch.long, device=device)
        prev = torch.full((B, 1), model.config.start_id, dtype=torch.long, device=device)
        prev_coords = torch.tensor([START_COORDS])
        for i in tqdm(range(L), desc="sampling (ar)", disable=not progress, leave=False):
            ctx.ensure_window(frame_of[i])
            logits = ctx.logits(prev, prev_coords, keep=True, progress=i / L)[:, -1]
            seq[:, i] = sample_logits(logits, sampling, generator)
            prev, prev_coords = seq[:, i : i + 1], layout.coords[i : i + 1]
    return layout.to_grid(seq)
