"""Training overhead on CPU: tokvid's DeepSpeed training step against a plain PyTorch loop.

Both sides train the same small class-conditional generator (MaskGIT, one clip unit, or
GPT-style with ``--style ar``; dim 256, depth 4, 4 heads, vocabulary 1000, 5x8x8 token grid,
~3.7M parameters) in fp32 from the same initial weights, on the same batches (micro batch 8),
with the same objective RNG, AdamW hyper-parameters (two parameter groups, as the trainer
makes them), constant learning rate and gradient clipping at 1.0:

- ours: ``videotrain.generator_task.GeneratorTrainer.train_step`` as a run calls it: DeepSpeed engine (ZeRO-0, one
  process, gloo), batches read from a token cache, the NaN guard, the gradient-norm log value.
  The cache is written on the fly (random tokens and labels) with the real cache writer, so
  ``Trainer`` builds exactly as it does for a run.
- peer: a plain loop over the same batches, pre-loaded in memory: ``generator_loss`` ->
  ``backward`` -> ``clip_grad_norm_`` -> ``optimizer.step`` -> ``zero_grad``.

Since both sides do the same arithmetic, their losses agree step by step (to rounding; the
maximum difference is printed, and one over ``SAME_WORK_RTOL`` relative is an error), which checks that the
comparison is like for like.

After warm-up steps, repeats of N timed steps alternate ours/peer (ABBA order, so drift and
other load fall on both alike); the median per-step time gives tokens/s (video tokens: micro
batch x t x h x w per step). Goal: overhead = plain tokens/s / ours tokens/s <= 1.10. The
median process CPU time per step is printed too: on a shared machine it moves less with
other load than wall time does. With other jobs on the CPUs, torch's intra-op threads wait
on each other and step times swing several-fold; ``--threads 1`` gives steadier numbers.

The MFU estimate (``Generator.flops_per_token`` at the sequence length the model processes)
is printed when ``--peak-tflops`` gives the device's peak; the GPU goal (MFU >= 40% for a
~300M model in bf16) is not measurable on a CPU.

    DS_ACCELERATOR=cpu python bench/train_overhead.py [--quick] [--json PATH] [--style ar|maskgit]
        [--threads N] [--peak-tflops T] [--profile STEPS]
"""

from __future__ import annotations

import cProfile
import io
import logging
import math
import os
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import numpy as np
import torch

from bench.table import check_json_target, format_table, record, write_json
from core.cli import CliParser, float_at_least, int_at_least, run_cli
from core.config import build_config
from generator import Generator, generator_loss, processed_length, train_flops_per_clip
from videodata.cache.format import FORMAT_NAME, FORMAT_VERSION, token_dtype
from videodata.cache.reader import ShuffledSampler
from videodata.cache.writer import RankWriter, merge_manifest, prepare_cache_dir
from videotrain import distributed
from videotrain.generator_data import BatchStream
from videotrain.generator_task import GeneratorTrainConfig, GeneratorTrainer
from videotrain.optim import build_adamw

GRID = (5, 8, 8)  # 320 video tokens per clip
DIM, DEPTH, NUM_HEADS, VOCAB, NUM_CLASSES = 256, 4, 4, 1000, 10
MICRO_BATCH = 8
NUM_CLIPS = 64  # 8 batches an epoch; epochs reshuffle
SEED = 0
OVERHEAD_GOAL = 1.10  # ours step time / plain step time = plain tokens/s / ours tokens/s
# Both sides compute the same steps on the same weights and batches: only the order of floating-point sums may differ.
# Losses further apart mean they did different work, and their times do not compare.
SAME_WORK_RTOL = 1e-4
# (warm-up steps, repeats, timed steps per repeat) per side
FULL, QUICK = (2, 12, 1), (2, 4, 1)


# --------------------------------------------------------------------------- setup
def model_overrides(style: str) -> list[str]:
    order = "token" if style == "ar" else "clip"
    return [
        f"model.style={style}",
        f"model.orders=[{order}]",
        f"model.vocab_size={VOCAB}",
        f"model.max_grid=[{','.join(map(str, GRID))}]",
        f"model.dim={DIM}",
        f"model.depth={DEPTH}",
        f"model.num_heads={NUM_HEADS}",
        "model.cond=class",
        f"model.num_classes={NUM_CLASSES}",
    ]


