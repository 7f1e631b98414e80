"""Prompt adherence on the shapes domain: generate from captions, judge each video as the user receives it.

The default protocol (:func:`evaluate_adherence`), for each mode (and its default order unless others are asked):

- requests balanced over **all 72 classes**, held-out combinations included, each phrased with one of the
  **fresh phrasings** of :mod:`videoeval.phrasings` (never used as training captions);
- a separate set for the model's held-out combinations alone (``holdout.json``), also freshly phrased;
- every video written as an **mp4 and read back** before it is judged (:mod:`videoeval.shapes_scoring`):
  attributes, phantom objects, hue stability;
- optionally the tokenizer's ceiling on fresh renders of all classes (:mod:`videoeval.shapes_ceiling`).

``phrasing="training"`` uses the training captions' templates instead (to measure the gap). It writes
``report.md``, ``results.json``, the videos and one contact sheet per mode and order.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.files import atomic_write_json, atomic_write_text, check_dir_target, check_not_over_inputs, read_json
from core.video_io import read_video
from core.video_write import write_contact_sheet, write_video
from generator.sampling import SamplingConfig
from pipelines import VideoPipeline
from pipelines.assemble import HOLDOUT_FILE
from videodata.shapes.dataset import parse_holdout
from videodata.shapes.render import NUM_CLASSES, attributes_of, caption_for, label_of
from videoeval.conditioning import TASKS as CONDITIONING_TASKS
from videoeval.conditioning_report import conditioning_report, evaluation_runs
from videoeval.phrasings import MAX_SEED, REPORT_SEEDS, fresh_caption
from videoeval.shapes_ceiling import ceiling_results
from videoeval.shapes_scoring import ATTRIBUTES, coverage, score, split_label, summarize

log = logging.getLogger(__name__)

SHEET_VIDEOS = 12  # videos shown on each contact sheet
DEFAULT_SEED = REPORT_SEEDS[0]

Combination = tuple[str, str, str]  # (color, shape, motion)

# How a request is phrased: label, index of the request, rng -> caption.
PHRASINGS: dict[str, Callable[[int, int, np.random.Generator], str]] = {
    "fresh": fresh_caption,
    "training": lambda label, index, rng: caption_for(*attributes_of(label), rng),
}


def plan(num_videos: int, seed: int, phrasing: str = "fresh", labels: Sequence[int] | None = None) -> list[dict]:
    """(caption, attributes) requests cycling through ``labels`` (default: all classes), phrased by ``phrasing``.

    Video ``i`` asks for ``labels[i % n]``. Its phrasing index counts the earlier videos of the same direction, so
    each direction cycles through every template, and a class's consecutive videos use different ones. The index
    used to follow the video's position (``i + i // 72``): with 16 templates and the direction at ``label % 4``,
    each template met only 3 of the 4 directions in 216 videos, 2 in 144 ("climbs" never went left).
    """
    if phrasing not in PHRASINGS:
        raise ValueError(f"unknown phrasing {phrasing!r}; choose from {', '.join(PHRASINGS)}")
    labels = list(range(NUM_CLASSES)) if labels is None else list(labels)
    rng = np.random.default_rng(seed)
    seen: Counter[str] = Counter()  # videos so far per direction
    rows = []
    for i in range(num_videos):
        label = labels[i % len(labels)]
        color, shape, motion = attributes_of(label)
        caption = PHRASINGS[phrasing](label, seen[motion], rng)
        seen[motion] += 1
        rows.append({"caption": caption, "color": color, "shape": shape, "motion": motion})
    return rows


def received(frames: np.ndarray, folder: Path, first: int, fps: float) -> np.ndarray:
    """Writes each (T, H, W, 3) video as ``folder/<index>.mp4`` and returns what reading the files back gives."""
    out = []
    for i, video in enumerate(frames):
        path = folder / f"{first + i:04d}.mp4"
        write_video(path, video, fps)
        out.append(read_video(path))
    return np.stack(out)


def evaluate(
    pipe: VideoPipeline,
    mode: str,
    order: str,
    rows: list[dict],
    batch: int,
    seed: int,
    sampling: SamplingConfig | None = None,
    folder: Path | None = None,
) -> tuple[list[dict], list[np.ndarray]]:
    """Generates one video per row in batches and judges it; returns scored rows and the first videos for a sheet.

    ``sampling`` is passed to every pipeline call (None: the model's settings for ``mode``). With ``folder``,
    every video is written there as an mp4 and judged as read back from the file.
    """
    results, shown = [], []
    for start in tqdm(range(0, len(rows), batch), desc=f"{mode}/{order}", leave=False):
        chunk = rows[start : start + batch]
        out = pipe(
            [r["caption"] for r in chunk],
            mode=mode,
            order=order,
            sampling=sampling,
            generator=torch.Generator(pipe.device).manual_seed(seed + start),
        )
        frames = out.frames if folder is None else received(out.frames, folder, start, out.fps)
        results += score(frames, chunk)
        if len(shown) < SHEET_VIDEOS:
            shown += list(frames[: SHEET_VIDEOS - len(shown)])
    return results, shown


def report_markdown(summary: dict, model: str, seconds: float, phrasing: str, seed: int) -> str:
    """The ``report.md`` page: one table row per mode/order/split, then the contact sheets."""
    lines = [
        "# Prompt adherence on shapes\n",
        f"Model `{model}`; {phrasing} phrasings; seed {seed}; every video judged by `videoeval.shapes_analyzer` "
        f"as read back from its mp4; {seconds:.0f} s.\n",
        "| mode | order | split | videos | all three | color | shape | motion | second object | hue stable |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, s in summary.items():
        mode, order, split = key.split("/")
        split = split_label(split, s)
        shares = " | ".join(f"{s[k]:.1%}" for k in ("all", *ATTRIBUTES, "phantom", "hue_stable"))
        lines.append(f"| {mode} | {order} | {split} | {s['n']} | {shares} |")
    ceiling = next((s for k, s in summary.items() if k.startswith("tokenizer/")), None)
    if ceiling:
        hues = ", ".join(f"{k.removeprefix('hue_error_')} {v:.1f}°" for k, v in ceiling.items() if "hue_error_" in k)
        lines += [
            "",
            f"Tokenizer reconstructions: PSNR {ceiling['psnr']:.2f} dB against the renders (the decoder's output; "
            f"{ceiling.get('psnr_mp4', float('nan')):.2f} dB read back from the mp4); median hue error per "
            f"color {hues}; squares keep {ceiling['square_corner']:.2f} of their squareness (median).",
        ]
    lines.append("")
    for key in summary:
        mode, order, split = key.split("/")
        if split == "all-classes" and mode != "tokenizer":
            lines.append(f"![{mode} {order}](sheet_{mode}_{order}.png)\n")
        elif mode == "tokenizer":
            lines.append("![tokenizer reconstructions](sheet_tokenizer_reconstruction.png)\n")
    return "\n".join(lines)


HOLDOUT_VIDEOS = 48  # the default held-out row: each of 3 combinations in all 16 fresh phrasings


def model_holdout(model: str | os.PathLike) -> str:
    """The held-out combinations recorded with a model (its ``holdout.json``, a JSON list of combination strings),
    comma-separated; "" if none.

    Raises:
        ValueError: a ``holdout.json`` that is not such a list (``[1, 2]`` and ``null`` were tracebacks, a string was
            read letter by letter, a mapping was taken as its keys), naming the file.
    """
    card = Path(model) / HOLDOUT_FILE
    if not card.is_file():
        return ""
    combos = read_json(card, "held-out combinations")
    if not isinstance(combos, list) or not all(isinstance(c, str) and "," not in c for c in combos):
        raise ValueError(f'{str(card)!r} must be a JSON list of combinations such as "green triangle up"')
    return ",".join(combos)


def evaluate_adherence(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    num_videos: int = 216,
    holdout_videos: int | None = None,
    modes: Sequence[str] = (),
    orders: Sequence[str] = (),
    holdout: str | None = None,
    phrasing: str = "fresh",
    batch: int = 8,
    sampling: dict[str, Any] | None = None,
    seed: int = DEFAULT_SEED,
    recon_videos: int = 0,
    pipe: VideoPipeline | None = None,
) -> dict[str, dict[str, float]]:
    """Generates, judges and reports; writes ``results.json``, ``report.md``, the videos and contact sheets.

    Args:
        model: pipeline directory.
        out: report folder (created).
        num_videos: videos per mode and order, cycling through all 72 classes (0 skips them).
        holdout_videos: videos per mode and order for the held-out combinations alone (0 skips them); None:
            :data:`HOLDOUT_VIDEOS` when the model has held-out combinations, else 0.
        modes: modes to evaluate (default: all in the model).
        orders: orders to try per mode (default: each mode's default order).
        holdout: held-out combinations, e.g. ``"green triangle up"`` (default: the model's ``holdout.json``).
        phrasing: ``"fresh"`` (phrasings training never used) or ``"training"`` (the training templates).
        batch: videos per pipeline call.
        sampling: sampling fields to override for every mode (``steps``, ``cfg_scale``, ...), applied by
            :meth:`PipelineSpec.sampling_for`: None values keep the model's, an unknown field is an error.
        seed: seed of the phrasings and of the first batch (later batches add their offset). Choose settings
            on other seeds than the ones you report (:data:`videoeval.phrasings.SELECTION_SEEDS`).
        recon_videos: also judge the tokenizer on this many fresh renders of all classes (0 skips it).
        pipe: ``model`` already loaded (None: load it here).

    Returns:
        ``"mode/order/split"`` -> :func:`videoeval.shapes_scoring.summarize` of its videos (``split`` is
        ``all-classes`` or ``held-out``), and ``"tokenizer/reconstruction/all-classes"`` with the ceiling's
        numbers when asked.

    Raises:
        ValueError: bad counts, an unknown mode, order, phrasing, combination or sampling setting, an invalid
            sampling value, or a model that does not load; each before anything is written.
    """
    if batch < 1 or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--batch must be >= 1 and --seed in [0, 2**62], got {batch} and {seed}")
    held = parse_holdout((model_holdout(model) if holdout is None else holdout) or None)
    if holdout_videos is None:  # the default: the held-out rows when the model holds combinations out
        holdout_videos = HOLDOUT_VIDEOS if held else 0
    if num_videos < 0 or holdout_videos < 0 or recon_videos < 0:
        raise ValueError("--num-videos, --holdout-videos and --recon-videos must be >= 0 (0 skips them)")
    if not (num_videos or holdout_videos or recon_videos):
        raise ValueError("--num-videos, --holdout-videos and --recon-videos are all 0: nothing to evaluate")
    if phrasing not in PHRASINGS:
        raise ValueError(f"unknown phrasing {phrasing!r}; choose from {', '.join(PHRASINGS)}")
    if holdout_videos and not held:  # the row was dropped without a word, and a run of it alone wrote an empty report
        raise ValueError(
            f"--holdout-videos {holdout_videos} but the model has no held-out combinations (no {HOLDOUT_FILE}, or "
            "--holdout ''): name them with --holdout, or give --holdout-videos 0"
        )
    pipe = VideoPipeline.from_pretrained(model) if pipe is None else pipe
    runs = evaluation_runs(pipe, modes, orders, sampling)  # all checked before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    summary, everything = {}, {}
    if recon_videos:
        key = "tokenizer/reconstruction/all-classes"
        results, extra, shown = ceiling_results(pipe.tokenizer, out / "videos" / "tokenizer", num_videos=recon_videos,
                                                seed=seed, batch=batch)  # fmt: skip
        summary[key], everything[key] = {**summarize(results), **extra, **coverage(recon_videos)}, results
        write_contact_sheet(out / "sheet_tokenizer_reconstruction.png", shown)
    for mode, order, settings in runs:
        if num_videos:
            folder = out / "videos" / f"{mode}_{order}"
            folder.mkdir(parents=True, exist_ok=True)
            rows = plan(num_videos, seed, phrasing)
            results, shown = evaluate(pipe, mode, order, rows, batch, seed, settings, folder)
            key = f"{mode}/{order}/all-classes"
            summary[key], everything[key] = {**summarize(results), **coverage(num_videos)}, results
            write_contact_sheet(out / f"sheet_{mode}_{order}.png", shown)
        if held and holdout_videos > 0:
            rows = plan(holdout_videos, seed + 1, phrasing, [label_of(*h) for h in held])
            folder = out / "videos" / f"{mode}_{order}_held_out"
            folder.mkdir(parents=True, exist_ok=True)
            results, _ = evaluate(pipe, mode, order, rows, batch, seed + 10_000, settings, folder)
            key = f"{mode}/{order}/held-out"
            summary[key], everything[key] = {**summarize(results), **coverage(holdout_videos, len(held))}, results
    seconds = time.time() - start
    results_json = {"model": str(model), "phrasing": phrasing, "seed": seed, "summary": summary, "videos": everything}
    atomic_write_json(out / "results.json", results_json)
    atomic_write_text(out / "report.md", report_markdown(summary, str(model), seconds, phrasing, seed))
    return summary


SHAPES_TASKS = ("prompts", *CONDITIONING_TASKS)


REPORT_FILES = ("results.json", "conditioning.json")  # what a report folder holds once written


def evaluate_shapes(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tasks: Sequence[str] = ("prompts",),
    conditioning_videos: int = 72,
    device: torch.device | str = "cpu",
    **adherence: Any,
) -> dict[str, dict[str, float]]:
    """The shapes-world evaluations asked for: prompt adherence (``"prompts"``, :func:`evaluate_adherence` with
    ``adherence`` as its keyword arguments) and the visual-conditioning tasks (:func:`conditioning_report`),
    with the pipeline on ``device``. Sampling draws from a ``torch.Generator`` on that device, so a GPU makes
    other videos than the CPU from the same seed: the rates compare, the videos do not.

    Returns:
        Every row's summary: ``"mode/order/split"`` for prompts, ``"mode/order/task"`` for the others.

    Raises:
        ValueError: no task or an unknown one, and whatever the evaluations refuse.
    """
    unknown = sorted(set(tasks) - set(SHAPES_TASKS))
    if unknown or not tasks:
        raise ValueError(f"unknown tasks {unknown or list(tasks)}; choose from {', '.join(SHAPES_TASKS)}")
    if not 0 <= adherence.get("seed", DEFAULT_SEED) <= MAX_SEED:  # numpy's / torch's messages do not name the flag
        raise ValueError(f"--seed must be in [0, 2**62], got {adherence['seed']}")
    visual = [t for t in tasks if t != "prompts"]
    if visual and conditioning_videos < 1:
        raise ValueError("--conditioning-videos must be >= 1")
    check_dir_target(out, "--out")  # "[Errno 17] File exists", not naming the flag, before
    check_not_over_inputs(out, {"--model": model}, "--out")
    earlier = [name for name in REPORT_FILES if (Path(out) / name).exists()]
    if earlier:  # the earlier report was replaced, and its videos stayed beside the new ones that it no longer lists
        raise ValueError(f"--out {str(out)!r} already holds a report ({', '.join(earlier)}): give a new folder")
    pipe = VideoPipeline.from_pretrained(model).to(device)  # once for every task
    summary: dict[str, dict[str, float]] = {}
    if "prompts" in tasks:
        summary.update(evaluate_adherence(model, out, pipe=pipe, **adherence))
    if visual:
        keep = {k: adherence[k] for k in ("modes", "orders", "batch", "sampling") if k in adherence}
        keep["seed"] = adherence.get("seed", DEFAULT_SEED)  # the phrasings' seed also renders and samples the clips
        summary.update(conditioning_report(model, out, tasks=visual, num_videos=conditioning_videos, pipe=pipe, **keep))
    return summary
