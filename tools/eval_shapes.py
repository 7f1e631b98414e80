"""Prompt adherence on the shapes domain: generate from captions, judge with the shapes analyzer.

    python tools/eval_shapes.py --model models/shapes --num-videos 216 --out outputs/adherence

For each mode (and its default order unless ``--orders`` is given) it generates videos from
in-distribution captions (every class not held out, several caption templates, balanced
over classes), analyzes each with :func:`tools.make_shapes.analyze`, and reports accuracy of
all three attributes together and per attribute. Held-out attribute combinations (the
model card's, or ``--holdout``) are generated and reported separately. Writes
``report.md``, ``results.json`` and one contact sheet per mode and order.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from tqdm import tqdm

from core.cli import run_cli
from core.files import atomic_write_text
from tools.make_shapes import NUM_CLASSES, analyze, attributes_of, caption_for, label_of, parse_holdout
from core.video_io import write_contact_sheet


def plan(num_videos: int, holdout: Sequence[tuple[str, str, str]], seed: int) -> list[dict]:
    """Balanced (caption, attributes) requests over the classes not held out."""
    held = {label_of(*h) for h in holdout}
    classes = [c for c in range(NUM_CLASSES) if c not in held]
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_videos):
        color, shape, motion = attributes_of(classes[i % len(classes)])
        rows.append({"caption": caption_for(color, shape, motion, rng), "color": color, "shape": shape, "motion": motion})
    return rows


def score(frames: np.ndarray, rows: list[dict]) -> list[dict]:
    """Analyzes (B, T, H, W, C) videos against their requested attributes."""
    out = []
    for clip, row in zip(frames, rows):
        a = analyze(clip)
        out.append({**row, "got": [a.color, a.shape, a.motion], "confidence": a.confidence,
                    "ok_color": a.color == row["color"], "ok_shape": a.shape == row["shape"],
                    "ok_motion": a.motion == row["motion"], "ok": a.matches(row["color"], row["shape"], row["motion"])})
    return out


def summarize(results: list[dict]) -> dict[str, float]:
    n = max(1, len(results))
    return {"n": len(results), **{k: sum(r[f"ok_{k}"] if k != "all" else r["ok"] for r in results) / n
                                  for k in ("all", "color", "shape", "motion")}}


def evaluate(pipe, mode: str, order: str, rows: list[dict], batch: int, seed: int,
             overrides: dict | None = None) -> tuple[list[dict], list[np.ndarray]]:
    """Generates one video per row in batches; returns scored rows and the first frames for a sheet.

    ``overrides`` replaces fields of the model's sampling settings for ``mode`` (e.g. ``cfg_scale``);
    a field the mode's sampler does not have (``steps`` for GPT-style) is left out.
    """
    from dataclasses import fields, replace

    sampling = pipe.config.sampling.get(mode)
    if sampling is not None and overrides:
        known = {f.name for f in fields(sampling)}
        sampling = replace(sampling, **{k: v for k, v in overrides.items() if k in known and v is not None})
    results, shown = [], []
    for start in tqdm(range(0, len(rows), batch), desc=f"{mode}/{order}", leave=False):
        chunk = rows[start : start + batch]
        out = pipe([r["caption"] for r in chunk], mode=mode, order=order, sampling=sampling,
                   generator=torch.Generator().manual_seed(seed + start))
        results += score(out.frames, chunk)
        if len(shown) < 12:
            shown += list(out.frames[: 12 - len(shown)])
    return results, shown


@torch.no_grad()
def reconstruction_results(tokenizer, manifest: str, num_videos: int, batch: int) -> tuple[list[dict], list[np.ndarray]]:
    """The analyzer on the tokenizer's reconstructions of real clips (an upper bound for what
    generated tokens can show): encode, decode, analyze, compare with the manifest's labels."""
    from tools.make_shapes import load_clip, read_manifest

    rows = read_manifest(manifest)[:num_videos]
    results, shown = [], []
    for start in tqdm(range(0, len(rows), batch), desc="reconstruction", leave=False):
        chunk = rows[start : start + batch]
        clips = np.stack([load_clip(r["path"]) for r in chunk])  # (B, T, H, W, C) uint8
        video = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (B, C, T, H, W)
        recon = tokenizer.decode(tokenizer.encode(video)).clamp(-1, 1)
        frames = ((recon.permute(0, 2, 3, 4, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        results += score(frames, [{"caption": r.get("caption", ""), "color": r["color"], "shape": r["shape"], "motion": r["motion"]}
                                  for r in chunk])
        if len(shown) < 12:
            shown += list(frames[: 12 - len(shown)])
    return results, shown


def report_markdown(summary: dict, model: str, seconds: float) -> str:
    lines = [f"# Prompt adherence on shapes\n", f"Model `{model}`; judged by `tools/make_shapes.py`'s analyzer; {seconds:.0f} s.\n",
             "| mode | order | split | videos | all three | color | shape | motion |",
             "|---|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        mode, order, split = key.split("/")
        lines.append(f"| {mode} | {order} | {split} | {s['n']} | {s['all']:.1%} | {s['color']:.1%} | {s['shape']:.1%} | {s['motion']:.1%} |")
    lines.append("")
    for key in summary:
        mode, order, split = key.split("/")
        if split == "in-distribution":
            lines.append(f"![{mode} {order}](sheet_{mode}_{order}.png)\n")
        elif mode == "tokenizer":
            lines.append("![tokenizer reconstructions](sheet_tokenizer_reconstruction.png)\n")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from pipelines import VideoPipeline
    from pipelines.cli import DEFAULT_MODEL

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--num-videos", type=int, default=216, help="in-distribution videos per mode and order")
    p.add_argument("--holdout-videos", type=int, default=24, help="videos per mode and order for held-out combinations")
    p.add_argument("--modes", default="", help="comma-separated modes (default: all in the model)")
    p.add_argument("--orders", default="", help="comma-separated orders to try per mode (default: the mode's default)")
    p.add_argument("--holdout", default=None, help='held-out combinations, e.g. "green triangle up" (default: from the model card)')
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="MaskGIT steps (default from the model)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale for every mode (default from the model)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature for every mode (default from the model)")
    p.add_argument("--choice-temperature", type=float, default=None,
                   help="MaskGIT Gumbel noise on confidences (default from the model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recon-data", default=None, help="a shapes manifest (.jsonl): also judge the tokenizer's reconstructions of its clips")
    p.add_argument("--recon-videos", type=int, default=240, help="clips of --recon-data to reconstruct")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.num_videos < 1 or args.batch < 1:
        raise ValueError("--num-videos and --batch must be >= 1")
    if args.holdout_videos < 0:
        raise ValueError("--holdout-videos must be >= 0 (0 skips the held-out combinations)")
    pipe = VideoPipeline.from_pretrained(args.model)
    overrides = {"steps": args.steps, "cfg_scale": args.cfg, "temperature": args.temperature,
                 "choice_temperature": args.choice_temperature}
    card = Path(args.model) / "holdout.json"
    holdout_text = args.holdout if args.holdout is not None else (",".join(json.loads(card.read_text())) if card.is_file() else "")
    holdout = parse_holdout(holdout_text or None)
    modes = [m for m in args.modes.split(",") if m] or list(pipe.generators)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    summary, everything = {}, {}
    if args.recon_data:
        results, shown = reconstruction_results(pipe.tokenizer, args.recon_data, args.recon_videos, args.batch)
        summary["tokenizer/reconstruction/" + Path(args.recon_data).stem] = summarize(results)
        everything["tokenizer/reconstruction/" + Path(args.recon_data).stem] = results
        write_contact_sheet(out / "sheet_tokenizer_reconstruction.png", shown)
    for mode in modes:
        orders = [o for o in args.orders.split(",") if o] or [pipe.resolve_mode_order(mode, None)[1]]
        for order in orders:
            pipe.resolve_mode_order(mode, order)
            rows = plan(args.num_videos, holdout, args.seed)
            results, shown = evaluate(pipe, mode, order, rows, args.batch, args.seed, overrides)
            summary[f"{mode}/{order}/in-distribution"] = summarize(results)
            write_contact_sheet(out / f"sheet_{mode}_{order}.png", shown)
            everything[f"{mode}/{order}/in-distribution"] = results
            if holdout and args.holdout_videos > 0:
                rng = np.random.default_rng(args.seed + 1)
                hrows = [{"caption": caption_for(*holdout[i % len(holdout)], rng), "color": holdout[i % len(holdout)][0],
                          "shape": holdout[i % len(holdout)][1], "motion": holdout[i % len(holdout)][2]}
                         for i in range(args.holdout_videos)]
                hres, _ = evaluate(pipe, mode, order, hrows, args.batch, args.seed + 10_000, overrides)
                summary[f"{mode}/{order}/held-out"] = summarize(hres)
                everything[f"{mode}/{order}/held-out"] = hres
    seconds = time.time() - start
    atomic_write_text(out / "results.json", json.dumps({"model": args.model, "summary": summary, "videos": everything}, indent=1))
    atomic_write_text(out / "report.md", report_markdown(summary, args.model, seconds))
    for key, s in summary.items():
        print(f"{key:40s} n={s['n']:4d}  all={s['all']:.1%}  color={s['color']:.1%}  shape={s['shape']:.1%}  motion={s['motion']:.1%}")
    print(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
