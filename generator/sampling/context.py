"""The logits function samplers call: condition, kept context, CFG and the KV cache.

A sampler asks :meth:`DecodeContext.logits` for the logits of some new tokens given
everything generated so far. ``keep=True`` makes the new tokens part of the context (a GPT
step, or a finished MaskGIT unit); ``keep=False`` only probes (a MaskGIT refinement step).
With a cache only the new tokens are computed; without one the whole context is recomputed
every call, which is the reference the cache is tested against.

Samplers work on grids up to the model's ``max_grid``. Context tokens (the encoded frames a video
continues from) fill the first latent frames of the grid: :func:`context_sequence` places them.
Videos longer than ``max_grid`` are the pipeline's job: it continues from the last decoded frames,
re-encoded as a fresh clip, so a later latent frame never sits in the first-frame slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from generator.conditioning import Condition
from generator.sampling.config import SamplingConfig
from generator.transformer import Generator
from generator.units import LayoutError, UnitLayout, block_causal_mask, causal_mask, check_order, make_layout

START_COORDS = (-1, -1, -1)  # a GPT-style start token sits with the prefix: unrotated


def prepare_sampling(
    model: Generator,
    grid: tuple[int, int, int],
    order: str,
    sampling: SamplingConfig | None,
    style: str,
    context: torch.Tensor | None = None,
) -> tuple[SamplingConfig, UnitLayout]:
    """The checks and setup every sampler starts with.

    Args:
        model: the generator; its style must be ``style``.
        grid: (t, h, w) to generate; checked against the model's ``max_grid``.
        order: unit order; must be one the model supports.
        sampling: the caller's settings (None: ``SamplingConfig()``).
        style: the sampler's style, "ar" or "maskgit".
        context: the context tokens the grid continues, if any (they select
            :meth:`SamplingConfig.for_context`).

    Returns:
        ``(sampling, layout)``: the settings to use and the unit layout of ``grid``.
    """
    if model.config.style != style:
        raise ValueError(f"sample_{style} needs a generator with style '{style}'")
    sampling = SamplingConfig() if sampling is None else sampling
    sampling = sampling if context is None else sampling.for_context()
    check_order(order, model.config.orders, model.config.style)
    model.check_grid(grid, order)
    if context is not None:
        check_context_ids(context, model.config.vocab_size)
    layout = make_layout(grid, order, model.config.cube_size)
    if sampling.first_frame_candidates > 1:
        check_candidates_style(style)
        if context is None:  # given frames are never drawn again, so the setting is not read with them
            check_first_frame_layout(layout)
    return sampling, layout


def check_window(
    model: Generator, grid: tuple[int, int, int], order: str, sampling: SamplingConfig | None, context_latents: int
) -> None:
    """The checks the model's sampler makes before it draws anything, for ``grid`` after ``context_latents`` given
    latent frames (0: none): a windowed video plans its windows with them before sampling the first.

    Raises:
        LayoutError: the order's units do not tile that window, or its context boundary.
        ValueError: the sampler would refuse the window for another reason (an order the model lacks, settings).
    """
    style = model.config.style
    h, w = grid[1:]
    context = torch.zeros(1, context_latents, h, w, dtype=torch.long) if context_latents else None
    _, layout = prepare_sampling(model, grid, order, sampling, style, context)
    context_sequence(layout, context, 1, whole_units=style == "maskgit")


def check_candidates_style(style: str) -> None:
    """``first_frame_candidates`` is GPT-style only.

    Raises:
        ValueError: a MaskGIT-style sampler.
    """
    if style != "ar":
        raise ValueError("first_frame_candidates is GPT-style only: a MaskGIT sample has no exact likelihood to "
                         "rank candidates by; leave it at 1")  # fmt: skip


def check_first_frame_layout(layout: UnitLayout) -> None:
    """``first_frame_candidates`` draws the first latent frame as a grid of its own and continues from it as given
    context: the order must visit that frame's tokens first and end a unit there.

    Raises:
        ValueError: units that span latent frames.
    """
    _, in_front, at_boundary = frames_in_front(layout, 1)
    if not (in_front and at_boundary):  # no window plan helps: every video starts with the first frame
        raise ValueError(f"first_frame_candidates needs units within one latent frame; order {layout.order!r} has "
                         f"units of {layout.unit}")  # fmt: skip


def frames_in_front(layout: UnitLayout, t_c: int) -> tuple[int, bool, bool]:
    """Where the first ``t_c`` latent frames sit in the layout's sequence: ``(n, in_front, at_boundary)``, their
    token count, whether they are the first ``n`` positions, and whether a unit ends there."""
    known = layout.coords[:, 0] < t_c  # (L,)
    n = int(known.sum())
    at_boundary = n == layout.num_tokens or int(layout.unit_of[n - 1]) != int(layout.unit_of[n])
    return n, bool(known[:n].all()), at_boundary


def check_context_ids(context: torch.Tensor, vocab_size: int) -> None:
    """Context tokens must be integer ids of real codes: a -1 or the mask id would be taken for a free position
    or come back in the grid, and a float would be truncated.

    Raises:
        ValueError: a non-integer dtype or an id outside ``[0, vocab_size)``.
    """
    if context.dtype.is_floating_point or context.dtype.is_complex or context.dtype == torch.bool:
        raise ValueError(f"context must hold integer token ids, got dtype {context.dtype}")
    if context.numel() and (int(context.min()) < 0 or int(context.max()) >= vocab_size):
        raise ValueError(
            f"context token ids must lie in [0, {vocab_size}), got {int(context.min())}..{int(context.max())}"
        )


def context_sequence(
    layout: UnitLayout, context: torch.Tensor | None, batch: int, *, whole_units: bool
) -> tuple[torch.Tensor | None, int]:
    """Places context tokens (the first latent frames of the grid) in sequence order.

    Args:
        layout: the grid's unit layout.
        context: (B, t_c, h, w) token ids of the first ``t_c`` latent frames, or None.
        batch: B, the condition's rows.
        whole_units: the context must end at a unit boundary (MaskGIT units are decoded whole);
            a single unit (order 'clip') instead keeps the context tokens fixed inside it.

    Returns:
        ``(seq, n)``: (B, L) ids in sequence order with the context in place (other positions
        hold -1), and ``n``, the number of context positions; ``(None, 0)`` without context.
        Except for order 'clip', the context positions are the first ``n`` of the sequence.

    Raises:
        ValueError: a context of the wrong shape, as long as the grid, or one the order cannot continue.
    """
    if context is None:
        return None, 0
    t, h, w = layout.grid
    if context.ndim != 4 or context.shape[0] != batch or tuple(context.shape[2:]) != (h, w):
        raise ValueError(f"context must be ({batch}, t_c, {h}, {w}) token ids, got {tuple(context.shape)}")
    t_c = context.shape[1]
    if t_c < 1:
        raise ValueError("the context is empty: give at least one latent frame, or no context")
    if t_c >= t:
        raise ValueError(f"context of {t_c} latent frames leaves nothing to generate in a grid of {t}")
    full = torch.full((batch, *layout.grid), -1, dtype=torch.long, device=context.device)
    full[:, :t_c] = context
    seq = layout.to_sequence(full)  # (B, L)
    n, in_front, boundary = frames_in_front(layout, t_c)
    if layout.num_units == 1 and whole_units:
        return seq, n
    if not in_front or (whole_units and not boundary):
        raise LayoutError(
            f"order {layout.order!r} with units of {layout.unit} tokens cannot continue from {t_c} latent "
            f"frames: its units cross the context boundary; use order 'frame'"
        )
    return seq, n


@dataclass(frozen=True)
class StepTables:
    """What one-token decoding steps look up by layout position, computed once per video.

    Attributes:
        coords: (L, 3) long (t, h, w) of every layout position.
        freqs: (L, hd/2) complex rotary table of every layout position.
        targets: (L, D) target-position embedding of every position (models with ``target_positions``), or None.
    """

    coords: torch.Tensor
    freqs: torch.Tensor
    targets: torch.Tensor | None

    @classmethod
    def build(cls, model: Generator, layout: UnitLayout) -> StepTables:
        coords = layout.coords.to(model.device)
        targets = None
        if model.target_emb is not None:
            targets = model.target_emb(coords).to(model.tok_emb.weight.dtype)
        return cls(coords, model.rope.freqs(coords), targets)


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
        # kept (ids (rows, n), coords (n, 3), targets (n, 3) or None)
        self.history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        rows = 2 * self.batch if self.guided else self.batch
        self.cache = model.new_cache(rows, model.prefix_len + max_tokens) if use_cache else None
        # (rows, 1, 1, max_len) view of the cache's key validity: the key mask of one-token steps
        self._key_valid = None if self.cache is None else self.cache.valid[:, None, None, :]
        self._inner_masks: dict[tuple[int, torch.device], torch.Tensor] = {}  # built once per unit size

    def _inner_mask(self, n: int, device: torch.device) -> torch.Tensor:
        key = (n, device)
        if key not in self._inner_masks:
            mask = causal_mask(n, device) if self.causal_inside else torch.ones(n, n, dtype=torch.bool, device=device)
            self._inner_masks[key] = mask
        return self._inner_masks[key]

    def _history_mask(self, sizes: list[int], device: torch.device) -> torch.Tensor:
        chunk_of = torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))
        mask = block_causal_mask(chunk_of)
        if self.causal_inside:
            mask &= causal_mask(len(chunk_of), device)
        return mask

    def prefill(self) -> None:
        """Computes the condition prefix once into the cache (no-op without a cache or once done)."""
        if self.cache is not None and self.cache.length == 0:
            self.model.prefill(self.cond, self.cache)

    @torch.no_grad()
    def step_logits(self, ids: torch.Tensor, tables: StepTables, position: int, *, progress: float) -> torch.Tensor:
        """Logits (B, V) of one new token per row, kept: what :meth:`logits` with ``keep=True`` gives for it, up
        to rounding, through :meth:`Generator.decode_step`. Needs the cache, already filled by a :meth:`logits`
        call. With guidance the two rows' hidden states are mixed before the output head, which is linear
        without a bias, so one row goes through it instead of two.

        Args:
            ids: (B, 1) token ids at layout position ``position``; they predict position ``position + 1``.
            tables: the layout's rotary and target-position tables.
            position: index into the layout's sequence.
            progress: how far generation is, in [0, 1] (the guidance schedule).
        """
        if self.cache is None or self.cache.length == 0:
            raise ValueError("step_logits needs a KV cache that a logits() call has filled")
        rows = torch.cat([ids, ids]) if self.guided else ids
        key_mask = None if self.cache.all_valid else self._key_valid[..., : self.cache.length + 1]
        extra = None if tables.targets is None else tables.targets[position + 1 : position + 2]
        h = self.model.decode_step(
            rows, self.cache, freqs=tables.freqs[position : position + 1], extra=extra, key_mask=key_mask
        )[:, -1]  # (R, D)
        if self.guided:
            cond_h, null_h = h.float().chunk(2)
            h = (null_h + self.sampling.guidance(progress) * (cond_h - null_h)).to(h.dtype)  # (B, D)
        return self.model.head(h).float()

    @torch.no_grad()
    def logits(
        self,
        ids: torch.Tensor,
        coords: torch.Tensor,
        *,
        keep: bool,
        progress: float,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, n, V) for new tokens ``ids`` (B, n) at grid ``coords`` (n, 3).

        Coordinates with t < 0 (the start token) are left unrotated. ``targets`` (n, 3) are the
        positions the tokens predict, for models with ``target_positions``.
        """
        rows = torch.cat([ids, ids]) if self.guided else ids
        device = rows.device
        coords = coords.to(device)
        n = ids.shape[1]
        if self.cache is not None:
            start = self.cache.length
            mask = self._inner_mask(n, device)
            out = self.model(rows, self.cond, self.cache, coords=coords, mask=mask, targets=targets)
            if not keep:
                self.cache.rewind(start)
        else:
            chunks = [*self.history, (rows, coords, targets)]
            all_ids = torch.cat([c[0] for c in chunks], dim=1)
            all_coords = torch.cat([c[1] for c in chunks])
            all_targets = None if targets is None else torch.cat([c[2] for c in chunks])
            mask = self._history_mask([c[0].shape[1] for c in chunks], device)
            out = self.model(all_ids, self.cond, None, coords=all_coords, mask=mask, targets=all_targets)[:, -n:]
        if keep:
            self.history.append((rows, coords, targets))
        if not self.guided:
            return out.float()
        cond_logits, null_logits = out.float().chunk(2)
        g = self.sampling.guidance(progress)
        return null_logits + g * (cond_logits - null_logits)
