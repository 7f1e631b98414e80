"""The run vocabulary shared by every training task: ``run.*`` in both trainers' YAML files.

One :class:`RunConfig` describes how long a run lasts, how it is batched, which engine and
precision it uses, what it does with non-finite values, and when it logs, evaluates, samples and
checkpoints. A task that cannot honour a field says so at start-up (``unsupported``), so a
setting is never silently ignored. Keys renamed by the layout redesign are refused with a
message that names the new key (:data:`RENAMED`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

# Old dotted key -> new dotted key. An old section name maps whole sections ("train" -> "run").
RENAMED: dict[str, str] = {
    "train.save_every": "run.checkpoint_every",
    "train.batch_size": "run.micro_batch",
    "train.preview_every": "run.sample_every",
    "train": "run",
    "data.micro_batch": "run.micro_batch",
}


MAX_RUN_SEED = 2**53  # seed * 1000 + rank stays within int64 (torch.manual_seed); exact as a JSON number


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Length, batching, engine, guards, logging and checkpoints of one training run.

    Attributes:
        steps: optimizer steps (the learning-rate schedule spans them).
        max_minutes: also stop once this much wall time has passed, decided by all ranks together
            (0 = no limit); the run then checkpoints and exports as at its last step.
        seed: seeds the weights, the data order and every random draw of the objective.
        micro_batch: clips per process per micro-step (``optim.grad_accum`` micro-steps a step).
        precision: "fp32", "bf16" or "fp16" (DeepSpeed's mixed precision).
        deepspeed: engine JSON holding engine keys only (ZeRO stage, offload, buckets).
        zero_stage: overrides the JSON's ZeRO stage when set.
        deterministic: ``torch.use_deterministic_algorithms`` for bit-exact resume.
        nonfinite: "skip": a micro-batch with a non-finite loss is dropped (the next one takes its
            place) and a non-finite gradient skips the step; "stop": either ends the run (an fp16
            gradient overflow, the loss scaler's probe, is skipped under both).
        max_nonfinite: this many non-finite micro-batches or steps in a row end the run even under "skip".
        ema_decay: EMA of the weights (0 = off); exported instead of the raw weights when on.
        checkpoint_every / keep_last: checkpoints under ``<out>/checkpoints`` every N steps and at the
            last step, keeping the last K (``checkpoint_every: 0`` = no checkpoints, export only).
        log_every: progress-bar and ``metrics.jsonl`` rows every N steps (and at step 1).
        eval_every / eval_batches: periodic held-out loss over fixed batches (0 = off); ``eval_batches`` counts
            micro-batches per rank, so the clips scored are eval_batches x micro_batch x ranks (not the global
            batch: one rank of 4 clips and two of 1 clip with grad_accum 2 score different clips).
        sample_every / num_samples: sample outputs every N steps: generated videos for a generator,
            originals over reconstructions for a tokenizer (0 = off).
        sample_steps: MaskGIT steps per unit for generator samples.
        tensorboard: also log to ``<out>/tensorboard``.
        peak_tflops: the device's peak, for the MFU estimate (0 = unknown, not logged).
        num_threads: ``torch.set_num_threads`` (0 = torch's default).
        init_from: an exported model folder whose weights start the run instead of a random init
            (fine-tuning, or warm-starting one generator style from the other). A run that resumes
            from its own checkpoint ignores it.
        compile: ``torch.compile`` (inductor) the training forward before the engine wraps it. Losses
            equal eager ones within float tolerance (tested); the first steps pay the compilation.
            Needs ZeRO stage 0-2.
    """

    steps: int = 1000
    max_minutes: float = 0.0
    seed: int = 0
    micro_batch: int = 8
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    deepspeed: str = ""
    zero_stage: int | None = None
    deterministic: bool = False
    nonfinite: Literal["skip", "stop"] = "skip"
    max_nonfinite: int = 10
    ema_decay: float = 0.0
    checkpoint_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 4
    sample_every: int = 0
    num_samples: int = 4
    sample_steps: int = 8
    tensorboard: bool = False
    peak_tflops: float = 0.0
    num_threads: int = 0
    init_from: str = ""
    compile: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0 or self.micro_batch < 1:
            raise ValueError(f"run.steps must be >= 0 and run.micro_batch >= 1, got {self.steps}, {self.micro_batch}")
        if self.zero_stage is not None and self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"run.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.max_nonfinite < 1:
            raise ValueError(f"run.max_nonfinite must be >= 1, got {self.max_nonfinite}")
        if self.precision not in ("fp32", "bf16", "fp16") or self.nonfinite not in ("skip", "stop"):
            raise ValueError(f"run.precision / run.nonfinite: unknown value {self.precision!r} / {self.nonfinite!r}")
        # NaN fails every comparison below, so it is refused too (it would have turned the EMA or the time limit off)
        if not (self.max_minutes >= 0 and math.isfinite(self.max_minutes)):
            raise ValueError(f"run.max_minutes must be >= 0 (0 = no limit), got {self.max_minutes}")
        if not (self.ema_decay == 0 or 0 < self.ema_decay < 1):
            raise ValueError(f"run.ema_decay must be 0 (off) or in (0, 1), got {self.ema_decay}")
        if not self.peak_tflops >= 0:
            raise ValueError(f"run.peak_tflops must be >= 0 (0 = unknown), got {self.peak_tflops}")
        at_least = {"seed": 0, "checkpoint_every": 0, "keep_last": 1, "log_every": 1, "eval_every": 0,
                    "eval_batches": 1, "sample_every": 0, "num_samples": 1, "sample_steps": 1,
                    "num_threads": 0}  # fmt: skip
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"run.{name} must be >= {low}, got {getattr(self, name)}")
        if self.seed >= MAX_RUN_SEED:  # the trainers seed each rank with seed * 1000 + rank, which must stay int64
            raise ValueError(f"run.seed must be < 2**53, got {self.seed}")


def check_supported(run: RunConfig, unsupported: tuple[str, ...], task: str) -> None:
    """Refuses ``run.*`` fields that ``task`` cannot honour when they differ from their defaults.

    Raises:
        ValueError: naming each such field.
    """
    default = RunConfig()
    names = {f.name for f in fields(RunConfig)}
    unknown = [n for n in unsupported if n not in names]
    if unknown:
        raise AssertionError(f"{task}: unsupported names no RunConfig field: {unknown}")
    bad = [f"run.{n}" for n in unsupported if getattr(run, n) != getattr(default, n)]
    if bad:
        raise ValueError(f"{', '.join(bad)} is not supported by the {task} trainer; remove it from the config")