def train_config(style: str, cache: Path) -> GeneratorTrainConfig:
    """The trainer's config: fp32, ZeRO-0, constant lr (no warm-up, no decay), no eval split."""
    return build_config(GeneratorTrainConfig, overrides=[
        *model_overrides(style),
        f"data.cache={cache}", "data.eval_fraction=0.0", f"run.micro_batch={MICRO_BATCH}",
        "optim.warmup_steps=0", "optim.min_lr_ratio=1.0", "optim.grad_accum=1", "optim.grad_clip=1.0",
        "run.precision=fp32", "run.zero_stage=0", f"run.seed={SEED}", "run.steps=1000000",
    ])  # fmt: skip


def write_random_cache(directory: Path, num_clips: int, seed: int) -> None:
    """A valid token cache of ``num_clips`` random (t, h, w) grids with random class labels,
    written by the same writer as ``tools/cache_tokens.py`` (no tokenizer involved)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(num_clips, *GRID))  # (N, t, h, w)
    labels = rng.integers(0, NUM_CLASSES, size=num_clips)
    dtype = token_dtype(VOCAB)
    sources = [{"path": f"random-{i}", "caption": "", "label": int(label)} for i, label in enumerate(labels)]
    spec = {
        "format": FORMAT_NAME,
        "identity": {
            "format_version": FORMAT_VERSION, "tokenizer_fingerprint": "none: random tokens", "codebook_size": VOCAB,
            "grid": list(GRID), "dtype": dtype.name, "clip_spec": {"synthetic": True, "seed": seed},
            "shard_size": num_clips, "world_size": 1, "num_sources": num_clips, "sources_sha256": "",
        },
        "tokenizer": {"path": None},
        "data": "bench/train_overhead.py random tokens",
        "sources": sources,
    }  # fmt: skip
    prepare_cache_dir(directory, spec)
    writer = RankWriter(directory, rank=0, world_size=1, shard_size=num_clips, dtype=dtype, grid=GRID)
    for i in range(num_clips):
        writer.add(ids[i], source=i, clip=0, start=0, stride=1, label=int(labels[i]), caption="", last_of_source=True)
    writer.finish()
    merge_manifest(directory, spec, world_size=1, wait_timeout_s=0.0, elapsed_s=0.0)


class PlainLoop:
    """The reference: a straightforward PyTorch training loop over in-memory batches.

    Same initial weights (same seed before ``Generator``), parameter groups, AdamW settings,
    clipping and objective RNG as :class:`videotrain.generator_task.GeneratorTrainer`, so it does the same arithmetic.
    """

    def __init__(self, cfg: GeneratorTrainConfig, batches: list) -> None:
        torch.manual_seed(cfg.run.seed)
        self.model = Generator(cfg.model).train()
        self.optimizer = build_adamw(self.model, cfg.optim)
        self.params = list(self.model.parameters())
        self.objective, self.grad_clip = cfg.objective, cfg.optim.grad_clip
        self.rng = torch.Generator().manual_seed(cfg.run.seed * 1000)  # the trainer's, rank 0
        self.batches, self.position = batches, 0

    def train_step(self) -> dict[str, float]:
        ids, cond = self.batches[self.position]
        self.position += 1
        loss = generator_loss(self.model, ids, cond, self.objective, self.rng).loss
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": float(loss.detach()), "grad_norm": float(gnorm)}


def same_batches(trainer: GeneratorTrainer, num_steps: int) -> list:
    """The (ids, cond) batches the trainer's stream will draw in its next ``num_steps`` steps,
    materialised now (a fresh stream with the same sampler settings, read by the trainer)."""
    sampler = trainer.stream.sampler
    stream = BatchStream(ShuffledSampler(sampler.n, sampler.seed, 0, 1), trainer.stream.indices)
    stream.load_state_dict(trainer.stream.state_dict())
    mb = trainer.cfg.run.micro_batch
    return [trainer.batch(stream.take(mb)) for _ in range(num_steps)]


# --------------------------------------------------------------------------- the benchmark
def profile_steps(step, num_steps: int, top: int = 25) -> str:
    """cProfile of ``num_steps`` calls of ``step``, timed in process CPU time (steadier than
    wall time on a shared machine): the top functions by own time."""
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    for _ in range(num_steps):
        step()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def check_same_work(logs: dict[str, list[dict]]) -> None:
    """RuntimeError (``bench/run.py`` lists the row as skipped, with this reason) when the two sides' losses part by
    more than :data:`SAME_WORK_RTOL`: the ratio would compare different work. It was printed, never checked."""
    worst = max(abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12) for a, b in zip(logs["ours"], logs["peer"]))
    if worst > SAME_WORK_RTOL:
        raise RuntimeError(
            f"Trainer.train_step and the plain loop did different work: their losses part by {worst:.1e} (relative), "
            f"more than {SAME_WORK_RTOL:g}"
        )


def run(quick: bool = False, style: str = "maskgit", peak_tflops: float = 0.0, profile: int = 0) -> list[dict]:
    """Times ours and the plain loop in this process, interleaved.

    Args:
        quick: 2 warm-up steps and 4 repeats of 1 timed step per side (instead of 2 and 12 x 1).
        style: "maskgit" (order clip) or "ar" (order token).
        peak_tflops: device peak for the MFU rows (0 = no MFU rows).
        profile: when > 0, also cProfile this many extra steps of each side (in ``last_details``).

    Returns:
        Records ``{"name", "ours", "peer", "unit", "ratio", "goal", "met", "goal_op"}``: step
        time (ratio = ours / plain = the overhead; goal <= 1.10), tokens/s, and MFU rows when
        ``peak_tflops`` is given.
    """
    if torch.cuda.is_available():  # the trainer would take the GPU (nccl, cuda:LOCAL_RANK) and the plain loop the CPU
        raise RuntimeError(
            "the training-overhead benchmark measures the CPU path: run it with no CUDA device visible "
            "(CUDA_VISIBLE_DEVICES=)"
        )
    warmup, repeats, per_repeat = QUICK if quick else FULL
    total = warmup + repeats * per_repeat + profile
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="tokvid-train-overhead-") as tmp:
        write_random_cache(Path(tmp) / "cache", NUM_CLIPS, SEED)
        cfg = train_config(style, Path(tmp) / "cache")
        trainer = GeneratorTrainer(cfg, Path(tmp) / "run")
        try:
            plain = PlainLoop(cfg, same_batches(trainer, total))
            if any(
                not torch.equal(a, b)
                for a, b in zip(trainer.model.state_dict().values(), plain.model.state_dict().values())
            ):
                raise RuntimeError("the two sides start from different weights")
            trainer.model.train()
            sides = {"ours": trainer.train_step, "peer": plain.train_step}
            logs: dict[str, list[dict]] = {"ours": [], "peer": []}
            for side, step in sides.items():
                for _ in range(warmup):
                    logs[side].append(step())
            times: dict[str, list[float]] = {"ours": [], "peer": []}
            cpu_times: dict[str, list[float]] = {"ours": [], "peer": []}
            for r in range(repeats):
                for side in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
                    step = sides[side]
                    start, cpu_start = time.perf_counter(), time.process_time()
                    for _ in range(per_repeat):
                        logs[side].append(step())
                    times[side].append((time.perf_counter() - start) / per_repeat)
                    cpu_times[side].append((time.process_time() - cpu_start) / per_repeat)
            load.append(os.getloadavg()[0])
            profiles = {side: profile_steps(step, profile) for side, step in sides.items()} if profile else {}
            num_params = trainer.model.num_params()
            order = trainer.model.config.orders[0]
            seq = processed_length(trainer.model, GRID, order)
            flops_per_clip = train_flops_per_clip(trainer.model, GRID, (order,))
        finally:
            distributed.shutdown()
    if any(entry is None for entry in logs["ours"]):
        raise RuntimeError("the trainer skipped a step (non-finite loss or gradient)")
    loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(logs["ours"], logs["peer"]))
    gnorm_diff = max(abs(a["grad_norm"] - b["grad_norm"]) / b["grad_norm"] for a, b in zip(logs["ours"], logs["peer"]))
    check_same_work(logs)
    step_s = {side: statistics.median(ts) for side, ts in times.items()}
    cpu_s = {side: statistics.median(ts) for side, ts in cpu_times.items()}
    tokens_per_step = MICRO_BATCH * math.prod(GRID)
    tok_s = {side: tokens_per_step / s for side, s in step_s.items()}
    tag = f"{style}, {'x'.join(map(str, GRID))}, B={MICRO_BATCH}"
    records = [
        record(
            f"train step time ({tag}): Trainer.train_step vs plain torch",
            1e3 * step_s["ours"],
            1e3 * step_s["peer"],
            "ms",
            OVERHEAD_GOAL,
            "<=",
        ),
        record(f"training throughput ({tag})", tok_s["ours"], tok_s["peer"], "tok/s", None),
    ]
    if peak_tflops > 0:
        mfu = {side: 100 * flops_per_clip * MICRO_BATCH / s / (peak_tflops * 1e12) for side, s in step_s.items()}
        records.append(record(f"MFU at a peak of {peak_tflops:g} TFLOP/s", mfu["ours"], mfu["peer"], "%", None))
    run.last_details = {  # type: ignore[attr-defined]  # for --json and the printout
        "times_s": times, "median_step_s": step_s, "tokens_per_s": tok_s, "overhead": step_s["ours"] / step_s["peer"],
        "paired_overhead": statistics.median(a / b for a, b in zip(times["ours"], times["peer"])),
        "best_overhead": min(times["ours"]) / min(times["peer"]),
        "cpu_times_s": cpu_times, "median_cpu_step_s": cpu_s, "cpu_overhead": cpu_s["ours"] / cpu_s["peer"],
        "losses": {side: [entry["loss"] for entry in logs[side]] for side in logs},
        "max_loss_diff": loss_diff, "max_grad_norm_rel_diff": gnorm_diff,
        "num_params": num_params, "processed_tokens_per_clip": seq, "train_flops_per_clip": flops_per_clip,
        "warmup_steps": warmup, "repeats": repeats, "steps_per_repeat": per_repeat,
        "load_avg_1min": load, "num_threads": torch.get_num_threads(), "torch": torch.__version__, "profiles": profiles,
    }  # fmt: skip
    return records


def _main(argv: Sequence[str] | None) -> int:
    parser = CliParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 warm-up steps, 4 repeats of 1 timed step per side (default 2, 12 x 1)"
    )
    parser.add_argument("--threads", type=int_at_least(1), default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--json", metavar="PATH", help="also write the records, config and raw timings as JSON")
    parser.add_argument(
        "--style", choices=("maskgit", "ar"), default="maskgit", help="generator style (default: %(default)s)"
    )
    parser.add_argument(
        "--peak-tflops", type=float_at_least(0.0), default=0.0, help="device peak TFLOP/s for an MFU estimate (0: none)"
    )
    parser.add_argument(
        "--profile", type=int_at_least(0), default=0, metavar="STEPS", help="also cProfile STEPS steps of each side"
    )
    args = parser.parse_args(argv)
    check_json_target(args.json)  # before the benchmark, not after it
    warnings.filterwarnings("ignore")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    for name in ("DeepSpeed", "deepspeed", "train"):
        logging.getLogger(name).setLevel(logging.WARNING)

    records = run(quick=args.quick, style=args.style, peak_tflops=args.peak_tflops, profile=args.profile)
    d = run.last_details  # type: ignore[attr-defined]
    print(
        f"training overhead, CPU fp32, torch {d['torch']}, {d['num_threads']} threads: {args.style} generator "
        f"dim {DIM} depth {DEPTH} heads {NUM_HEADS} vocab {VOCAB}, {d['num_params'] / 1e6:.2f}M params; "
        f"{d['warmup_steps']} warm-up steps, then {d['repeats']} x {d['steps_per_repeat']} timed steps per side, "
        "ours/plain alternating (median)"
    )
    print(format_table(records))
    spread = ", ".join(f"{side} {1e3 * min(ts):.0f}-{1e3 * max(ts):.0f} ms" for side, ts in d["times_s"].items())
    print(
        f"overhead (plain tok/s / ours tok/s): {d['overhead']:.3f} (goal <= {OVERHEAD_GOAL:.2f}); median of the "
        f"per-repeat ratios {d['paired_overhead']:.3f}, of the fastest steps {d['best_overhead']:.3f}; "
        f"step times: {spread}"
    )
    print(
        f"process CPU time per step (less sensitive to other load): ours {d['median_cpu_step_s']['ours']:.3f} s, "
        f"plain {d['median_cpu_step_s']['peer']:.3f} s, ratio {d['cpu_overhead']:.3f}"
    )
    print(
        f"same work: max |loss ours - loss plain| over {len(d['losses']['ours'])} steps = {d['max_loss_diff']:.2e}, "
        f"grad norm rel. diff {d['max_grad_norm_rel_diff']:.1e}"
    )
    if args.peak_tflops <= 0:
        print(
            "MFU: pass --peak-tflops for an estimate; the GPU goal (>= 40% for a ~300M model in bf16) "
            "is not measurable on CPU"
        )
    for side, text in d["profiles"].items():
        print(f"\n---- cProfile (process CPU time), {side}, {args.profile} steps\n{text}")
    load = max(d["load_avg_1min"])
    if load > 1.5:
        print(f"warning: 1-min load average reached {load:.1f} on {os.cpu_count()} CPUs; other work skews the timings")
    if args.json:
        payload = {
            "benchmark": "train_overhead",
            "quick": args.quick,
            "style": args.style,
            "config": asdict(train_config(args.style, Path("<temp>/cache"))),
            "records": records,
            "details": d,
        }
        write_json(args.json, payload)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0, or 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
