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

import importlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.measure import failure_line
from bench.table import format_table, goal_text
from core.cli import CliParser, run_cli, setup_logging
from core.files import atomic_write_json, check_file_target

log = logging.getLogger("bench.run")

ROOT = Path(__file__).resolve().parents[1]

# name -> (module, needs the bench venv)
BENCHES: dict[str, tuple[str, bool]] = {
    "tokenizer": ("bench.tokenizer_throughput", True),
    "cache": ("bench.cache_throughput", False),
    "generator": ("bench.generator_bench", False),
    "products": ("bench.decoding_products", False),
    "train": ("bench.train_overhead", False),
    "generate": ("bench.generate_cli", False),
    "serve": ("bench.serve_latency", False),
}
VENV_PYTHON = ROOT / ".bench-venv" / "bin" / "python"


def machine_facts() -> dict:
    """CPU model, core count, torch version, GPU name (or None), Python version and load average."""
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
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "gpu": gpu,
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
    }


def run_in_venv(module: str, quick: bool) -> list[dict]:
    """Runs one benchmark module as a script in the bench venv; returns its records."""
    script = ROOT / (module.replace(".", "/") + ".py")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        cmd = [str(VENV_PYTHON), str(script), "--json", str(out)] + (["--quick"] if quick else [])
        # The bench venv holds the peers, not tokvid: the checkout is put on its import path.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, env=env)
        if proc.returncode != 0:
            raise RuntimeError(failure_line(proc))
        data = json.loads(out.read_text())
        return data["records"] if isinstance(data, dict) else data


def collect(names: list[str], quick: bool) -> list[dict]:
    """Runs the named benchmarks in order; a benchmark that cannot run gives one "skipped" record with the reason."""
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
            rows = [
                {
                    "name": f"{name}: skipped",
                    "ours": None,
                    "peer": None,
                    "unit": "",
                    "ratio": None,
                    "goal": None,
                    "met": None,
                    "note": str(err),
                }
            ]
        for r in rows:
            r.setdefault("bench", name)
            normalize_goal(r)
        records += rows
        log.info("[%s] %d record(s) in %.0f s", name, len(rows), time.time() - t0)
    return records


def normalize_goal(record: dict) -> dict:
    """Writes a numeric goal as text with its direction (``goal_op``, ">=" unless given), e.g.
    ``{"goal": 1.0, "goal_op": "<="}`` -> ``"<= 1"``; the JSON then reads the same as the table."""
    if record.get("goal") is not None:
        record["goal"] = goal_text(record)
    record.pop("goal_op", None)
    return record


def run_benchmarks(names: Sequence[str], quick: bool, json_path: str | os.PathLike | None = None) -> list[dict]:
    """Runs the named benchmarks (all of ``BENCHES`` when empty) and optionally writes records plus machine facts.

    Raises:
        ValueError: an unknown benchmark name.
    """
    names = list(names) or list(BENCHES)
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHES)}")
    if json_path is not None:
        check_file_target(json_path, "--json")  # before the benchmarks run (tens of minutes)
    start = time.time()
    records = collect(names, quick)
    if json_path is not None:
        write_records(json_path, records, quick, time.time() - start)
    return records


def write_records(path: str | os.PathLike, records: list[dict], quick: bool, seconds: float) -> None:
    atomic_write_json(path, {"machine": machine_facts(), "quick": quick, "seconds": seconds, "records": records})


def _main(argv: Sequence[str] | None) -> int:
    p = CliParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (about 2 minutes)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {sorted(BENCHES)}")
    p.add_argument("--json", help="write records and machine facts here")
    args = p.parse_args(argv)
    setup_logging()
    if args.json is not None:
        check_file_target(args.json, "--json")
    start = time.time()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.only.strip() and not names:  # "," meant "all" (tens of minutes)
        raise ValueError(f"--only {args.only!r} names no benchmark: give some of {sorted(BENCHES)}")
    records = run_benchmarks(names, args.quick, None)
    print(format_table(records), flush=True)  # the table first: a failed write must not lose the run's results
    for r in records:  # why, under the table (the reason was only in the JSON)
        if r["name"].endswith(": skipped"):
            print(f"{r['name']}: {r['note']}", flush=True)
    if args.json is not None:
        write_records(args.json, records, args.quick, time.time() - start)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmarks and prints the table; 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
