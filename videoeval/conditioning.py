"""Visual conditioning on the shapes world, where the ground truth is known (constant-velocity motion).

Four tasks, each over clips rendered here from seeds never used in training and balanced over all
72 classes (class ``i % 72`` for clip ``i``); every generated video is written to an mp4 and read
back, so it is judged as a user receives it:

- ``continuation``: the first 5 frames of a clip -> 17 frames, without a prompt and with a fresh phrasing of its
  class (:mod:`videoeval.phrasings`, as every prompt of these tasks). Attributes of the 12 generated frames
  equal to the source's (the 5 context frames the pipeline returns first are the source's own, and judging them
  too pulled a drifting colour back); the centroid in the last frame against the true trajectory (px); PSNR of the
  12 predicted frames beside the tokenizer's reconstruction PSNR of the same frames. Beside the centre error, the
  tokenizer's bound on it: the straight-line extrapolation, to the last frame, of the centroids in the tokenizer's
  reconstruction of the 5 context frames (what the context tokens say about the motion, read through the decoder).
- ``image``: the first frame of a clip and a phrasing of its class -> 17 frames. Attributes of the 16 generated frames
  right; the start position (the generated centroids' straight-line fit at t = 0) against the image's object (px).
- ``long``: a phrasing -> 33 and 65 frames. Every 17-frame window (stride 8) is judged against the prompt, a
  window where the object is not visible counting as wrong (``windows_right``; ``visible_right`` is the share
  of the visible ones); videos with a second object in any frame are counted. Beside them, the world's own
  long videos judged the same way (``world_windows_right``, :mod:`videoeval.long_windows`): an object keeps
  its speed and leaves the frame, so a faithful model scores that, not 100%.
- ``story``: two- and three-segment stories of 17-frame segments where only the direction changes, by 1, 2 or
  3 directions on (all 12 changes in 72 stories). Direction right per segment; colour and shape kept in every
  segment.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from core.frames import tensor_to_frames
from core.video_io import read_video
from core.video_write import write_video
from generator.sampling import SamplingConfig
from pipelines import VideoPipeline
from videodata.shapes.render import (
    COLORS,
    FPS,
    MOTIONS,
    NUM_CLASSES,
    SHAPES,
    ClipSpec,
    attributes_of,
    label_of,
    render_clip,
    sample_spec,
)
from videoeval.long_windows import WINDOW, judge_windows, world_videos
from videoeval.metrics import psnr
from videoeval.phrasings import MAX_SEED, REPORT_SEEDS, fresh_captions
from videoeval.shapes_analyzer import analyze, count_objects, track
from videoeval.shapes_scoring import coverage

EVAL_SEED = REPORT_SEEDS[0]  # training data is rendered with seed 0; choose settings on SELECTION_SEEDS
CONTEXT_FRAMES = 5
TASKS = ("continuation", "image", "long", "story")
LONG_LENGTHS = (33, 65)
STORY_SEGMENTS = (2, 3)


def fresh_clips(num: int, seed: int = EVAL_SEED) -> list[tuple[ClipSpec, np.ndarray]]:
    """``num`` rendered (spec, (17, 64, 64, 3) uint8 frames) pairs, class ``i % 72`` for clip ``i``."""
    rng = np.random.default_rng(seed)
    specs = [sample_spec(*attributes_of(i % NUM_CLASSES), rng) for i in range(num)]
    return [(spec, render_clip(spec)) for spec in specs]


def true_centroids(spec: ClipSpec) -> np.ndarray:
    """(T, 2) centroid (x, y) of the object in every frame: a triangle's sits h/6 below its box center."""
    xy = spec.centers().copy()
    if spec.shape == "triangle":
        xy[:, 1] += spec.size * math.sqrt(3) / 2 / 6
    return xy


def as_received(frames: np.ndarray, fps: float) -> np.ndarray:
    """(B, T, H, W, 3) uint8 written to mp4 files (as generate.py writes them) and read back."""
    with tempfile.TemporaryDirectory(prefix="tokvid-eval-") as tmp:
        out = []
        for i, clip in enumerate(frames):
            path = Path(tmp) / f"{i}.mp4"
            write_video(path, clip, fps=fps)
            out.append(read_video(path))
        return np.stack(out)


def _pixels(frames: np.ndarray) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def _attrs(spec: ClipSpec) -> tuple[str, str, str]:
    return spec.color, spec.shape, spec.motion


