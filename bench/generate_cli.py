"""Wall time and peak RSS of ``python generate.py`` with defaults, start to mp4.

Goals: at most 15 s and 2 GB peak RSS for one 17-frame video on 2 CPU cores with the shipped
model. The split between sampling and decoding comes from the CLI's own report. The floor is
the goal itself (there is no peer: no other stack has a prompt CLI that runs out of the box).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import yaml

from bench.measure import run_measured

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_MODEL = ROOT / "models" / "shapes"


def measure(model: Path, extra: list[str]) -> dict:
    """Runs generate.py once in a fresh process; returns wall seconds, peak RSS (MB) and the split."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            str(ROOT / "generate.py"),
            "--model",
            str(model),
            "--quiet",
            "--out",
            f"{tmp}/v.mp4",
            *extra,
        ]
        m = run_measured(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
        proc, wall = m.proc, m.seconds
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1])
        if not Path(f"{tmp}/v.mp4").is_file():
            raise RuntimeError("generate.py wrote no mp4")
    split = re.search(r"([\d.]+) s sampling, ([\d.]+) s decoding", proc.stdout)
    return {"wall": wall, "rss_mb": m.peak_rss_mb, "sampling": float(split.group(1)), "decoding": float(split.group(2))}


def run(quick: bool, model: Path = DEFAULT_MODEL) -> list[dict]:
    if not (model / "pipeline.yaml").is_file():
        raise RuntimeError(f"no shipped model at {model} yet")
    runs = [measure(model, []) for _ in range(1 if quick else 3)]
    best = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
    records = [
        {
            "name": "generate.py defaults: wall time (s)",
            "ours": best["wall"],
            "peer": 15.0,
            "unit": "s",
            "ratio": best["wall"] / 15.0,
            "goal": "<= 15 s",
            "met": best["wall"] <= 15.0,
        },
        {
            "name": "generate.py defaults: peak RSS (MB)",
            "ours": max(r["rss_mb"] for r in runs),
            "peer": 2048.0,
            "unit": "MB",
            "ratio": max(r["rss_mb"] for r in runs) / 2048.0,
            "goal": "<= 2 GB",
            "met": max(r["rss_mb"] for r in runs) <= 2048,
        },
        {
            "name": "generate.py defaults: sampling / decoding (s)",
            "ours": best["sampling"],
            "peer": best["decoding"],
            "unit": "s",
            "ratio": None,
            "goal": None,
            "met": None,
        },
    ]
    if not quick:  # the model's other modes, each once, against the same 15 s mark
        config = yaml.safe_load((model / "pipeline.yaml").read_text())
        for mode in sorted(set(config.get("generators", {})) - {config.get("default_mode")}):
            other = measure(model, ["--mode", mode])
            records.append(
                {
                    "name": f"generate.py --mode {mode}: wall time (s)",
                    "ours": other["wall"],
                    "peer": 15.0,
                    "unit": "s",
                    "ratio": other["wall"] / 15.0,
                    "goal": None,
                    "met": None,
                }
            )
    return records


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--json")
    args = p.parse_args()
    try:
        records = run(args.quick, Path(args.model))
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in records:
        print(f"{r['name']:48s} ours={r['ours']:.2f} floor/peer={r['peer']:.2f} {r['goal'] or ''} {r['met']}")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
