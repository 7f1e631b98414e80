"""How many videos one pipeline call makes, and spreading prompts, labels and context frames over them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.checks import is_int


def batch_size(given: str | int | list | None, num_videos: int | None, context_rows: int) -> int:
    """Videos to make: one per prompt/label in a list; for one prompt, label or none, ``num_videos``, or one per
    image/video when a list of them is given."""
    if num_videos is not None and (not is_int(num_videos) or num_videos < 1):
        raise ValueError(f"nothing to generate: num_videos must be an integer >= 1, got {num_videos!r}")
    if given is None or isinstance(given, str) or is_int(given):
        return int(num_videos) if num_videos is not None else context_rows
    if isinstance(given, np.ndarray) and given.ndim == 0:  # np.array(1): len() of an unsized object
        raise ValueError(f"labels {given!r} is a 0-d array: give int(labels), or a 1-d array of class ids")
    if not isinstance(given, (Sequence, np.ndarray)):  # 2.0 or True: a TypeError from len()
        raise ValueError(f"a prompt or label must be a string, an integer class id or a list of them, got {given!r}")
    if len(given) < 1:
        raise ValueError("nothing to generate: give at least one prompt or label")
    if num_videos is not None and num_videos != len(given):
        raise ValueError(f"num_videos={num_videos} disagrees with the {len(given)} prompts/labels given")
    return len(given)


def per_video(context: np.ndarray, batch: int) -> np.ndarray:
    """(R, N, H, W, 3) context -> (batch, N, H, W, 3): one context for every video, or one each."""
    if context.shape[0] == batch:
        return context
    if context.shape[0] == 1:
        return np.repeat(context, batch, axis=0)
    raise ValueError(f"got {context.shape[0]} images/videos for {batch} videos")


def repeat_rows(items: list, batch: int) -> list:
    """One prompt or label for every video, or one each."""
    if len(items) == batch:
        return items
    if len(items) == 1:
        return items * batch
    raise ValueError(f"got {len(items)} prompts/labels for {batch} videos")