def _line_error(frames: np.ndarray, first: int, at: float, true_xy: np.ndarray) -> float:
    """Distance (px) between ``true_xy`` and the straight-line fit of the centroids in ``frames[first:]``
    (frame indices ``first``..T-1) evaluated at frame ``at``; NaN with fewer than 2 frames where the object is seen."""
    xy = track(frames)[first:]  # (T - first, 2)
    t = np.arange(first, frames.shape[0], dtype=np.float64)
    ok = ~np.isnan(xy).any(axis=1)
    if ok.sum() < 2:
        return float("nan")
    fit = [np.polyval(np.polyfit(t[ok], xy[ok, k], 1), at) for k in range(2)]  # x, y of the line at ``at``
    return float(np.hypot(fit[0] - true_xy[0], fit[1] - true_xy[1]))


def _start_error(frames: np.ndarray, true_xy: np.ndarray) -> float:
    """Distance (px) between the straight-line fit of frames 1..T-1's centroids at t = 0 and ``true_xy``."""
    return _line_error(frames, 1, 0.0, true_xy)


def _extrapolation_error(context: np.ndarray, spec: ClipSpec) -> float:
    """Distance (px) between the straight-line fit of the centroids in ``context`` (frames 0..k-1),
    extrapolated to the clip's last frame, and the true centroid there."""
    truth = true_centroids(spec)
    return _line_error(context, 0, float(truth.shape[0] - 1), truth[-1])


