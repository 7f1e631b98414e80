"""The tokenizer's ceiling on the shapes world: how well do its reconstructions of fresh clips of all 72 classes
keep what the generators are judged on?

Clips are rendered with :mod:`videodata.shapes.render` (never stored, so no file compression touches the
reference), balanced over every class, from their own seed. Each is encoded and decoded; the reconstruction is
written as an mp4 and read back, as a user would receive a generated video, and judged like the generators' videos.
Reported over all clips:

- ``all``, ``color``, ``shape``, ``motion``: the analyzer reads the class's attributes on the reconstruction;
- ``psnr``: mean PSNR (dB) of the decoder's uint8 output against the rendered clip (before the mp4: the tokenizer's
  own loss, as tokenizers are compared); ``psnr_mp4``: the same, read back from the mp4 a user receives (H.264 at crf
  18, 4:2:0 chroma, adds its own loss);
- ``hue_error``: per color, the median of |hue(reconstruction) - hue(original)|; the row keeps the worst color's;
- ``square_corner``: median over squares of the analyzer's squareness of the reconstruction over the original's
  (1 = corners kept; a rounded square drifts toward 0, a disk's value);
- ``phantom`` and ``hue_stable`` as for generated videos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.frames import tensor_to_frames
from core.video_io import read_video
from core.video_write import write_video
from tokenizer import VideoTokenizer
from videodata.shapes.render import COLORS, FPS, NUM_CLASSES, attributes_of, render_clip, sample_spec
from videoeval.shapes_analyzer import analyze, angle_diff


def render_balanced(num_videos: int, seed: int) -> tuple[list[tuple[str, str, str]], np.ndarray]:
    """``num_videos`` fresh clips cycling through all classes: their attributes and (N, T, H, W, 3) uint8 frames."""
    rng = np.random.default_rng(seed)
    attrs = [attributes_of(i % NUM_CLASSES) for i in range(num_videos)]
    return attrs, np.stack([render_clip(sample_spec(*a, rng)) for a in attrs])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays (peak 255)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


@torch.no_grad()
def reconstruct(tokenizer: VideoTokenizer, clips: np.ndarray, batch: int) -> np.ndarray:
    """(N, T, H, W, 3) uint8 clips -> the tokenizer's uint8 reconstructions, batch by batch."""
    out = []
    for start in range(0, len(clips), batch):
        x = torch.from_numpy(clips[start : start + batch]).permute(0, 4, 1, 2, 3)  # (B, C, T, H, W)
        video = x.to(tokenizer.device, torch.float32) / 127.5 - 1.0
        out.append(tensor_to_frames(tokenizer.decode(tokenizer.encode(video))))  # (B, T, H, W, 3); NaN raises
    return np.concatenate(out)


def ceiling_results(
    tokenizer: VideoTokenizer, folder: str | Path, *, num_videos: int, seed: int, batch: int = 8
) -> tuple[list[dict], dict[str, float], list[np.ndarray]]:
    """Reconstructs and judges fresh clips; returns per-clip rows, the extra summary numbers and a few videos.

    The rows have the fields of :func:`videoeval.adherence.score` (so :func:`videoeval.adherence.summarize`
    applies) plus ``psnr``, ``psnr_mp4``, ``hue_error`` and ``corner_ratio``.
    """
    from videoeval.adherence import score  # adherence imports this module

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    attrs, clips = render_balanced(num_videos, seed)
    recons = reconstruct(tokenizer, clips, batch)
    received = []
    for i, recon in enumerate(recons):
        path = folder / f"{i:04d}.mp4"
        write_video(path, recon, FPS)
        received.append(read_video(path))
    rows = score(np.stack(received), [{"color": c, "shape": s, "motion": m} for c, s, m in attrs])
    for row, clip, recon, got in zip(rows, clips, recons, received):
        a, b = analyze(clip), analyze(got)
        row["psnr"], row["psnr_mp4"] = psnr(recon, clip), psnr(got, clip)
        row["hue_error"] = None if a.hue is None or b.hue is None else float(angle_diff(a.hue, b.hue))
        row["corner_ratio"] = None if not (a.corner and b.corner is not None) else b.corner / a.corner
    extra = {key: float(np.mean([r[key] for r in rows])) for key in ("psnr", "psnr_mp4")}
    per_color = {}
    for color in COLORS:
        errors = [r["hue_error"] for r in rows if r["color"] == color and r["hue_error"] is not None]
        per_color[color] = float(np.median(errors)) if errors else float("nan")
        extra[f"hue_error_{color}"] = per_color[color]
    # the worst colour among those rendered; NaN when one of them never gave a hue reading (max() kept a NaN only
    # when it came first, so a colour that always came back unreadable could be left out of the worst case)
    shown_colors = {r["color"] for r in rows}
    values = [v for color, v in per_color.items() if color in shown_colors]
    extra["hue_error"] = float("nan") if any(np.isnan(values)) else max(values)
    corners = [r["corner_ratio"] for r in rows if r["shape"] == "square" and r["corner_ratio"] is not None]
    extra["square_corner"] = float(np.median(corners)) if corners else float("nan")
    return rows, extra, list(received[:12])
