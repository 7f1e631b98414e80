"""Run every benchmark and print one table: benchmark, ours, peer or floor, ratio, goal, met.

    python bench/run.py --quick --json outputs/bench.json     # about 2 minutes on 2 cores
    python bench/run.py --json outputs/bench.json             # the full run

Each benchmark module exposes ``run(quick: bool) -> list[dict]`` and runs our code and its peer
side by side in one run. Benchmarks whose peer needs torchvision (magvit2-pytorch) run in the
bench venv made by ``bash bench/setup_env.sh`` (a subprocess of ``.bench-venv/bin/python``);
without it they are listed as skipped, with the reason. The JSON holds one record per
benchmark plus the machine's facts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# name -> (module, needs the bench venv)
BENCHES: dict[str, tuple[str, bool]] = {
    "tokenizer": ("bench.tokenizer_throughput", True),
    "cache": ("bench.cache_throughput", False),
    "generator": ("bench.generator_bench", False),
    "train": ("bench.train_overhead", False),
    "generate": ("bench.generate_cli", False),
}
VENV_PYTHON = ROOT / ".bench-venv" / "bin" / "python"


def machine_facts() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "gpu": gpu,
            "python": platform.python_version(), "load_average": os.getloadavg()[0]}


def run_in_venv(module: str, quick: bool) -> list[dict]:
    script = ROOT / (module.replace(".", "/") + ".py")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        cmd = [str(VENV_PYTHON), str(script), "--json", str(out)] + (["--quick"] if quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
        data = json.loads(out.read_text())
        return data["records"] if isinstance(data, dict) else data


def collect(names: list[str], quick: bool) -> list[dict]:
    records = []
    for name in names:
        module, venv = BENCHES[name]
        t0 = time.time()
        try:
            if venv:
                if not VENV_PYTHON.exists():
                    raise RuntimeError("bench venv missing: run `bash bench/setup_env.sh` first")
                rows = run_in_venv(module, quick)
            else:
                rows = importlib.import_module(module).run(quick)
        except (ImportError, RuntimeError, ValueError, OSError) as err:
            rows = [{"name": f"{name}: skipped", "ours": None, "peer": None, "unit": "", "ratio": None,
                     "goal": None, "met": None, "note": str(err)}]
        for r in rows:
            r.setdefault("bench", name)
            normalize_goal(r)
        records += rows
        print(f"[{name}] {len(rows)} record(s) in {time.time() - t0:.0f} s", file=sys.stderr)
    return records


def normalize_goal(record: dict) -> dict:
    """Writes a numeric goal as text with its direction (``goal_op``, ">=" unless given), e.g.
    ``{"goal": 1.0, "goal_op": "<="}`` -> ``"<= 1"``; the JSON then reads the same as the table."""
    goal = record.get("goal")
    op = record.pop("goal_op", ">=")
    if isinstance(goal, (int, float)) and not isinstance(goal, bool):
        record["goal"] = f"{op} {goal:g}"
    return record


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def table(records: list[dict]) -> str:
    head = ["benchmark", "ours", "peer/floor", "unit", "ratio", "goal", "met"]
    rows = [[r["name"], fmt(r.get("ours")), fmt(r.get("peer")), r.get("unit", ""), fmt(r.get("ratio")),
             r.get("goal") or "-", {True: "yes", False: "NO", None: "-"}[r.get("met")]] for r in records]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (about 2 minutes)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {sorted(BENCHES)}")
    p.add_argument("--json", help="write records and machine facts here")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHES)
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        print(f"error: unknown benchmark(s) {unknown}; choose from {sorted(BENCHES)}", file=sys.stderr)
        return 2
    start = time.time()
    records = collect(names, args.quick)
    print(table(records))
    if args.json:
        from core.files import atomic_write_text

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": machine_facts(), "quick": args.quick, "seconds": time.time() - start, "records": records}
        atomic_write_text(args.json, json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
