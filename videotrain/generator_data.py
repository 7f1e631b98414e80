"""The data side of generator training: the held-out split by source video, the resumable index stream, and the
captions a batch is conditioned on."""

from __future__ import annotations

import logging

import numpy as np
import torch

from generator.text_encoders import TextEncoder
from videodata.cache.reader import ShuffledSampler, TokenSample

log = logging.getLogger(__name__)


def split_by_source(sources: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(eval, train) sorted clip indices: whole source videos are held out, in a seeded order, until they hold
    ``round(fraction * N)`` clips, and at least one source is left to train on.

    Clips were drawn one by one: with several clips per video (``cache_tokens --clips-per-video``) a held-out clip
    shared most of its frames with training clips of the same video, and the eval loss read too low. With one
    clip per source (the shapes cache) the split is the one the clip-wise draw gave.
    """
    n = len(sources)
    want = min(n - 1, int(round(fraction * n))) if fraction > 0 else 0
    ids, clips_per_id = np.unique(sources, return_counts=True)  # sorted source ids and their clip counts
    if want <= 0 or len(ids) < 2:
        if want > 0:
            log.warning("data.eval_fraction: every clip comes from one source video, so none is held out")
        return np.zeros(0, dtype=np.int64), np.arange(n)
    order = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 7]))).permutation(len(ids))
    taken = min(int(np.searchsorted(np.cumsum(clips_per_id[order]), want)) + 1, len(ids) - 1)
    held = np.isin(sources, ids[order[:taken]])
    return np.flatnonzero(held), np.flatnonzero(~held)


class BatchStream:
    """Draws this rank's indices from a :class:`ShuffledSampler`, epoch after epoch, resumably."""

    def __init__(self, sampler: ShuffledSampler, indices: np.ndarray) -> None:
        self.sampler, self.indices = sampler, indices
        self._epoch_idx = sampler.indices(sampler.epoch)

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.sampler.position >= len(self._epoch_idx):
                self.sampler.set_epoch(self.sampler.epoch + 1)
                self._epoch_idx = self.sampler.indices(self.sampler.epoch)
            out.append(int(self.indices[self._epoch_idx[self.sampler.position]]))
            self.sampler.position += 1
        return out

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self._epoch_idx = self.sampler.indices(self.sampler.epoch)


def check_captions_encode(captions: list[list], encoder: TextEncoder, cache: str, chunk: int = 4096) -> None:
    """ValueError naming the clips whose captions ``encoder`` refuses (too long, no known token), up front: such a
    caption stopped a run at the step that first drew it, hours in, naming only its place in the batch. Each
    distinct caption is tokenized once (the shapes cache's 265k captions hold a few thousand)."""
    distinct = list(dict.fromkeys(c for clip_captions in captions for c in clip_captions))
    why: dict[str, str] = {}
    for lo in range(0, len(distinct), chunk):
        part = distinct[lo : lo + chunk]
        why.update((part[i], reason) for i, reason in encoder.refusals(part).items())
    bad = [
        f"clip {clip}: caption {why[c]}"
        for clip, clip_captions in enumerate(captions)
        for c in clip_captions
        if c in why
    ]
    if bad:
        raise ValueError(
            f"{len(bad)} caption(s) of {cache} cannot be encoded; {bad[0]}"
            + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
        )


def pick_caption(sample: TokenSample, pick: torch.Generator | None) -> str:
    """One of the sample's captions: drawn with ``pick`` when it has several, else its first."""
    if pick is None or len(sample.captions) < 2:
        return sample.caption
    return sample.captions[int(torch.randint(len(sample.captions), (), generator=pick))]
