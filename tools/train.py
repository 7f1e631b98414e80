"""Train a GPT-style or MaskGIT-style generator on cached token shards with DeepSpeed.

    python tools/train.py --config configs/generator/shapes_maskgit.yaml --out runs/mg
    torchrun --nproc_per_node 2 tools/train.py --config ... --out runs/mg run.zero_stage=2
    deepspeed --hostfile hostfile tools/train.py --config ... --out /shared/runs/mg

One entry point for every style, condition and unit order. Resumes automatically from the
newest complete checkpoint under ``<out>/checkpoints``; ``--export`` writes the plain
safetensors directory pipelines load.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.cli import run_cli, setup_logging
from core.config import build_config, save_config
from core.weights import WEIGHTS_NAME, load_config, load_state, load_strict
from generator import Condition, Generator, GeneratorConfig, ObjectiveConfig, generator_loss
from videotrain import checkpoint, distributed
from videotrain.ema import EMA
from videodata.cache.reader import ShuffledSampler, TokenCache, tokenizer_fingerprint
from tools.train_config import TrainConfig
from videotrain.outputs import MetricsLog, export_generator, write_samples

log = logging.getLogger("train")


class TrainTask(nn.Module):
    """The generator and its objective as one module, so the engine's forward returns the loss."""

    def __init__(self, generator: Generator, objective: ObjectiveConfig) -> None:
        super().__init__()
        self.generator = generator
        self.objective = objective

    def forward(self, ids: torch.Tensor, cond: Condition, rng: torch.Generator) -> tuple[torch.Tensor, dict]:
        out = generator_loss(self.generator, ids, cond, self.objective, rng)
        return out.loss, out.stats


class BatchStream:
    """Draws this rank's indices from a :class:`ShuffledSampler`, epoch after epoch, resumably."""

    def __init__(self, sampler: ShuffledSampler, indices: np.ndarray) -> None:
        self.sampler, self.indices = sampler, indices
        self._epoch_idx = sampler.indices(sampler.epoch)

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.sampler.position >= len(self._epoch_idx):
                self.sampler.set_epoch(self.sampler.epoch + 1)
                self._epoch_idx = self.sampler.indices(self.sampler.epoch)
            out.append(int(self.indices[self._epoch_idx[self.sampler.position]]))
            self.sampler.position += 1
        return out

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self._epoch_idx = self.sampler.indices(self.sampler.epoch)


