"""Wall time and peak RSS of ``python generate.py`` with defaults, start to mp4, beside ``import torch``.

Goals: at most 3.5 s wall (the median of 5 whole-process runs) and 2 GB peak RSS for one
17-frame video on 2 CPU cores with the shipped model. The floor is ``python -c "import torch"``,
run alternately with it. A breakdown splits one run into interpreter start and imports before
the CLI's ``main``, loading (pipeline, text encoder, lazy imports) and writing, sampling and
decoding (the last two from the CLI's own report), and lists the costliest imports
(``python -X importtime``).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from bench.measure import failure_line, run_measured
from bench.table import check_json_target
from core.cli import CliParser, run_cli
from core.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_MODEL = ROOT / "models" / "shapes"
RUNS, QUICK_RUNS = 5, 2
WALL_GOAL_S, RSS_GOAL_MIB = 3.5, 2e9 / 2**20  # 2 GB = 1,907 MiB (psutil's RSS is in bytes)


def measure(model: Path, extra: list[str], importtime: bool = False) -> dict:
    """Runs generate.py once in a fresh process; returns wall seconds, peak RSS (MiB), the CLI's own
    split and, with ``importtime``, the seconds of each top-level import."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            *(["-X", "importtime"] if importtime else []),
            str(ROOT / "generate.py"),
            "--model",
            str(model),
            "--quiet",
            "--out",
            f"{tmp}/v.mp4",
            *extra,
        ]
        m = run_measured(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp)
        proc, wall = m.proc, m.seconds
        if proc.returncode == 2:  # generate.py's answer to bad input (here: an unusable model folder)
            raise ValueError(failure_line(proc).removeprefix("error: "))
        if proc.returncode != 0:
            raise RuntimeError(failure_line(proc))
        if not Path(f"{tmp}/v.mp4").is_file():
            raise RuntimeError("generate.py wrote no mp4")
    split = re.search(r"([\d.]+) s total, ([\d.]+) s sampling, ([\d.]+) s decoding", proc.stdout)
    result = {
        "wall": wall,
        "rss_mib": m.peak_rss_mib,
        "cli_total": float(split.group(1)),
        "sampling": float(split.group(2)),
        "decoding": float(split.group(3)),
    }
    if importtime:  # "import time: self [us] | cumulative | imported package"; top level = one space of indent
        tops = re.findall(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)", proc.stderr)
        result["imports"] = {name.strip(): int(us) / 1e6 for us, name in tops}
    return result


def import_torch_s() -> float:
    """Wall seconds of ``python -c "import torch"``: the floor of any tokvid command."""
    m = run_measured([sys.executable, "-c", "import torch"])
    if m.proc.returncode != 0:
        raise RuntimeError("python -c 'import torch' failed")
    return m.seconds


def breakdown(model: Path) -> dict:
    """One run split into phases (seconds) and its ten costliest top-level imports."""
    r = measure(model, [], importtime=True)
    phases = {
        "interpreter start and imports before main": r["wall"] - r["cli_total"],
        "loading (pipeline, text encoder, lazy imports) and writing": r["cli_total"] - r["sampling"] - r["decoding"],
        "sampling": r["sampling"],
        "decoding": r["decoding"],
        "whole process (under -X importtime)": r["wall"],
    }
    top = dict(sorted(r["imports"].items(), key=lambda kv: -kv[1])[:10])
    return {"phases": phases, "top_imports": top}


def info(name: str, seconds: float) -> dict:
    """An informational row: seconds, no peer and no goal."""
    return {"name": name, "ours": seconds, "peer": None, "unit": "s", "ratio": None, "goal": None, "met": None}


def run(quick: bool, model: Path = DEFAULT_MODEL) -> list[dict]:
    model = Path(model).resolve()  # generate.py runs in a temporary folder: a relative path would point there
    if not (model / "pipeline.yaml").is_file():
        raise ValueError(f"--model {str(model)!r} holds no pipeline.yaml: give a pipeline folder")
    runs, floors = [], []
    for _ in range(QUICK_RUNS if quick else RUNS):  # alternate, so other load hits both alike
        runs.append(measure(model, []))
        floors.append(import_torch_s())
    wall, floor = statistics.median(r["wall"] for r in runs), statistics.median(floors)
    mid = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
    rss = max(r["rss_mib"] for r in runs)
    records = [
        {
            "name": f"generate.py defaults: wall, median of {len(runs)} (s) vs import torch",
            "ours": wall,
            "peer": floor,
            "unit": "s",
            "ratio": wall / floor,
            "goal": f"<= {WALL_GOAL_S} s",
            "met": wall <= WALL_GOAL_S,
        },
        {
            "name": "generate.py defaults: peak RSS (MiB)",
            "ours": rss,
            "peer": RSS_GOAL_MIB,
            "unit": "MiB",
            "ratio": rss / RSS_GOAL_MIB,
            "goal": "<= 2 GB (1,907 MiB)",
            "met": rss <= RSS_GOAL_MIB,
        },
        {
            "name": "generate.py defaults: sampling / decoding (s)",
            "ours": mid["sampling"],
            "peer": mid["decoding"],
            "unit": "s",
            "ratio": None,
            "goal": None,
            "met": None,
        },
    ]
    if not quick:
        parts = breakdown(model)
        rows = [(f"generate.py breakdown: {k} (s)", v) for k, v in parts["phases"].items()]
        rows += [(f"generate.py import {k} (s, cumulative)", v) for k, v in parts["top_imports"].items()]
        records += [info(name, seconds) for name, seconds in rows]
        config = yaml.safe_load((model / "pipeline.yaml").read_text())
        for mode in sorted(set(config.get("generators", {})) - {config.get("default_mode")}):
            other = measure(model, ["--mode", mode])
            records.append(
                {
                    "name": f"generate.py --mode {mode}: wall time (s)",
                    "ours": other["wall"],
                    "peer": floor,
                    "unit": "s",
                    "ratio": other["wall"] / floor,
                    "goal": None,
                    "met": None,
                }
            )
    return records


def _main(argv: list[str] | None) -> int:
    p = CliParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--json")
    args = p.parse_args(argv)
    check_json_target(args.json, args.model)
    records = run(args.quick, args.model)
    for r in records:
        peer = "" if r["peer"] is None else f" floor/peer={r['peer']:.2f}"
        print(f"{r['name']:64s} ours={r['ours']:.2f}{peer} {r['goal'] or ''} {'' if r['met'] is None else r['met']}")
    if args.json:
        atomic_write_text(args.json, json.dumps(records, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """0, or 2 with one ``error:`` line on bad input (a model folder without pipeline.yaml, a bad --json)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
