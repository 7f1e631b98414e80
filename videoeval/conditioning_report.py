"""The visual-conditioning report: every task for each mode and order of a pipeline, written as
``conditioning.md``, ``conditioning.json`` and a contact sheet of continuations with the given frames marked.
The measuring itself is :mod:`videoeval.conditioning`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generator.sampling import SamplingConfig
from pipelines import VideoPipeline
from videoeval.conditioning import CONTEXT_FRAMES, EVAL_SEED, TASKS, as_received, evaluate_conditioning, fresh_clips
from videoeval.phrasings import fresh_captions


def mark_context(frames: np.ndarray, num_context: int) -> np.ndarray:
    """(T, H, W, 3) frames with a 2 px yellow border on the first ``num_context`` (the given frames)."""
    out = frames.copy()
    edge = np.array([255, 220, 0], dtype=np.uint8)
    for t in range(num_context):
        out[t, :2], out[t, -2:], out[t, :, :2], out[t, :, -2:] = edge, edge, edge, edge
    return out


def conditioning_markdown(summary: dict[str, dict[str, float]], model: str, seed: int) -> str:
    """``conditioning.md``: one table per task kind, one row per mode/order."""
    lines = [f"# Visual conditioning on shapes\n\nModel `{model}`; clips rendered and sampled with seed {seed}, "
             "videos judged from mp4 files by `videoeval.shapes_analyzer`.\n"]  # fmt: skip
    kinds: dict[str, list[tuple[str, str, dict]]] = {}
    for key, s in summary.items():
        mode, order, task = key.split("/", 2)
        kinds.setdefault(task, []).append((mode, order, s))
    for task, entries in kinds.items():
        cols = list(entries[0][2])
        lines += [f"## {task}\n", "| mode | order | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for mode, order, s in entries:
            cells = [f"{s[c]:.3g}" if isinstance(s[c], float) else str(s[c]) for c in cols]
            lines.append(f"| {mode} | {order} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def evaluation_runs(
    pipe: VideoPipeline, modes: Sequence[str], orders: Sequence[str], sampling: Mapping[str, Any] | None
) -> list[tuple[str, str, SamplingConfig]]:
    """(mode, order, sampling settings) for every mode (default: all in the model) and order (default: the mode's
    own), with ``sampling`` applied by :meth:`pipelines.spec.PipelineSpec.sampling_for`.

    Raises:
        ValueError: an unknown mode, an order the mode cannot do, or a bad sampling setting.
    """
    runs = []
    for mode in list(modes) or list(pipe.generators):
        default_order = pipe.resolve_mode_order(mode, None)[1]  # an unknown mode fails here, before its orders
        for order in list(orders) or [default_order]:
            pipe.resolve_mode_order(mode, order)
            runs.append((mode, order, pipe.spec.sampling_for(mode, order, sampling)))
    return runs


def conditioning_report(
    model: str | Path,
    out: str | Path,
    *,
    tasks: Sequence[str] = TASKS,
    modes: Sequence[str] = (),
    orders: Sequence[str] = (),
    num_videos: int = 72,
    batch: int = 8,
    seed: int = EVAL_SEED,
    sampling: Mapping[str, Any] | None = None,
    pipe: VideoPipeline | None = None,
) -> dict[str, dict[str, float]]:
    """Every task for each mode (its default order unless ``orders`` are given); writes ``conditioning.md``,
    ``conditioning.json`` and a contact sheet of continuations (context frames marked) to ``out``.
    ``pipe`` is ``model`` already loaded (None: load it here).

    ``sampling`` replaces fields of each mode's sampling settings (``cfg_scale``, ``temperature``, ...) through
    :meth:`PipelineSpec.sampling_for`: None values keep the model's setting, an unknown field is an error.

    Returns:
        ``"mode/order/task"`` -> :func:`summarize_task`.
    """
    from core.files import atomic_write_json, atomic_write_text
    from core.video_write import write_contact_sheet

    if num_videos < 1 or batch < 1:
        raise ValueError("--conditioning-videos and --batch must be >= 1")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"unknown conditioning task(s) {unknown or list(tasks)}; choose from {list(TASKS)}")
    pipe = VideoPipeline.from_pretrained(model) if pipe is None else pipe
    runs = evaluation_runs(pipe, modes, orders, sampling)  # all checked before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary, everything = {}, {}
    for mode, order, settings in runs:
        s, rows = evaluate_conditioning(pipe, mode, order, tasks=tasks, num_videos=num_videos, batch=batch,
                                        seed=seed, sampling=settings)  # fmt: skip
        summary.update({f"{mode}/{order}/{k}": v for k, v in s.items()})
        everything.update({f"{mode}/{order}/{k}": v for k, v in rows.items()})
        if "continuation" in tasks:  # 8 classes' continuations, context frames framed in yellow
            clips = fresh_clips(min(8, num_videos), seed)
            captions = fresh_captions([c.label for c, _ in clips], np.random.default_rng([seed, 1]))
            got = pipe(captions, video=[f[:CONTEXT_FRAMES] for _, f in clips], context_frames=CONTEXT_FRAMES,
                       num_frames=17, mode=mode, order=order, sampling=settings,
                       generator=torch.Generator(pipe.device).manual_seed(seed))  # fmt: skip
            sheet = [mark_context(v, CONTEXT_FRAMES) for v in as_received(got.frames, got.fps)]
            write_contact_sheet(out / f"sheet_continuation_{mode}_{order}.png", sheet)
    atomic_write_json(out / "conditioning.json", {"model": str(model), "seed": seed, "summary": summary,
                                                  "videos": everything})  # fmt: skip
    atomic_write_text(out / "conditioning.md", conditioning_markdown(summary, str(model), seed))
    return summary
