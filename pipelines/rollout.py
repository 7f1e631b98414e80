"""Videos of any length, window by window: continuation by re-encoding the last decoded frames.

A generator knows ``max_grid[0]`` latent frames. A longer video, or one that continues given
frames, is made in windows: the last frames generated so far (or the frames given) are encoded
by the frozen tokenizer as a fresh clip, so their first frame takes the tokenizer's first-frame
slot that was made for a standalone frame, and the generator fills the rest of the window after
that context. The new frames are decoded and appended, and the next window continues from them.
A later latent frame is never re-based into the first-frame slot.

    first window (no context)   [f0 | f1..f4 | f5..f8 | f9..f12 | f13..f16]   5 latents, 17 frames
    next window                 re-encode the last 9 frames (3 latents) + generate 2 latents = 8 new frames
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.checks import is_int
from core.frames import tensor_to_frames
from tokenizer import VideoTokenizer

# sample(grid (t, h, w), context ids (B, t_c, h, w) or None) -> ids (B, t, h, w)
SampleFn = Callable[[tuple[int, int, int], torch.Tensor | None], torch.Tensor]
# fits(t, t_c): whether the sampler draws a window of t latent frames after t_c given ones (0: none)
WindowFits = Callable[[int, int], bool]


@dataclass
class Rollout:
    """Frames and tokens of a windowed generation.

    Attributes:
        frames: (B, T, H, W, 3) uint8; given context frames come back as given.
        ids: (B, t, h, w) the first window's token grid followed by each later window's new latent frames.
        timings: seconds spent "sampling", "decoding" and "encoding" (context).
        windows: how many sampler calls made the video.
        context_latents: how many latent frames at the start of ``ids`` encode given context frames (0 without).
    """

    frames: np.ndarray
    ids: torch.Tensor
    timings: dict[str, float]
    windows: int
    context_latents: int = 0


def default_overlap(max_latents: int) -> int:
    """Context latents of a continuation window: about half the window, at least 1, leaving at least 1 new."""
    return max(1, min(max_latents - 1, max_latents - max_latents // 2))


def handoff_latents(prompts: Sequence[str], k: int, max_latents: int) -> int | None:
    """Latents of the frames before segment ``k`` of a story that its first window reads: None (as many as fit)
    for the first, 1 (the last frame) after a changed prompt, :func:`default_overlap` after the same prompt. Two
    prompts are the same when their words are, whatever their case and spacing ("A red circle " repeats "a red
    circle"): a repeated prompt re-typed differently was taken for a new one and lost its motion."""
    if k == 0:
        return None
    return default_overlap(max_latents) if _words(prompts[k]) == _words(prompts[k - 1]) else 1


def plan_windows(
    total: int,
    given: int | None,
    max_latents: int,
    first_cap: int | None,
    overlap: int,
    fits: WindowFits | None = None,
) -> list[tuple[int, int]]:
    """(context latents, new latents) of each window that makes ``total`` latent frames, worked out before anything is
    sampled: the first window of a video without context reads none; every other reads as many of the latents so far
    as its cap allows (``first_cap``, default ``max_latents - 1``, for the first after ``given`` ones, ``overlap``
    after that), then adds as many as fit. Where ``fits`` refuses a window (cubes spanning latent frames cannot split
    at every latent frame), the next smaller context, then the next fewer new latents, is taken.

    Raises:
        ValueError: no window that ``fits`` allows continues the video (a sampler refused it only after the earlier
            windows had been sampled).
    """
    fits = fits or (lambda t, t_c: True)
    plan, done = [], given or 0
    if not given:
        first = next((t for t in range(min(total, max_latents), 0, -1) if fits(t, 0)), None)
        if first is None:
            raise _no_windows(total, max_latents, 0)
        plan.append((0, first))
        done = first
    cap = (first_cap or max_latents - 1) if given else overlap
    while done < total:
        choice = next(((t_c, t_new) for t_c in range(min(done, cap, max_latents - 1), 0, -1)
                       for t_new in range(min(max_latents - t_c, total - done), 0, -1) if fits(t_c + t_new, t_c)),
                      None)  # fmt: skip
        if choice is None:
            raise _no_windows(total, max_latents, done)
        plan.append(choice)
        done, cap = done + choice[1], overlap
    return plan


def _no_windows(total: int, max_latents: int, done: int) -> ValueError:
    return ValueError(
        f"{total} latent frames cannot be made in windows of at most {max_latents} that this order's "
        f"units tile (stuck after {done}): ask for another number of frames, or use order 'frame'"
    )


def _words(prompt: str) -> list[str]:
    return prompt.casefold().split()


def to_pixels(video: torch.Tensor) -> np.ndarray:
    """(B, 3, T, H, W) in [-1, 1] -> (B, T, H, W, 3) uint8; ValueError on NaN or infinity (a diverged decoder, e.g.
    an fp16 overflow, gave black frames without a word, and a long video re-encoded them as its next context)."""
    return tensor_to_frames(video)


def to_video(frames: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) in [-1, 1] on ``like``'s device and dtype."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(like.device).permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W)
    return (x.float() / 127.5 - 1.0).to(like.dtype)


def roll_out(
    sample: SampleFn,
    tokenizer: VideoTokenizer,
    *,
    num_frames: int,
    max_latents: int,
    latent_hw: tuple[int, int],
    batch: int,
    context: np.ndarray | None = None,
    first_context_latents: int | None = None,
    overlap_latents: int | None = None,
    fits: WindowFits | None = None,
) -> Rollout:
    """Generates ``num_frames`` frames, continuing ``context`` if given.

    Args:
        sample: the sampler, bound to its generator, condition, order and RNG.
        tokenizer: the frozen tokenizer (encodes context, decodes windows).
        num_frames: total frames, context included: 1 + k * ct.
        max_latents: latent frames one window may hold (the generator's ``max_grid[0]``).
        latent_hw: the token grid's (h, w).
        batch: B.
        context: (B, N, H, W, 3) uint8 frames to continue (N = 1 + j * ct), or None.
        first_context_latents: most latents of ``context`` the first window reads (default: as many as
            fit, ``max_latents - 1``); later windows read ``overlap_latents`` (default :func:`default_overlap`).
        fits: which windows the sampler can draw (None: every one); see :func:`plan_windows`.

    Returns:
        the :class:`Rollout`.

    Raises:
        ValueError: ``num_frames`` or the context's length is not 1 + k * ct (a last window of no new latents
            appended re-decoded old frames as new ones), the context is not shorter than ``num_frames``, or no
            windows that ``fits`` make it (before anything is sampled).
    """
    ct = tokenizer.config.temporal_compression
    lengths = {"num_frames": num_frames, **({"the context's frames": context.shape[1]} if context is not None else {})}
    for what, n in lengths.items():
        if not is_int(n) or n < 1 or (n - 1) % ct:
            raise ValueError(f"{what} must be 1 + k*{ct} (the tokenizer's frames), got {n!r}")
    if context is not None and context.shape[1] >= num_frames:
        raise ValueError(f"{context.shape[1]} context frames leave nothing to generate of {num_frames}")
    if max_latents < 2 and (context is not None or num_frames > 1):
        raise ValueError(
            f"a generator of {max_latents} latent frame makes single images: it cannot continue frames or make "
            f"a {num_frames}-frame video"
        )
    like = next(tokenizer.parameters())
    h, w = latent_hw
    overlap = overlap_latents or default_overlap(max_latents)
    timings = {"sampling": 0.0, "decoding": 0.0, "encoding": 0.0}
    pieces: list[torch.Tensor] = []
    windows = 0

    def window(t: int, ctx: torch.Tensor | None) -> np.ndarray:
        nonlocal windows
        t0 = time.perf_counter()
        ids = sample((t, h, w), ctx)
        t1 = time.perf_counter()
        frames = to_pixels(tokenizer.decode(ids, chunk_latents=None))  # (B, 1 + (t - 1) * ct, H, W, 3)
        timings["sampling"] += t1 - t0
        timings["decoding"] += time.perf_counter() - t1
        pieces.append(ids if not pieces else ids[:, 0 if ctx is None else ctx.shape[1] :])  # later: new latents only
        windows += 1
        return frames

    given = None if context is None else 1 + (context.shape[1] - 1) // ct
    plan = plan_windows(1 + (num_frames - 1) // ct, given, max_latents, first_context_latents, overlap, fits)
    out = context
    for t_c, t_new in plan:
        if not t_c:  # the first window of a video without context
            out = window(t_new, None)
            continue
        t0 = time.perf_counter()
        clip = to_video(out[:, -(1 + (t_c - 1) * ct) :], like)  # the last frames, a fresh clip
        ctx = tokenizer.encode(clip)  # (B, t_c, h, w)
        timings["encoding"] += time.perf_counter() - t0
        frames = window(t_c + t_new, ctx)
        out = np.concatenate([out, frames[:, -t_new * ct :]], axis=1)
    first_context = 0 if context is None else plan[0][0]
    ids = torch.cat(pieces, dim=1).cpu()
    return Rollout(frames=out[:, :num_frames], ids=ids, timings=timings, windows=windows, context_latents=first_context)
