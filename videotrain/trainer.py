"""The training loop that every task builds on.

A task (:mod:`videotrain.generator_task`, :mod:`videotrain.tokenizer_task`) subclasses
:class:`Trainer` and supplies what differs: how it builds its data, model and engines, one
optimizer step (``train_step``), what it samples and how it exports. Everything else lives here
once: the process group, seeding and threads, the learning-rate schedule, the non-finite and
time-budget guards, EMA, metrics, checkpoints and exact resume.

Like torchtitan's ``train.py`` over ``trainer.py``, the command-line programs only parse a config,
build a trainer and call :meth:`Trainer.fit`; tests and benchmarks drive the same class directly.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from core.config import save_config
from core.files import check_dir_target, remove_empty_folder
from videotrain import checkpoint, distributed
from videotrain.config import RunConfig, check_supported
from videotrain.ema import EMA
from videotrain.guards import GradientCheck, NonFiniteGuard, StopSignals
from videotrain.optim import OptimConfig, lr_at
from videotrain.outputs import (
    MetricsLog,
    RunFolderLock,
    check_out_apart,
    killed_before_checkpoint,
    set_aside_interrupted_run,
)

log = logging.getLogger(__name__)


class Trainer:
    """One training run: config in, checkpoints, metrics and an exported model out.

    Subclasses set ``task`` (a name for messages), ``unsupported`` (``run.*`` fields they cannot
    honour) and implement :meth:`build`, :meth:`train_step` and :meth:`export`; they may override
    :meth:`validate`, :meth:`eval_logs`, :meth:`write_samples`, :meth:`throughput` and the
    ``task_state`` pair. After :meth:`build`, ``self.model`` is the trained ``nn.Module`` and
    ``self.engine`` its DeepSpeed engine; ``self.checkpointed`` is what checkpoints save (the
    engine, or an :class:`~videotrain.engines.EngineGroup` of several).

    Args:
        cfg: the task's config; it has ``run`` (:class:`RunConfig`) and ``optim`` (:class:`OptimConfig`).
        out: the run directory.
    """

    task = "training"
    unsupported: tuple[str, ...] = ()
    resume_keys: tuple[str, ...] = ()  # dotted config keys a resumed run must keep (besides ``model``)

    def __init__(self, cfg: Any, out: str | Path) -> None:
        self.cfg, self.out = cfg, Path(out)
        check_dir_target(self.out, "--out")  # "[Errno 17] File exists", not naming the flag, before
        self.run: RunConfig = cfg.run
        self.optim: OptimConfig = cfg.optim
        self.ckpt_dir = self.out / "checkpoints"
        check_supported(self.run, self.unsupported, self.task)
        check_out_apart(self.out, {"run.init_from": [self.run.init_from]})  # loaded, then overwritten by the export
        made = not self.out.exists()
        self._lock = RunFolderLock(self.out)
        self._made_out = made  # an empty folder this run made is removed again when it fails before writing
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        resumable = checkpoint.latest_complete(self.ckpt_dir) is not None
        self.interrupted = not resumable and killed_before_checkpoint(self.out)  # fit() sets its files aside
        self.validate()  # before the process group, so bad input fails fast
        self.dist = distributed.init_distributed()
        if self.run.num_threads:
            torch.set_num_threads(self.run.num_threads)
        if self.run.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(self.run.seed)
        self.step = 0
        self.guard = NonFiniteGuard(self.run.nonfinite, self.run.max_nonfinite)
        self._saved_step: int | None = None
        self._exported_step: int | None = None
        self.stopped_by: int | None = None  # the signal (SIGTERM, SIGINT) that ended fit() early, if any
        self.grad_norm: torch.Tensor | float | None = None
        self.build()
        self.grads = GradientCheck(self.model, self.zero_stage, self.run.precision, self.dist.device)
        self.checkpointed = getattr(self, "checkpointed", self.engine)
        self.ema = EMA(self.model, self.run.ema_decay) if self.run.ema_decay > 0 else None
        if self.ema is not None and self.zero_stage == 3:
            raise ValueError("run.ema_decay needs ZeRO stage 0-2 (ZeRO-3 partitions the weights)")
        kept = self.run.ema_decay**self.run.steps if self.ema is not None else 0.0
        if kept > 0.1:  # the average starts at the weights the run starts from: a short run exports mostly those
            log.warning("run.ema_decay=%g over run.steps=%d: the exported average keeps %.0f%% of the weights the run "
                        "starts from", self.run.ema_decay, self.run.steps, 100 * kept)  # fmt: skip

    # ------------------------------------------------------------------ what a task supplies
    def validate(self) -> None:
        """Checks that need no process group (bad input fails before any engine starts)."""

    def build(self) -> None:
        """Builds data, ``self.model``, ``self.engine`` (see :meth:`make_engine`) and ``self.zero_stage``."""
        raise NotImplementedError

    def train_step(self) -> dict[str, float] | None:
        """One optimizer step; its logs, or None if a non-finite gradient skipped it."""
        raise NotImplementedError

    def export(self) -> Path:
        """Writes the model that pipelines load; returns its folder (collective)."""
        raise NotImplementedError

    def eval_logs(self) -> dict[str, float]:
        """Held-out metrics every ``run.eval_every`` steps."""
        return {}

    def write_samples(self) -> None:
        """Sample outputs every ``run.sample_every`` steps."""

    def throughput(self, seconds: float) -> dict[str, float]:
        """Throughput figures of one step that took ``seconds`` (not averaged over ranks)."""
        return {}

    def task_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """This rank's task-specific checkpoint state: JSON-able values and tensors."""
        return {}, {}

    def load_task_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Restores what :meth:`task_state` saved."""

    # ------------------------------------------------------------------ shared pieces of a step
    def make_engine(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> Any:
        """A DeepSpeed engine for ``module`` (whose forward returns the loss) with this run's batch and precision.

        Sets ``self.zero_stage``. On one process with ZeRO-0 in fp32 the gradient check reads and
        completes the gradients itself, so DeepSpeed skips its identity all-reduce.
        """
        ds_cfg = self.engine_config(grad_clip)
        self.zero_stage = ds_cfg["zero_optimization"]["stage"]
        if self.run.compile:
            if self.zero_stage == 3:
                raise ValueError("run.compile needs ZeRO stage 0-2 (ZeRO-3 gathers parameters with hooks)")
            module.compile()  # in place: the engine, checkpoints and exports see the same parameters
        fills = GradientCheck.reads_params(self.zero_stage, self.run.precision)
        return distributed.build_engine(module, optimizer, ds_cfg, caller_fills_grads=fills)

    def engine_config(self, grad_clip: float) -> dict[str, Any]:
        """The DeepSpeed config of this run's engines (``run.deepspeed`` + batch, precision and ZeRO stage) with
        ``grad_clip``; validation reads its ZeRO stage and precision before any engine exists."""
        return distributed.deepspeed_config(
            self.run.deepspeed or None,
            micro_batch=self.run.micro_batch,
            grad_accum=self.optim.grad_accum,
            grad_clip=grad_clip,
            precision=self.run.precision,
            zero_stage=self.run.zero_stage,
        )

    def set_lr(self, *engines: Any) -> float:
        """Sets the scheduled learning rate of this step on ``engines`` (default: the main one); returns it."""
        lr = lr_at(self.step, self.optim, self.run.steps)
        for engine in engines or (self.engine,):
            for group in engine.optimizer.param_groups:
                group["lr"] = lr
        return lr

    def any_nonfinite(self, *values: torch.Tensor | None) -> bool:
        """Whether any of ``values`` is non-finite on any rank (one collective)."""
        bad = any(v is not None and not bool(torch.isfinite(v).all()) for v in values)
        return distributed.all_reduce_max(float(bad), self.dist.device) > 0

    def backward(self, loss: torch.Tensor, boundary: bool) -> bool:
        """Backward of one micro-batch; at the accumulation boundary, the gradient check.

        This loop, not DeepSpeed's micro-step counter, marks the boundary, so a dropped batch or
        a skipped step never shifts the accumulation window of later steps. A non-finite gradient
        on any rank discards the accumulated gradients (recorded by the guard).

        Returns:
            False if the step must be skipped; ``self.grad_norm`` holds the norm before clipping.
        """
        self.engine.set_gradient_accumulation_boundary(boundary)
        self.engine.backward(loss)
        if not boundary:
            return True
        self.grad_norm, bad = self.grads.read()
        if distributed.all_reduce_max(float(bad), self.dist.device) > 0:
            self.grads.clear()
            if self.run.precision == "fp16":
                # DeepSpeed's dynamic loss scaler must see the overflow: its step skips the update and halves the
                # scale. Skipped here instead, every later step overflowed again at the same scale.
                self.engine.step()
            distributed.discard_gradients(self.engine)
            if self.run.precision == "fp16":  # the scaler's routine probe of a higher scale, under any policy
                self.guard.record_scale_overflow(self.step)
            else:
                self.guard.record("gradient", self.step)
            return False
        return True

    def grad_norm_value(self) -> float:
        """The last boundary's gradient norm before clipping (DeepSpeed's global norm where we could not read it)."""
        norm = self.grad_norm if self.grad_norm is not None else self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def finished_step(self) -> None:
        """Bookkeeping after a successful optimizer step: the step count, the guard, the EMA."""
        self.step += 1
        self.guard.reset()
        if self.ema is not None:
            self.ema.update(self.model)

    def export_state(self) -> dict[str, torch.Tensor]:
        """The full fp32 weights to export (EMA weights when on); gathers ZeRO-3 shards (collective)."""
        state = distributed.full_state_dict(self.engine, self.model, self.zero_stage)
        if self.ema is not None and self.dist.is_main:
            state = self.ema.weights(self.model)
        return state

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """A checkpoint of every engine and every rank's state (collective)."""
        state, tensors = self.task_state()
        state = {"step": self.step, "world_size": self.dist.world_size, "zero_stage": self.zero_stage, **state}
        tensors = {"torch_rng": torch.get_rng_state(), **tensors}
        if self.dist.device.type == "cuda":
            tensors["cuda_rng"] = torch.cuda.get_rng_state(self.dist.device)
        if self.ema is not None and self.dist.is_main:
            tensors.update(self.ema.state_dict())
        checkpoint.save(
            self.checkpointed, self.ckpt_dir, self.step, self.dist.rank, state, tensors, self.run.keep_last, self.cfg
        )
        self._saved_step = self.step

    def kept_keys(self, folder: Path) -> tuple[str, ...]:
        """Dotted keys a resume from the checkpoint in ``folder`` must keep: :attr:`resume_keys` and the optimizers'
        betas, eps and weight decay, which their saved state restores (a changed value would be recorded, not used).
        """
        return self.resume_keys + self._optim_keys("betas", "eps", "weight_decay")

    def _optim_keys(self, *names: str) -> tuple[str, ...]:
        """Dotted keys ``optim.<name>`` (and ``disc_optim.<name>`` where the task has a second optimizer)."""
        sections = [section for section in ("optim", "disc_optim") if hasattr(self.cfg, section)]
        return tuple(f"{section}.{n}" for section in sections for n in names)

    def resume(self) -> None:
        """Loads the newest complete checkpoint under ``<out>/checkpoints``, if any."""
        tag = checkpoint.latest_complete(self.ckpt_dir)
        if tag is None:
            return
        # The optimizer's state restores its param groups, betas, eps and weight decay included, and only the
        # learning rate is set again each step: a changed value would be written to train_config.yaml, not used.
        checkpoint.check_resumable(self.ckpt_dir / tag, self.cfg, self.kept_keys(self.ckpt_dir / tag))
        # Another ZeRO stage lays the optimizer state out otherwise: DeepSpeed failed halfway through loading it
        # (an AttributeError traceback, or a missing zero_pp_rank file that read like a damaged checkpoint).
        saved = checkpoint.read_state(self.ckpt_dir / tag, self.dist.rank)
        saved_stage = saved.get("zero_stage", self.zero_stage)
        if saved.get("world_size", self.dist.world_size) != self.dist.world_size:  # ZeRO-1/2 failed in DeepSpeed
            raise ValueError(
                f"checkpoint {tag} was written by {saved['world_size']} processes, this run has {self.dist.world_size}"
            )
        if saved_stage != self.zero_stage:
            raise ValueError(
                f"checkpoint {tag} was written with ZeRO stage {saved_stage}, this run has stage "
                f"{self.zero_stage}: resume with run.zero_stage={saved_stage} or use a new --out"
            )
        steering = self._optim_keys("lr", "grad_accum", "warmup_steps", "schedule", "min_lr_ratio")
        # run.steps spans the decay: another value moves every later learning rate (4 -> 8 steps doubled it)
        changed = checkpoint.changed_settings(
            self.ckpt_dir / tag, self.cfg, ("run.micro_batch", "run.steps", "run.ema_decay", *steering)
        )
        if changed:  # allowed (a lower learning rate to finish a run), but said: the batch or schedule moves on
            log.warning("resuming %s with other settings from here on: %s", tag, "; ".join(changed))
        state, tensors = checkpoint.load(self.checkpointed, self.ckpt_dir, tag, self.dist.rank)
        if state["world_size"] != self.dist.world_size:
            raise ValueError(
                f"checkpoint {tag} was written by {state['world_size']} processes, this run has {self.dist.world_size}"
            )
        self.step = self._saved_step = int(state["step"])
        torch.set_rng_state(tensors["torch_rng"])
        if "cuda_rng" in tensors and self.dist.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["cuda_rng"], self.dist.device)
        if self.ema is not None and self.dist.is_main and not any(k.startswith("ema.") for k in tensors):
            # written with run.ema_decay=0: the average starts here ("checkpoint lacks EMA weights" read as damage)
            log.warning("checkpoint %s holds no EMA weights: the average starts from its weights", tag)
            self.ema = EMA(self.model, self.run.ema_decay)
        elif self.ema is not None:
            own = tensors if self.dist.is_main else {f"ema.{k}": v for k, v in self.ema.shadow.items()}
            self.ema.load_state_dict(own)
        self.load_task_state(state, tensors)
        log.info("resumed from %s at step %d", tag, self.step)

    # ------------------------------------------------------------------ the loop
    def _should_stop(self, start: float, signals: StopSignals) -> bool:
        """Whether ``run.max_minutes`` has passed or a rank received a stop signal, decided by all ranks
        together (one collective of two numbers per step); sets ``stopped_by``."""
        over = bool(self.run.max_minutes) and time.time() - start > 60 * self.run.max_minutes
        flags = torch.tensor([float(over), float(signals.signum or 0)], dtype=torch.float64)
        flags = distributed.all_reduce_max_values(flags, self.dist.device)
        if flags[1] > 0:
            self.stopped_by = int(flags[1])
            log.warning("stopped by %s at step %d", signal.Signals(self.stopped_by).name, self.step)
            return True
        if flags[0] > 0:  # the schedule was planned for run.steps: a busy machine got 12 of 3,000, inside the warm-up
            warmup = " and inside its warm-up" if self.step < self.optim.warmup_steps else ""
            log.warning("time budget of %g min reached at step %d of %d (run.steps): the learning rate stopped part "
                        "way through its schedule%s; raise run.max_minutes or lower run.steps to finish it",
                        self.run.max_minutes, self.step, self.run.steps, warmup)  # fmt: skip
            return True
        return False

    @property
    def exit_code(self) -> int:
        """0 after the step or time budget; 128 + the signal after a stop signal (the shell's convention:
        143 after SIGTERM, 130 after Ctrl-C), so a scheduler sees the run as unfinished."""
        return 0 if self.stopped_by is None else 128 + self.stopped_by

    def stop_message(self) -> str:
        """How the run ended early, for the command line ("" when it ran its budget)."""
        if self.stopped_by is None:
            return ""
        name = signal.Signals(self.stopped_by).name
        if not self.run.checkpoint_every:
            return f"stopped by {name} at step {self.step}; run.checkpoint_every=0 kept no checkpoint to resume from"
        return f"stopped by {name} at step {self.step}; checkpoint saved, the same command resumes from it"

    def _mean_over_ranks(self, logs: dict[str, float]) -> dict[str, float]:
        keys = sorted(logs)  # the same on every rank: same config, same kind of batch
        values = torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=self.dist.device)
        return dict(zip(keys, distributed.all_reduce_mean(values).cpu().tolist()))

    def _due(self, every: int) -> bool:
        return bool(every) and self.step % every == 0

    def fit(self) -> dict[str, float]:
        """Runs until ``run.steps``, ``run.max_minutes`` or a SIGTERM / SIGINT (:class:`StopSignals`; then
        ``stopped_by`` is set), checkpoints, exports; returns the last logs. Lets go of ``--out`` at the end."""
        try:
            return self._fit()
        finally:
            self.close()

    def close(self) -> None:
        """Lets go of ``--out`` (idempotent): another run may then train there."""
        self._lock.release()
        if self._made_out:
            remove_empty_folder(self.out)

    def _fit(self) -> dict[str, float]:
        run, main = self.run, self.dist.is_main
        self.resume()  # first: a run resumed with another model must not overwrite train_config.yaml
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.interrupted:
                set_aside_interrupted_run(self.out)
            save_config(self.cfg, self.out / "train_config.yaml")
        metrics = MetricsLog(self.out, enabled=main, tensorboard=run.tensorboard, start_step=self.step)
        bar = tqdm(
            total=run.steps, initial=self.step, desc=self.task, unit="step", disable=not main, dynamic_ncols=True
        )
        self.train_mode()
        start, logs = time.time(), {}
        with StopSignals() as signals:
            logs = self._loop(start, signals, metrics, bar)
        bar.close()
        if run.checkpoint_every and self._saved_step != self.step:
            self.save()  # the final state, so a time-limited or stopped run can be continued
        metrics.close()
        folder = self.export()
        if main:
            log.info("exported %s at step %d (%.1f min)", folder, self.step, (time.time() - start) / 60)
        self.after_export()
        return logs

    def after_export(self) -> None:
        """What a task writes once the run has exported, while it still holds ``--out``."""

    def train_mode(self) -> None:
        """Puts the model in training mode (a task extends it: parts it keeps fixed stay in eval mode)."""
        self.model.train()

    def _loop(self, start: float, signals: StopSignals, metrics: MetricsLog, bar: tqdm) -> dict[str, float]:
        run, logs = self.run, {}
        while self.step < run.steps:
            if self._should_stop(start, signals):
                break
            t0 = time.perf_counter()
            step_logs = self.train_step()
            if step_logs is None:
                continue
            speed = self.throughput(time.perf_counter() - t0)
            bar.update(1)
            if self._due(run.log_every) or self.step == 1:
                logs = {**self._mean_over_ranks(step_logs), **speed}
                bar.set_postfix({k: f"{logs[k]:.4g}" for k in ("loss", "psnr", "lr") if k in logs})
                metrics.write(self.step, {"time": time.time() - start, **logs})
            if self._due(run.eval_every) and (held_out := self.eval_logs()):
                metrics.write(self.step, held_out)
            if self._due(run.sample_every):
                self.write_samples()
            if self._due(run.checkpoint_every):
                self.save()
        return logs
