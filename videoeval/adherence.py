"""Prompt adherence on the shapes domain: generate from captions, judge each video with the shapes analyzer.

For each mode (and its default order unless others are asked for), :func:`evaluate_adherence`
generates videos from in-distribution captions (every class not held out, several caption
templates, balanced over classes), analyzes each with :func:`videoeval.shapes_analyzer.analyze`
and reports the accuracy of all three attributes together and of each. Held-out attribute
combinations (the model's ``holdout.json``, or given) are generated and reported separately.
It writes ``report.md``, ``results.json`` and one contact sheet per mode and order.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.files import atomic_write_json, atomic_write_text
from core.video_io import write_contact_sheet
from pipelines import VideoPipeline
from pipelines.assemble import HOLDOUT_FILE
from videodata.shapes.dataset import load_clip, parse_holdout, read_manifest
from videodata.shapes.render import NUM_CLASSES, attributes_of, caption_for, label_of
from videoeval.conditioning import TASKS as CONDITIONING_TASKS
from videoeval.conditioning import conditioning_report
from videoeval.shapes_analyzer import analyze

SHEET_VIDEOS = 12  # videos shown on each contact sheet
ATTRIBUTES = ("color", "shape", "motion")

Combination = tuple[str, str, str]  # (color, shape, motion)


def _request(combination: Combination, rng: np.random.Generator) -> dict:
    color, shape, motion = combination
    return {"caption": caption_for(color, shape, motion, rng), "color": color, "shape": shape, "motion": motion}


def plan(num_videos: int, holdout: Sequence[Combination], seed: int) -> list[dict]:
    """Balanced (caption, attributes) requests over the classes not held out."""
    held = {label_of(*h) for h in holdout}
    classes = [c for c in range(NUM_CLASSES) if c not in held]
    rng = np.random.default_rng(seed)
    return [_request(attributes_of(classes[i % len(classes)]), rng) for i in range(num_videos)]


def holdout_plan(num_videos: int, holdout: Sequence[Combination], seed: int) -> list[dict]:
    """(caption, attributes) requests cycling through the held-out combinations."""
    rng = np.random.default_rng(seed)
    return [_request(holdout[i % len(holdout)], rng) for i in range(num_videos)]


def score(frames: np.ndarray, rows: list[dict]) -> list[dict]:
    """Analyzes (B, T, H, W, C) uint8 videos against their requested attributes; one result per video."""
    out = []
    for clip, row in zip(frames, rows):
        a = analyze(clip)
        out.append(
            {
                **row,
                "got": [a.color, a.shape, a.motion],
                "confidence": a.confidence,
                "ok_color": a.color == row["color"],
                "ok_shape": a.shape == row["shape"],
                "ok_motion": a.motion == row["motion"],
                "ok": a.matches(row["color"], row["shape"], row["motion"]),
            }
        )
    return out


def summarize(results: list[dict]) -> dict[str, float]:
    """``n`` and the share of videos right on all three attributes (``all``) and on each."""
    n = max(1, len(results))
    shares = {"all": sum(r["ok"] for r in results) / n}
    shares.update({k: sum(r[f"ok_{k}"] for r in results) / n for k in ATTRIBUTES})
    return {"n": len(results), **shares}


def evaluate(
    pipe: VideoPipeline, mode: str, order: str, rows: list[dict], batch: int, seed: int, overrides: dict | None = None
) -> tuple[list[dict], list[np.ndarray]]:
    """Generates one video per row in batches; returns scored rows and the first videos for a sheet.

    ``overrides`` replaces fields of the model's sampling settings for ``mode`` (e.g. ``cfg_scale``);
    a field the mode's sampler does not have (``steps`` for GPT-style) is left out.
    """
    sampling = pipe.config.sampling.get(mode)
    if sampling is not None and overrides:
        known = {f.name for f in fields(sampling)}
        sampling = replace(sampling, **{k: v for k, v in overrides.items() if k in known and v is not None})
    results, shown = [], []
    for start in tqdm(range(0, len(rows), batch), desc=f"{mode}/{order}", leave=False):
        chunk = rows[start : start + batch]
        out = pipe(
            [r["caption"] for r in chunk],
            mode=mode,
            order=order,
            sampling=sampling,
            generator=torch.Generator().manual_seed(seed + start),
        )
        results += score(out.frames, chunk)
        if len(shown) < SHEET_VIDEOS:
            shown += list(out.frames[: SHEET_VIDEOS - len(shown)])
    return results, shown


@torch.no_grad()
def reconstruction_results(
    tokenizer, manifest: str | os.PathLike, num_videos: int, batch: int
) -> tuple[list[dict], list[np.ndarray]]:
    """The analyzer on the tokenizer's reconstructions of real clips (an upper bound for what
    generated tokens can show): encode, decode, analyze, compare with the manifest's labels."""
    rows = read_manifest(manifest)[:num_videos]
    results, shown = [], []
    for start in tqdm(range(0, len(rows), batch), desc="reconstruction", leave=False):
        chunk = rows[start : start + batch]
        clips = np.stack([load_clip(r["path"]) for r in chunk])  # (B, T, H, W, C) uint8
        video = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (B, C, T, H, W)
        recon = tokenizer.decode(tokenizer.encode(video)).clamp(-1, 1)
        frames = ((recon.permute(0, 2, 3, 4, 1) + 1) * 127.5).round().to(torch.uint8).numpy()  # (B, T, H, W, C)
        requested = [{"caption": r.get("caption", ""), **{k: r[k] for k in ATTRIBUTES}} for r in chunk]
        results += score(frames, requested)
        if len(shown) < SHEET_VIDEOS:
            shown += list(frames[: SHEET_VIDEOS - len(shown)])
    return results, shown


