"""Judging shapes videos against the attributes they were asked for: one row per video, one summary per set.

A row says whether the analyzer read each attribute right, whether a second object shows in any frame
(a phantom: a second shape, or specks of another color), and how many frames keep the object's hue within
:data:`HUE_TOLERANCE` degrees of the clip's median hue.
"""

from __future__ import annotations

import logging

import numpy as np

from videodata.shapes.render import NUM_CLASSES
from videoeval.shapes_analyzer import analyze, count_objects, frame_hues, hue_stability

ATTRIBUTES = ("color", "shape", "motion")
HUE_TOLERANCE = 15.0  # degrees from the clip's median hue that still count as the same color

log = logging.getLogger(__name__)


def score(frames: np.ndarray, rows: list[dict]) -> list[dict]:
    """Analyzes (B, T, H, W, C) uint8 videos against their requested attributes; one result per video."""
    if len(frames) != len(rows):  # zip() would silently judge only the shorter of the two
        raise ValueError(f"{len(frames)} videos for {len(rows)} requests")
    out = []
    for clip, row in zip(frames, rows):
        a = analyze(clip)
        stable, total = hue_stability(frame_hues(clip), HUE_TOLERANCE)
        out.append(
            {
                **row,
                "got": [a.color, a.shape, a.motion],
                "confidence": a.confidence,
                "ok_color": a.color == row["color"],
                "ok_shape": a.shape == row["shape"],
                "ok_motion": a.motion == row["motion"],
                "ok": a.matches(row["color"], row["shape"], row["motion"]),
                "max_objects": int(count_objects(clip).max()),
                "hue_stable_frames": stable,
                "frames": total,
            }
        )
    return out


def summarize(results: list[dict]) -> dict[str, float]:
    """``n``; the share of videos right on all three attributes (``all``) and on each; the share of videos with
    a second object in some frame (``phantom``); the share of frames with a stable hue (``hue_stable``)."""
    n = max(1, len(results))
    shares = {"all": sum(r["ok"] for r in results) / n}
    shares.update({k: sum(r[f"ok_{k}"] for r in results) / n for k in ATTRIBUTES})
    shares["phantom"] = sum(r["max_objects"] >= 2 for r in results) / n
    shares["hue_stable"] = sum(r["hue_stable_frames"] for r in results) / max(1, sum(r["frames"] for r in results))
    return {"n": len(results), **shares}


def coverage(num_videos: int, num_classes: int = NUM_CLASSES) -> dict[str, float]:
    """How many of ``num_classes`` classes a row of ``num_videos`` covers, and whether each has as many videos
    (1.0) or not (0.0): classes come in order, so 36 videos of all 72 ask for red, yellow and green only."""
    balanced = num_videos % num_classes == 0
    if not balanced:
        log.warning("%d videos do not cover the %d classes evenly: use a multiple of %d", num_videos, num_classes,
                    num_classes)  # fmt: skip
    return {"classes": float(min(num_videos, num_classes)), "class_total": float(num_classes),
            "balanced": float(balanced)}  # fmt: skip


def split_label(split: str, summary: dict) -> str:
    """A row's split, with "k of N classes, unbalanced" when its videos did not cover its classes evenly."""
    if summary.get("balanced", 1):
        return split
    total = int(summary.get("class_total", NUM_CLASSES))
    return f"{split}: {int(summary['classes'])} of {total} classes, unbalanced"