def lr_at(step: int, cfg: TrainConfig) -> float:
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = min(1.0, (step - o.warmup_steps) / max(1, cfg.run.steps - o.warmup_steps))
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class Trainer:
    """Builds data, model and engine from a :class:`TrainConfig` and runs the loop."""

    def __init__(self, cfg: TrainConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.dist = distributed.init_distributed()
        run = cfg.run
        if run.num_threads:
            torch.set_num_threads(run.num_threads)
        if run.deterministic:
            torch.use_deterministic_algorithms(True)
        self.ckpt_dir = out / "checkpoints"
        # ---- data
        if not cfg.data.cache:
            raise ValueError("data.cache is not set: point it at a folder written by tools/cache_tokens.py")
        fp = tokenizer_fingerprint(cfg.data.tokenizer) if cfg.data.tokenizer else None
        self.cache = TokenCache(cfg.data.cache, expect_fingerprint=fp, expect_codebook_size=cfg.model.vocab_size)
        torch.manual_seed(run.seed)
        self.model = Generator(cfg.model)
        if run.init_from:
            self._init_from(run.init_from)
        self.model.check_grid(self.cache.grid, "clip")
        self._check_conditions()
        n = len(self.cache)
        perm = np.random.Generator(np.random.PCG64(np.random.SeedSequence([run.seed, 7]))).permutation(n)
        n_eval = min(n - 1, int(round(cfg.data.eval_fraction * n))) if cfg.data.eval_fraction > 0 else 0
        self.eval_idx, train_idx = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])
        sampler = ShuffledSampler(len(train_idx), run.seed, self.dist.rank, self.dist.world_size)
        self.stream = BatchStream(sampler, train_idx)
        self.text_encoder = None
        if cfg.model.cond == "text":
            from generator.text_encoders import load_text_encoder

            if cfg.data.text_encoder is None:
                raise ValueError("a text-conditional model needs data.text_encoder")
            self.text_encoder = load_text_encoder(cfg.data.text_encoder).to(self.dist.device)
        # ---- engine
        self.model.to(self.dist.device)
        decay = [p for name, p in self.model.named_parameters() if p.ndim >= 2 and "emb" not in name]
        no_decay = [p for name, p in self.model.named_parameters() if not (p.ndim >= 2 and "emb" not in name)]
        o = cfg.optim
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=o.betas, eps=o.eps,
        )
        ds_cfg = distributed.deepspeed_config(
            run.deepspeed or None, micro_batch=cfg.data.micro_batch, grad_accum=o.grad_accum,
            grad_clip=o.grad_clip, precision=run.precision, zero_stage=run.zero_stage,
        )
        self.zero_stage = ds_cfg["zero_optimization"]["stage"]
        # ZeRO-0 in fp32 leaves every full gradient in p.grad until engine.step(), so the NaN
        # guard and the gradient norm read them once per step, in one pass (which also gives
        # parameters without a gradient a zero one). Otherwise ZeRO-1+ reduces and partitions
        # gradients during backward (and DeepSpeed's fp16/bf16 wrappers move them), so a hook
        # checks each gradient as it is made.
        self.grads_in_params = self.zero_stage == 0 and run.precision == "fp32"
        self.engine = distributed.build_engine(
            TrainTask(self.model, cfg.objective), opt, ds_cfg, caller_fills_grads=self.grads_in_params
        )
        self.ema = EMA(self.model, run.ema_decay) if run.ema_decay > 0 else None
        if self.ema is not None and self.zero_stage == 3:
            raise ValueError("run.ema_decay needs ZeRO stage 0-2 (ZeRO-3 partitions the weights)")
        self.rng = torch.Generator().manual_seed(run.seed * 1000 + self.dist.rank)
        self.bad_grad = torch.zeros((), dtype=torch.bool, device=self.dist.device)
        if not self.grads_in_params:
            for p in self.model.parameters():
                p.register_hook(self._watch_grad)
        self.step = 0
        self._poisoned = False
        self._skipped_in_a_row = 0

    def _init_from(self, directory: str) -> None:
        """Loads an exported generator's weights into the fresh model (see ``run.init_from``)."""
        from dataclasses import fields

        src = load_config(GeneratorConfig, directory)
        arch = [f.name for f in fields(GeneratorConfig) if f.name not in ("style", "orders", "cube_size", "attention_backend",
                                                                           "activation_checkpointing")]
        diff = [f"{k}: {getattr(src, k)} vs {getattr(self.cfg.model, k)}" for k in arch if getattr(src, k) != getattr(self.cfg.model, k)]
        if diff:
            raise ValueError(f"run.init_from {directory} has another architecture ({'; '.join(diff)})")
        load_strict(self.model, load_state(os.path.join(directory, WEIGHTS_NAME)), what="generator")
        log.info("initialized from %s (%s-style, orders %s)", directory, src.style, list(src.orders))

    def _watch_grad(self, grad: torch.Tensor) -> None:
        self.bad_grad |= ~torch.isfinite(grad).all()

    def _local_grad_norm(self) -> tuple[torch.Tensor, bool]:
        """(2-norm of all gradients before clipping, whether any gradient element is non-finite),
        read from ``p.grad`` (ZeRO-0, fp32).

        A trainable parameter without a gradient first gets a zero one, as DeepSpeed's gradient
        all-reduce gives it (so AdamW still decays it): on one process that all-reduce is
        skipped (``build_engine(caller_fills_grads=True)``); elsewhere there is nothing to fill.
        """
        grads = []
        for p in self.model.parameters():
            if p.requires_grad and p.grad is None and p.numel():
                p.grad = torch.zeros_like(p)
            if p.grad is not None:
                grads.append(p.grad.detach())
        norm = torch.nn.utils.get_total_norm(grads)  # foreach norms, then the norm of those
        # A non-finite total means a non-finite element, unless the sum of squares overflowed.
        bad = not bool(torch.isfinite(norm)) and not all(bool(torch.isfinite(g).all()) for g in grads)
        return norm, bad

    def _check_conditions(self) -> None:
        cfg = self.cfg.model
        if cfg.cond == "class":
            labels = [self.cache[i].label for i in range(min(len(self.cache), 64))]
            if min(labels) < 0 or max(labels) >= cfg.num_classes:
                raise ValueError(f"class-conditional model with {cfg.num_classes} classes, but cache labels span {min(labels)}..{max(labels)}")

    # ------------------------------------------------------------------ data
    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, Condition]:
        samples = [self.cache[i] for i in indices]
        ids = torch.stack([s.ids for s in samples]).to(self.dist.device)
        kind = self.cfg.model.cond
        if kind == "class":
            cond = Condition(labels=torch.tensor([s.label for s in samples], device=self.dist.device))
        elif kind == "text":
            feats = self.text_encoder.encode([s.caption for s in samples])
            cond = Condition(text=feats.features, text_mask=feats.mask)
        else:
            cond = Condition(drop=torch.zeros(len(samples), dtype=torch.bool, device=self.dist.device))
        return ids, cond

    # ------------------------------------------------------------------ state
    def _state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        state = {"step": self.step, "data": self.stream.state_dict(), "world_size": self.dist.world_size}
        tensors = {"torch_rng": torch.get_rng_state(), "objective_rng": self.rng.get_state()}
        if self.ema is not None and self.dist.is_main:
            tensors.update(self.ema.state_dict())
        return state, tensors

    def resume(self) -> None:
        tag = checkpoint.latest_complete(self.ckpt_dir)
        if tag is None:
            return
        state, tensors = checkpoint.load(self.engine, self.ckpt_dir, tag, self.dist.rank)
        if state["world_size"] != self.dist.world_size:
            raise ValueError(f"checkpoint {tag} was written by {state['world_size']} processes, this run has {self.dist.world_size}")
        self.step = int(state["step"])
        self.stream.load_state_dict(state["data"])
        torch.set_rng_state(tensors["torch_rng"])
        self.rng.set_state(tensors["objective_rng"])
        if self.ema is not None:
            ema_state = tensors if self.dist.is_main else {f"ema.{k}": v for k, v in self.ema.shadow.items()}
            self.ema.load_state_dict(ema_state)
        log.info("resumed from %s at step %d", tag, self.step)

    # ------------------------------------------------------------------ loop
    def train_step(self) -> dict[str, float] | None:
        """One optimizer step (``optim.grad_accum`` micro-batches); None if it was skipped.

        A micro-batch whose loss is non-finite on any rank is dropped before its backward and the
        next batch takes its place, so it changes no weight, optimizer state or EMA. A non-finite
        gradient at the accumulation boundary skips the whole step (gradients discarded). This
        loop, not DeepSpeed's micro-step counter, marks the boundary, so a dropped batch or a
        skipped step never shifts the accumulation window of later steps.
        """
        cfg = self.cfg
        gas = cfg.optim.grad_accum
        lr = lr_at(self.step, cfg)
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        losses, accs, gnorm = [], [], None
        while len(losses) < gas:
            ids, cond = self.batch(self.stream.take(cfg.data.micro_batch))
            loss, stats = self.engine(ids, cond, self.rng)
            if self._test_poison(len(losses)):
                loss = loss * float("nan")
            if distributed.all_reduce_max(0.0 if torch.isfinite(loss) else 1.0, self.dist.device) > 0:
                self._nonfinite("loss")  # raises under run.nonfinite=stop or after 10 in a row
                continue
            boundary = len(losses) == gas - 1
            self.engine.set_gradient_accumulation_boundary(boundary)
            self.engine.backward(loss)
            if boundary:
                if self.grads_in_params:  # the norm before clipping, and the NaN guard, in one pass
                    gnorm, bad = self._local_grad_norm()
                else:
                    bad = bool(self.bad_grad)
                    if self.zero_stage == 0:  # full local grads: the norm before clipping
                        grads = [p.grad.detach().float().norm() for p in self.model.parameters() if p.grad is not None]
                        gnorm = torch.stack(grads).norm() if grads else 0.0
                if distributed.all_reduce_max(float(bad), self.dist.device) > 0:
                    self.bad_grad.zero_()
                    self.engine.zero_grad()
                    self._nonfinite("gradient")
                    return None
            self.engine.step()
            losses.append(loss.detach())  # read back once per step, not after each engine.step()
            accs.append(stats["acc"])
        self.step += 1
        self._skipped_in_a_row = 0
        if self.ema is not None:
            self.ema.update(self.model)
        if gnorm is None:
            gnorm = self.engine.get_global_grad_norm()
        losses, accs = [float(x) for x in losses], [float(x) for x in accs]
        return {"loss": float(np.mean(losses)), "acc": float(np.mean(accs)), "lr": lr,
                "grad_norm": float(gnorm) if gnorm is not None else float("nan")}

    def _test_poison(self, micro: int) -> bool:
        """Test hook: one NaN loss at ``TOKVID_TEST_NAN_AT_STEP`` = "step" or "step.micro"."""
        want = os.environ.get("TOKVID_TEST_NAN_AT_STEP")
        if want is None or self._poisoned:
            return False
        step, _, at = want.partition(".")
        hit = step == str(self.step) and (at or "0") == str(micro)
        self._poisoned |= hit
        return hit

    def _nonfinite(self, what: str) -> None:
        self._skipped_in_a_row += 1
        if self.cfg.run.nonfinite == "stop" or self._skipped_in_a_row > 10:
            why = "run.nonfinite=stop" if self.cfg.run.nonfinite == "stop" else f"{self._skipped_in_a_row} non-finite in a row"
            raise FloatingPointError(f"non-finite {what} at step {self.step}; stopped before the optimizer step ({why})")
        done = "micro-batch dropped, the next one takes its place" if what == "loss" else "step skipped, parameters unchanged"
        log.warning("non-finite %s at step %d: %s", what, self.step, done)

    @torch.no_grad()
    def eval_loss(self) -> float:
        """Mean held-out loss over ``run.eval_batches`` fixed batches (same masks every time)."""
        if len(self.eval_idx) == 0:
            return float("nan")
        self.model.eval()
        rng = torch.Generator().manual_seed(12345 + self.dist.rank)
        mine = self.eval_idx[self.dist.rank :: self.dist.world_size]
        mb, total = self.cfg.data.micro_batch, []
        for b in range(self.cfg.run.eval_batches):
            idx = mine[b * mb : (b + 1) * mb]
            if len(idx) == 0:
                break
            ids, cond = self.batch(idx.tolist())
            loss, _ = self.engine(ids, cond, rng)
            total.append(float(loss))
        self.model.train()
        value = torch.tensor([np.mean(total) if total else 0.0], dtype=torch.float64)
        return float(distributed.all_reduce_mean(value.to(self.dist.device)))

    def fit(self) -> None:
        cfg, run, main = self.cfg, self.cfg.run, self.dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "train_config.yaml")
        self.resume()
        metrics = MetricsLog(self.out, enabled=main, tensorboard=run.tensorboard)
        tokens_per_step = cfg.data.micro_batch * cfg.optim.grad_accum * self.dist.world_size * math.prod(self.cache.grid)
        flops_tok = self.model.flops_per_token(math.prod(self.cache.grid) * (2 if cfg.model.style == "maskgit" else 1))
        bar = tqdm(total=run.steps, initial=self.step, desc="train", unit="step", disable=not main, dynamic_ncols=True)
        self.model.train()
        start = time.time()
        while self.step < run.steps:
            if os.environ.get("TOKVID_TEST_EXIT_AT_STEP") == str(self.step):  # test hook: hard kill
                os._exit(17)
            if run.max_minutes and self._out_of_time(start):
                log.info("time budget of %.1f min reached at step %d", run.max_minutes, self.step)
                break
            t0 = time.perf_counter()
            logs = self.train_step()
            if logs is None:
                continue
            dt = time.perf_counter() - t0
            logs["tokens_per_s"] = tokens_per_step / dt
            if run.peak_tflops > 0:
                logs["mfu"] = flops_tok * logs["tokens_per_s"] / (run.peak_tflops * 1e12 * self.dist.world_size)
            bar.update(1)
            if self.step % run.log_every == 0 or self.step == 1:
                bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
                metrics.write(self.step, logs)
            if run.eval_every and self.step % run.eval_every == 0:
                metrics.write(self.step, {"eval_loss": self.eval_loss()})
            if run.sample_every and self.step % run.sample_every == 0:
                self.samples()
            if run.checkpoint_every and self.step % run.checkpoint_every == 0:
                self.save()
        bar.close()
        if run.checkpoint_every and self.step % run.checkpoint_every:
            self.save()
        metrics.close()
        self.export(self.out / "export")

    def _out_of_time(self, start: float) -> bool:
        """Whether ``run.max_minutes`` has passed, decided by all ranks together."""
        over = time.time() - start > 60 * self.cfg.run.max_minutes
        return distributed.all_reduce_max(float(over), self.dist.device) > 0

    def save(self) -> None:
        state, tensors = self._state()
        checkpoint.save(self.engine, self.ckpt_dir, self.step, self.dist.rank, state, tensors, self.cfg.run.keep_last, self.cfg)

    def samples(self) -> None:
        if self.zero_stage == 3 or not self.dist.is_main or not self.cfg.data.tokenizer:
            return
        write_samples(self, self.out / "samples" / f"step_{self.step:08d}")

    def export(self, directory: Path) -> None:
        state = distributed.full_state_dict(self.engine, self.model, self.zero_stage)
        if self.dist.is_main:
            if self.ema is not None:
                state = self.ema.weights(self.model)
            export_generator(state, self.cfg, directory)
            log.info("exported %s", directory)
        distributed.barrier()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), merged in order")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, metrics, samples, export)")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as optim.lr=1e-4")
    args = parser.parse_args(argv)
    setup_logging()
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)
    cfg = build_config(TrainConfig, args.config, args.overrides)
    trainer = Trainer(cfg, Path(args.out))
    try:
        trainer.fit()
    finally:
        distributed.shutdown()
    if trainer.dist.is_main:
        print(f"trained to step {trainer.step}; exported {Path(args.out) / 'export'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