def report_markdown(summary: dict, model: str, seconds: float) -> str:
    """The ``report.md`` page: one table row per mode/order/split, then the contact sheets."""
    lines = [
        "# Prompt adherence on shapes\n",
        f"Model `{model}`; judged by `videoeval.shapes_analyzer`; {seconds:.0f} s.\n",
        "| mode | order | split | videos | all three | color | shape | motion |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, s in summary.items():
        mode, order, split = key.split("/")
        shares = " | ".join(f"{s[k]:.1%}" for k in ("all", *ATTRIBUTES))
        lines.append(f"| {mode} | {order} | {split} | {s['n']} | {shares} |")
    lines.append("")
    for key in summary:
        mode, order, split = key.split("/")
        if split == "in-distribution":
            lines.append(f"![{mode} {order}](sheet_{mode}_{order}.png)\n")
        elif mode == "tokenizer":
            lines.append("![tokenizer reconstructions](sheet_tokenizer_reconstruction.png)\n")
    return "\n".join(lines)


def model_holdout(model: str | os.PathLike) -> str:
    """The held-out combinations recorded with a model (its ``holdout.json``), comma-separated; "" if none."""
    card = Path(model) / HOLDOUT_FILE
    return ",".join(json.loads(card.read_text())) if card.is_file() else ""


def evaluate_adherence(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    num_videos: int = 216,
    holdout_videos: int = 24,
    modes: Sequence[str] = (),
    orders: Sequence[str] = (),
    holdout: str | None = None,
    batch: int = 8,
    sampling: dict[str, Any] | None = None,
    seed: int = 0,
    recon_data: str | os.PathLike | None = None,
    recon_videos: int = 240,
) -> dict[str, dict[str, float]]:
    """Generates, judges and reports; writes ``results.json``, ``report.md`` and contact sheets to ``out``.

    Args:
        model: pipeline directory.
        out: report folder (created).
        num_videos: in-distribution videos per mode and order.
        holdout_videos: videos per mode and order for the held-out combinations (0 skips them).
        modes: modes to evaluate (default: all in the model).
        orders: orders to try per mode (default: each mode's default order).
        holdout: held-out combinations, e.g. ``"green triangle up"`` (default: the model's ``holdout.json``).
        batch: videos per pipeline call.
        sampling: sampling fields to override for every mode (``steps``, ``cfg_scale``, ...); None values keep
            the model's.
        seed: seed of the first batch (later batches add their offset).
        recon_data: a shapes manifest (.jsonl): also judge the tokenizer's reconstructions of its clips.
        recon_videos: clips of ``recon_data`` to reconstruct.

    Returns:
        ``"mode/order/split"`` -> :func:`summarize` of its videos (``split`` is ``in-distribution``,
        ``held-out``, or for ``tokenizer/reconstruction/<manifest>`` the manifest's name).

    Raises:
        ValueError: bad counts, an unknown mode, order or combination, or a model that does not load.
    """
    if num_videos < 1 or batch < 1:
        raise ValueError("--num-videos and --batch must be >= 1")
    if holdout_videos < 0:
        raise ValueError("--holdout-videos must be >= 0 (0 skips the held-out combinations)")
    pipe = VideoPipeline.from_pretrained(model)
    held = parse_holdout((model_holdout(model) if holdout is None else holdout) or None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    summary, everything = {}, {}
    if recon_data:
        key = "tokenizer/reconstruction/" + Path(recon_data).stem
        results, shown = reconstruction_results(pipe.tokenizer, recon_data, recon_videos, batch)
        summary[key], everything[key] = summarize(results), results
        write_contact_sheet(out / "sheet_tokenizer_reconstruction.png", shown)
    for mode in list(modes) or list(pipe.generators):
        for order in list(orders) or [pipe.resolve_mode_order(mode, None)[1]]:
            pipe.resolve_mode_order(mode, order)  # ValueError for an order the mode cannot do
            results, shown = evaluate(pipe, mode, order, plan(num_videos, held, seed), batch, seed, sampling)
            key = f"{mode}/{order}/in-distribution"
            summary[key], everything[key] = summarize(results), results
            write_contact_sheet(out / f"sheet_{mode}_{order}.png", shown)
            if held and holdout_videos > 0:
                rows = holdout_plan(holdout_videos, held, seed + 1)
                results, _ = evaluate(pipe, mode, order, rows, batch, seed + 10_000, sampling)
                key = f"{mode}/{order}/held-out"
                summary[key], everything[key] = summarize(results), results
    seconds = time.time() - start
    results_json = {"model": str(model), "summary": summary, "videos": everything}
    atomic_write_json(out / "results.json", results_json)
    atomic_write_text(out / "report.md", report_markdown(summary, str(model), seconds))
    return summary


SHAPES_TASKS = ("prompts", *CONDITIONING_TASKS)


def evaluate_shapes(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tasks: Sequence[str] = ("prompts",),
    conditioning_videos: int = 72,
    **adherence: Any,
) -> dict[str, dict[str, float]]:
    """The shapes-world evaluations asked for: prompt adherence (``"prompts"``, :func:`evaluate_adherence` with
    ``adherence`` as its keyword arguments) and the visual-conditioning tasks (:func:`conditioning_report`).

    Returns:
        Every row's summary: ``"mode/order/split"`` for prompts, ``"mode/order/task"`` for the others.

    Raises:
        ValueError: no task or an unknown one, and whatever the evaluations refuse.
    """
    unknown = sorted(set(tasks) - set(SHAPES_TASKS))
    if unknown or not tasks:
        raise ValueError(f"unknown tasks {unknown or list(tasks)}; choose from {', '.join(SHAPES_TASKS)}")
    summary: dict[str, dict[str, float]] = {}
    if "prompts" in tasks:
        summary.update(evaluate_adherence(model, out, **adherence))
    visual = [t for t in tasks if t != "prompts"]
    if visual:
        keep = {k: adherence[k] for k in ("modes", "orders", "batch") if k in adherence}
        summary.update(conditioning_report(model, out, tasks=visual, num_videos=conditioning_videos, **keep))
    return summary
