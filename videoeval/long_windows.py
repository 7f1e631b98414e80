"""Judging long videos window by window, and the world's own long videos to judge the same way.

A long video made from one caption is judged in every 17-frame window (stride 8) against the caption; a window
where the analyzer sees no object counts as wrong. In the shapes world an object keeps its speed (1-2.5 px a
frame) and leaves the 64-pixel frame, so a faithful long video has windows with no object in them: the world's
continuation of a clip drawn as the training clips are, judged by the same rule, is the rate a model that renders
the world exactly would score (``world_right``).
"""

from __future__ import annotations

import numpy as np

from videodata.shapes.render import attributes_of, render_clip, sample_spec
from videoeval.shapes_analyzer import analyze

WINDOW, WINDOW_STRIDE = 17, 8


def window_starts(num_frames: int) -> range:
    """First frame of every judged window of a ``num_frames``-frame video."""
    return range(0, num_frames - WINDOW + 1, WINDOW_STRIDE)


def judge_windows(frames: np.ndarray, label: int) -> tuple[int, int, int]:
    """(windows, visible, right) of one (T, H, W, 3) video against class ``label``: a window is visible when the
    analyzer finds the object in at least half its frames, and right when visible and its attributes match."""
    reads = [analyze(frames[s : s + WINDOW]) for s in window_starts(frames.shape[0])]
    seen = [r for r in reads if r.color is not None]
    return len(reads), len(seen), sum(r.matches(*attributes_of(label)) for r in seen)


def world_videos(labels: list[int], num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(B, num_frames, 64, 64, 3) uint8: one clip per label, drawn as the training clips are (its first 17 frames
    keep the object in view), rendered on for ``num_frames`` frames at its own speed."""
    return np.stack([render_clip(sample_spec(*attributes_of(c), rng), num_frames) for c in labels])
