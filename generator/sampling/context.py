"""The logits function samplers call: condition, kept context, CFG and the KV cache.

A sampler asks :meth:`DecodeContext.logits` for the logits of some new tokens given
everything generated so far. ``keep=True`` makes the new tokens part of the context (a GPT
step, or a finished MaskGIT unit); ``keep=False`` only probes (a MaskGIT refinement step).
With a cache only the new tokens are computed; without one the whole context is recomputed
every call, which is the reference the cache is tested against. For videos longer than the
model's ``max_grid`` in time, :meth:`ensure_window` slides a window of whole latent frames:
older frames are dropped and the remaining ones re-based to time 0, so positions stay in the
range the model was trained on.
"""

from __future__ import annotations

import torch

from generator.conditioning import Condition
from generator.sampling.config import SamplingConfig
from generator.transformer import Generator
from generator.units import UnitLayout, block_causal_mask, causal_mask, check_order, make_layout


def prepare_sampling(
    model: Generator,
    grid: tuple[int, int, int],
    order: str,
    sampling: SamplingConfig | None,
    style: str,
) -> tuple[SamplingConfig, UnitLayout]:
    """The checks and setup every sampler starts with.

    Args:
        model: the generator; its style must be ``style``.
        grid: (t, h, w) to generate; checked against the model's ``max_grid``.
        order: unit order; must be one the model supports.
        sampling: the caller's settings (None: ``SamplingConfig()``).
        style: the sampler's style, "ar" or "maskgit".

    Returns:
        ``(sampling, layout)``: the settings to use and the unit layout of ``grid``.
    """
    if model.config.style != style:
        raise ValueError(f"sample_{style} needs a generator with style '{style}'")
    sampling = SamplingConfig() if sampling is None else sampling
    check_order(order, model.config.orders, model.config.style)
    model.check_grid(grid, order)
    return sampling, make_layout(grid, order, model.config.cube_size)


class DecodeContext:
    """Generation state for one batch.

    Args:
        model: the generator (not modified).
        cond: condition with B rows.
        sampling: sampling settings (CFG scale and schedule are used here).
        max_tokens: most context tokens ever held (sizes the static cache).
        use_cache: static KV cache (True) or full recomputation (False).
    """

    def __init__(
        self, model: Generator, cond: Condition, sampling: SamplingConfig, max_tokens: int, use_cache: bool = True
    ) -> None:
        self.model = model
        self.sampling = sampling
        self.guided = sampling.cfg_scale != 1.0
        self.batch = cond.batch_size
        self.cond = cond.with_null() if self.guided else cond
        self.causal_inside = model.config.style == "ar"
        self.history: list[tuple[torch.Tensor, torch.Tensor]] = []  # kept (ids (rows, n), coords (n, 3))
        self.window = model.config.max_grid[0]
        self.t_shift = 0
        rows = 2 * self.batch if self.guided else self.batch
        self.cache = model.new_cache(rows, model.prefix_len + max_tokens) if use_cache else None
        self._inner_masks: dict[tuple[int, torch.device], torch.Tensor] = {}  # built once per unit size

    def _inner_mask(self, n: int, device: torch.device) -> torch.Tensor:
        key = (n, device)
        if key not in self._inner_masks:
            mask = causal_mask(n, device) if self.causal_inside else torch.ones(n, n, dtype=torch.bool, device=device)
            self._inner_masks[key] = mask
        return self._inner_masks[key]

    def _shifted(self, coords: torch.Tensor) -> torch.Tensor:
        if self.t_shift == 0:
            return coords
        out = coords.clone()
        real = out[:, 0] >= 0
        out[real, 0] -= self.t_shift
        return out

    def _history_mask(self, sizes: list[int], device: torch.device) -> torch.Tensor:
        chunk_of = torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))
        mask = block_causal_mask(chunk_of)
        if self.causal_inside:
            mask &= causal_mask(len(chunk_of), device)
        return mask

    @torch.no_grad()
    def logits(self, ids: torch.Tensor, coords: torch.Tensor, *, keep: bool, progress: float) -> torch.Tensor:
        """Logits (B, n, V) for new tokens ``ids`` (B, n) at grid ``coords`` (n, 3).

        Coordinates with t < 0 (the start token) are left unrotated.
        """
        rows = torch.cat([ids, ids]) if self.guided else ids
        device = rows.device
        coords = coords.to(device)
        n = ids.shape[1]
        if self.cache is not None:
            start = self.cache.length
            mask = self._inner_mask(n, device)
            out = self.model(rows, self.cond, self.cache, coords=self._shifted(coords), mask=mask)
            if not keep:
                self.cache.rewind(start)
        else:
            chunks = [*self.history, (rows, coords)]
            all_ids = torch.cat([c[0] for c in chunks], dim=1)
            all_coords = self._shifted(torch.cat([c[1] for c in chunks]))
            mask = self._history_mask([c[0].shape[1] for c in chunks], device)
            out = self.model(all_ids, self.cond, None, coords=all_coords, mask=mask)[:, -n:]
        if keep:
            self.history.append((rows, coords))
        if not self.guided:
            return out.float()
        cond_logits, null_logits = out.float().chunk(2)
        g = self.sampling.guidance(progress)
        return null_logits + g * (cond_logits - null_logits)

    @torch.no_grad()
    def ensure_window(self, t_max: int) -> None:
        """Before generating tokens up to latent frame ``t_max``: slide the window if needed.

        Keeps the last ``max_grid[0] - 1`` whole frames of context (plus start tokens), re-based
        so the new frame sits at time ``max_grid[0] - 1``, and rebuilds the cache from them.
        """
        if t_max - self.t_shift < self.window:
            return
        self.t_shift = t_max - self.window + 1
        kept = []
        for ids, coords in self.history:
            t = coords[:, 0]
            if bool((t < 0).all()) or bool((t >= self.t_shift).all()):
                kept.append((ids, coords))
            elif bool((t >= self.t_shift).any()):
                raise ValueError("the sliding window needs units that do not span frames (order 'frame' or 'token')")
        self.history = kept
        if self.cache is not None:
            self.cache.reset()
            if kept:
                all_ids = torch.cat([c[0] for c in kept], dim=1)
                all_coords = self._shifted(torch.cat([c[1] for c in kept]))
                mask = self._history_mask([c[0].shape[1] for c in kept], all_ids.device)
                self.model(all_ids, self.cond, self.cache, coords=all_coords, mask=mask)