def story_directions(k: int, segments: int) -> tuple[str, str, list[str]]:
    """Story ``k``'s colour, shape and direction per segment: class ``k % 72``'s, then ``turn`` directions on at each
    segment, the turn (1, 2 or 3) varying with colour, shape and round so every direction meets every turn. It moved
    with ``k // 72`` alone, so 72 stories told 4 of the 12 changes of direction."""
    color, shape, first = attributes_of(k % NUM_CLASSES)
    turn = 1 + (COLORS.index(color) + SHAPES.index(shape) + k // NUM_CLASSES) % (len(MOTIONS) - 1)
    return color, shape, [MOTIONS[(MOTIONS.index(first) + j * turn) % len(MOTIONS)] for j in range(segments)]


def _batches(items: Sequence, batch: int):
    for start in range(0, len(items), batch):
        yield start, items[start : start + batch]


class ConditioningEval:
    """Runs the tasks for one pipeline, mode and order; each ``*_rows`` method returns one dict per video."""

    def __init__(
        self, pipe: VideoPipeline, mode: str, order: str, *, batch: int, seed: int, sampling: SamplingConfig | None
    ) -> None:
        self.pipe, self.mode, self.order, self.batch, self.seed = pipe, mode, order, batch, seed
        self.sampling = sampling
        self._recon: dict[int, tuple[float, float]] = {}  # clip -> (PSNR of frames 5..16, context bound px)

    def _gen(self, offset: int) -> torch.Generator:
        return torch.Generator(self.pipe.device).manual_seed(self.seed + offset)

    def _captions(self, labels: Sequence[int], task: int) -> list[str]:
        """Fresh phrasings of ``labels`` (as the prompt rows use), drawn for the whole population of a task at once,
        so they do not depend on the batch size; the clip's training caption was used before."""
        return fresh_captions(labels, np.random.default_rng([self.seed, task]))

    def _call(self, prompts, offset: int, **kw) -> np.ndarray:
        out = self.pipe(prompts, mode=self.mode, order=self.order, sampling=self.sampling, generator=self._gen(offset),
                        **kw)  # fmt: skip
        return as_received(out.frames, out.fps)

    def reconstruction(self, clips: list[tuple[ClipSpec, np.ndarray]]) -> list[tuple[float, float]]:
        """Per clip, from the tokenizer's reconstruction (read back from mp4 too): the PSNR of frames 5..16, and
        the error (px) of the last-frame centroid extrapolated from its context frames (the causal tokenizer
        reconstructs frames 0..4 from their own tokens, the generator's context)."""
        tok = self.pipe.tokenizer
        like = next(tok.parameters())
        for start, chunk in _batches(clips, self.batch):
            if start in self._recon:
                continue
            truth = np.stack([f for _, f in chunk])  # (B, T, H, W, 3)
            recon = tok.decode(tok.encode(_pixels(truth).to(like.device, like.dtype)))
            frames = as_received(tensor_to_frames(recon), self.pipe.config.fps)  # (B, T, H, W, 3); NaN raises
            values = psnr(_pixels(frames[:, CONTEXT_FRAMES:]), _pixels(truth[:, CONTEXT_FRAMES:]))
            for i, v in enumerate(values.tolist()):
                self._recon[start + i] = (v, _extrapolation_error(frames[i, :CONTEXT_FRAMES], chunk[i][0]))
        return [self._recon[i] for i in range(len(clips))]

    def continuation_rows(self, clips: list[tuple[ClipSpec, np.ndarray]], prompted: bool) -> list[dict]:
        recon = self.reconstruction(clips)
        rows = []
        captions = self._captions([s.label for s, _ in clips], 1) if prompted else None
        for start, chunk in _batches(clips, self.batch):
            prompts = captions[start : start + len(chunk)] if captions else None
            frames = self._call(prompts, start, video=[f[:CONTEXT_FRAMES] for _, f in chunk],
                                context_frames=CONTEXT_FRAMES, num_frames=17, num_videos=len(chunk))  # fmt: skip
            truth = np.stack([f for _, f in chunk])
            values = psnr(_pixels(frames[:, CONTEXT_FRAMES:]), _pixels(truth[:, CONTEXT_FRAMES:])).tolist()
            for i, (spec, _) in enumerate(chunk):
                a = analyze(frames[i, CONTEXT_FRAMES:])  # the generated frames: the context is the source's own
                last = track(frames[i])[-1]
                err = float(np.hypot(*(last - true_centroids(spec)[-1])))
                rows.append({"label": spec.label, "right": a.matches(*_attrs(spec)), "center_error_px": err,
                             "psnr": values[i], "recon_psnr": recon[start + i][0],
                             "context_bound_px": recon[start + i][1],
                             "read": [a.color, a.shape, a.motion]})  # fmt: skip
        return rows

    def image_rows(self, clips: list[tuple[ClipSpec, np.ndarray]]) -> list[dict]:
        rows = []
        captions = self._captions([s.label for s, _ in clips], 2)
        for start, chunk in _batches(clips, self.batch):
            prompts = captions[start : start + len(chunk)]
            frames = self._call(prompts, 50_000 + start, image=[f[0] for _, f in chunk], num_frames=17)
            for i, (spec, _) in enumerate(chunk):
                a = analyze(frames[i, 1:])  # the generated frames: frame 0 is the given image
                rows.append({"label": spec.label, "right": a.matches(*_attrs(spec)),
                             "start_error_px": _start_error(frames[i], true_centroids(spec)[0]),
                             "read": [a.color, a.shape, a.motion]})  # fmt: skip
        return rows

    def long_rows(self, num_videos: int, num_frames: int) -> list[dict]:
        labels = [i % NUM_CLASSES for i in range(num_videos)]
        rng = np.random.default_rng([self.seed, num_frames])  # the world's videos: the same for every mode and order
        captions = self._captions(labels, 3 + num_frames)
        rows = []
        for start, chunk in _batches(labels, self.batch):
            frames = self._call(captions[start : start + len(chunk)], 100_000 + start, num_frames=num_frames)
            world = as_received(world_videos(chunk, num_frames, rng), FPS)  # (B, T, H, W, 3), judged as received
            for i, label in enumerate(chunk):
                windows, visible, right = judge_windows(frames[i], label)
                rows.append({"label": label, "windows": windows, "visible": visible, "right": right,
                             "world_right": judge_windows(world[i], label)[2],
                             "second_object": bool((count_objects(frames[i]) > 1).any())})  # fmt: skip
        return rows

    def story_rows(self, num_videos: int, segments: int) -> list[dict]:
        stories = [story_directions(k, segments) for k in range(num_videos)]
        captions = self._captions([label_of(c, s, d) for c, s, ds in stories for d in ds], 10 + segments)
        rows = []
        for k, (color, shape, directions) in enumerate(stories):
            prompts = captions[k * segments : (k + 1) * segments]
            out = self.pipe.story(prompts, segment_frames=WINDOW,
                                  mode=self.mode, order=self.order, sampling=self.sampling,
                                  generator=self._gen(200_000 + k))  # fmt: skip
            frames = as_received(out.frames, out.fps)[0]
            reads = [analyze(frames[j * (WINDOW - 1) : j * (WINDOW - 1) + WINDOW]) for j in range(segments)]
            rows.append({"label": k % NUM_CLASSES, "directions": directions,
                         "direction_right": [r.motion == d for r, d in zip(reads, directions)],
                         "kept": all(r.color == color and r.shape == shape for r in reads),
                         "read": [[r.color, r.shape, r.motion] for r in reads]})  # fmt: skip
        return rows


def _missing(errors: Sequence[float]) -> int:
    return sum(1 for e in errors if math.isnan(e))


def population_percentile(errors: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear, as ``np.percentile``) of pixel errors over every row, a NaN (the object was
    not found) counting as an infinite error: a model that loses the object in most videos must not report the
    error of the few where it kept it. NaN for no rows."""
    values = np.sort(np.nan_to_num(np.asarray(errors, dtype=np.float64), nan=np.inf))  # (N,)
    if not len(values):
        return float("nan")
    pos = q / 100 * (len(values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    a, b = float(values[lo]), float(values[hi])
    if lo == hi or a == b:
        return a
    return math.inf if math.isinf(b) else a + (b - a) * (pos - lo)


def summarize_task(task: str, rows: list[dict]) -> dict[str, float]:
    """The numbers the goals are stated in, over every row of one task: medians and percentiles of pixel errors
    count a video where the object was not found as an infinite error (``*_missing`` says how many)."""
    n = len(rows)
    if task.startswith("continuation"):
        errors, bounds = [r["center_error_px"] for r in rows], [r["context_bound_px"] for r in rows]
        return {"n": n, "attributes_equal": sum(r["right"] for r in rows) / n,
                "center_median_px": population_percentile(errors, 50),
                "center_p90_px": population_percentile(errors, 90), "center_missing": _missing(errors),
                "psnr": float(np.median([r["psnr"] for r in rows])),
                "recon_psnr": float(np.median([r["recon_psnr"] for r in rows])),
                "context_bound_median_px": population_percentile(bounds, 50),
                "context_bound_missing": _missing(bounds)}  # fmt: skip
    if task == "image":
        errors = [r["start_error_px"] for r in rows]
        return {"n": n, "attributes_right": sum(r["right"] for r in rows) / n,
                "start_median_px": population_percentile(errors, 50), "start_missing": _missing(errors)}  # fmt: skip
    if task.startswith("long"):
        # every window counts: a lost object is a wrong window (dividing by the visible ones alone rewarded losing it)
        visible, windows, right = (sum(r[k] for r in rows) for k in ("visible", "windows", "right"))
        world = sum(r["world_right"] for r in rows)
        return {"n": n, "windows": windows, "visible_windows": visible, "windows_right": right / windows,
                "visible_right": right / visible if visible else float("nan"), "world_windows_right": world / windows,
                "second_object": sum(r["second_object"] for r in rows) / n}  # fmt: skip
    segments = [d for r in rows for d in r["direction_right"]]
    return {"n": n, "direction_right": sum(segments) / len(segments), "kept": sum(r["kept"] for r in rows) / n,
            "all_right": sum(all(r["direction_right"]) and r["kept"] for r in rows) / n}  # fmt: skip


def evaluate_conditioning(
    pipe: VideoPipeline,
    mode: str,
    order: str,
    *,
    tasks: Sequence[str] = TASKS,
    num_videos: int = 72,
    batch: int = 8,
    seed: int = EVAL_SEED,
    sampling: SamplingConfig | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, list[dict]]]:
    """Every row of ``tasks`` for one mode and order: ``{task: summary}`` and ``{task: rows}``.

    ``seed`` renders the clips and seeds the sampling; ``sampling`` replaces the model's settings for ``mode``
    (None keeps them).

    Raises:
        ValueError: an unknown task, or an order that cannot take context.
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown conditioning task(s) {unknown}; choose from {list(TASKS)}")
    if num_videos < 1 or batch < 1 or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"num_videos and batch must be >= 1 and seed in [0, 2**62], got {num_videos}, {batch}, {seed}")
    ev = ConditioningEval(pipe, mode, order, batch=batch, seed=seed, sampling=sampling)
    clips = fresh_clips(num_videos, seed) if {"continuation", "image"} & set(tasks) else []
    rows: dict[str, list[dict]] = {}
    if "continuation" in tasks:
        rows["continuation/no-prompt"] = ev.continuation_rows(clips, prompted=False)
        rows["continuation/prompt"] = ev.continuation_rows(clips, prompted=True)
    if "image" in tasks:
        rows["image"] = ev.image_rows(clips)
    if "long" in tasks:
        for length in LONG_LENGTHS:
            rows[f"long/{length}"] = ev.long_rows(num_videos, length)
    if "story" in tasks:
        for segments in STORY_SEGMENTS:
            rows[f"story/{segments}"] = ev.story_rows(num_videos, segments)
    balance = coverage(num_videos)  # every task cycles through the 72 classes
    return {task: {**summarize_task(task, r), **balance} for task, r in rows.items()}, rows
