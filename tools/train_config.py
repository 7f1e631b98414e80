"""The generator training config: model, objective, data, optimizer, precision, checkpoints, logging.

Loaded from YAML files merged with dotted CLI overrides (``optim.lr=3e-4``); a typo or a wrong
type is an error. The resolved config is saved next to every checkpoint and export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from generator import GeneratorConfig, ObjectiveConfig
from generator.text_encoders import TextEncoderConfig


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Cached token shards and how batches are drawn.

    Attributes:
        cache: folder written by ``tools/cache_tokens.py``.
        tokenizer: the frozen tokenizer's folder: its fingerprint must match the cache, and it
            decodes sample videos.
        eval_fraction: share of clips held out for the periodic eval loss.
        micro_batch: clips per process per micro-step.
        text_encoder: frozen text encoder for text-conditional models (captions come from the cache).
    """

    cache: str = ""
    tokenizer: str = ""
    eval_fraction: float = 0.02
    micro_batch: int = 8
    text_encoder: TextEncoderConfig | None = None


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW (a torch optimizer handed to DeepSpeed), warmup then cosine decay."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    eps: float = 1e-8
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Length, precision, engine, checkpoints and logging of a run.

    Attributes:
        steps: optimizer steps (the LR schedule spans them).
        max_minutes: also stop once this much wall time has passed, decided by all ranks
            together (0 = no time limit); the run then saves and exports as at the last step.
        precision: "fp32", "bf16" or "fp16" (DeepSpeed's mixed precision).
        deepspeed: engine JSON holding engine keys only (ZeRO stage, offload, buckets).
        zero_stage: overrides the JSON's ZeRO stage when set.
        deterministic: ``torch.use_deterministic_algorithms`` for bit-exact resume tests.
        nonfinite: "skip": a non-finite loss drops its micro-batch (the next one takes its place)
            and a non-finite gradient skips the step; "stop": either ends the run.
        ema_decay: EMA of the weights (0 = off); exported instead of the raw weights when on.
        checkpoint_every / keep_last: DeepSpeed checkpoints under ``<out>/checkpoints``.
        eval_every / eval_batches: periodic held-out loss.
        sample_every / num_samples: sample videos decoded with the tokenizer, plus a PNG sheet.
        peak_tflops: the device's peak for the MFU estimate (0 = unknown, MFU not logged).
        init_from: an exported generator folder (``config.yaml`` + ``model.safetensors``) whose
            weights start the run instead of a random init: fine-tuning, or warm-starting one
            style from the other (the architecture must match; style and orders may differ).
            A run that resumes from its own checkpoint ignores it.
    """

    steps: int = 1000
    max_minutes: float = 0.0
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    deepspeed: str = ""
    zero_stage: int | None = None
    deterministic: bool = False
    nonfinite: Literal["skip", "stop"] = "skip"
    ema_decay: float = 0.0
    checkpoint_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    eval_every: int = 500
    eval_batches: int = 4
    sample_every: int = 0
    num_samples: int = 4
    sample_steps: int = 8
    tensorboard: bool = False
    peak_tflops: float = 0.0
    num_threads: int = 0
    init_from: str = ""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a generator training run needs; saved as ``train_config.yaml``."""

    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
