"""Train a VideoTokenizer on a folder of videos and/or images with DeepSpeed.

    python tools/train_tokenizer.py --config configs/tokenizer/shapes.yaml --data data/shapes --out runs/tok
    torchrun --nproc_per_node 2 tools/train_tokenizer.py --config ... --out runs/tok train.zero_stage=2
    deepspeed tools/train_tokenizer.py --config ... --out runs/tok

The same infrastructure as the generator trainer (``tools/train.py``): process groups from
:mod:`videotrain.distributed`, the tokenizer inside a DeepSpeed engine (ZeRO 0-2, or 3 without the
adversarial loss) and, when ``loss.adversarial_weight > 0``, the discriminator inside a second
engine. Every rank samples its own clips. Checkpoints go to ``<out>/checkpoints`` (both engines
under one tag, made visible by a ``COMPLETE`` marker) and a run resumes automatically from the
newest complete one. Rank 0 logs loss, PSNR and codebook usage (progress bar, ``metrics.jsonl``,
``loss_curve.png``), writes PNG strips of originals over reconstructions under ``previews/`` and
saves the model with ``save_pretrained`` under ``tokenizer/`` (safetensors + config.yaml) next
to the resolved training config.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn
from tqdm import tqdm

from core.cli import run_cli, setup_logging
from core.config import build_config, save_config
from core.weights import load_strict
from tokenizer import TokenizerConfig, VideoTokenizer
from tokenizer.losses import (
    LeCam,
    LossConfig,
    PatchDiscriminator3d,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    perceptual_loss,
    reconstruction_loss,
)
from videotrain import checkpoint, distributed
from videodata.clips import ClipDataConfig, ClipPool
from videoeval.metrics import psnr
from videotrain.engines import EngineGroup, average_buffers, persistent_buffers, restored_env
from videotrain.outputs import MetricsLog
from core.video_io import tensor_to_frames, write_contact_sheet

log = logging.getLogger("train_tokenizer")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW (torch optimizers handed to DeepSpeed) with linear warmup and cosine decay to
    ``min_lr_ratio * lr``; the discriminator's AdamW runs at a constant ``disc_lr``."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1
    disc_lr: float = 2e-4
    disc_betas: tuple[float, float] = (0.5, 0.9)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Run length, batching, engine, checkpoints and logging.

    Attributes:
        steps / max_minutes: stop at whichever comes first (0 minutes = no time limit).
        batch_size: clips per process per micro-step (``optim.grad_accum`` micro-steps a step).
        precision: "fp32", "bf16" or "fp16" (DeepSpeed's mixed precision).
        deepspeed: engine JSON holding engine keys only (ZeRO stage, offload, buckets).
        zero_stage: overrides the JSON's ZeRO stage when set.
        deterministic: ``torch.use_deterministic_algorithms`` for bit-exact resume.
        nonfinite: what a non-finite loss does: "skip" its batch or "stop" the run.
        save_every / keep_last: checkpoints (and a refreshed ``tokenizer/``) every N steps,
            keeping the last K; 0 disables checkpoints.
    """

    steps: int = 2000
    max_minutes: float = 0.0
    batch_size: int = 4
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    deepspeed: str = ""
    zero_stage: int | None = None
    deterministic: bool = False
    nonfinite: Literal["skip", "stop"] = "skip"
    log_every: int = 10
    preview_every: int = 200
    save_every: int = 500
    keep_last: int = 2
    tensorboard: bool = False
    num_threads: int = 0


@dataclass(frozen=True, kw_only=True)
class TokenizerTrainConfig:
    """Everything a tokenizer training run needs; saved as ``train_config.yaml``."""

    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class TokenizerTask(nn.Module):
    """The tokenizer and its objective as one module, so the engine's forward returns the loss.

    The discriminator and the perceptual network are arguments of each call, not submodules:
    the engine owns (casts, broadcasts, checkpoints) the tokenizer's weights only.
    """

    def __init__(self, tokenizer: VideoTokenizer, loss: LossConfig) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.loss = loss

    def forward(self, video: torch.Tensor, disc: nn.Module | None = None, perceptual: nn.Module | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The generator-side loss of one batch.

        Args:
            video: (B, C, T, H, W) in [-1, 1], in the engine's dtype.
            disc: the discriminator when the adversarial term is on.
            perceptual: network (x, y) -> distance when ``loss.perceptual_weight > 0``.

        Returns:
            the total loss (scalar; the only output with a graph, so DeepSpeed's backward hooks
            sit on it alone), detached loss terms and stats (0-dim tensors), and the detached
            reconstruction (B, C, T, H, W).
        """
        cfg = self.loss
        out = self.tokenizer(video)
        recon, target = out.recon.float(), video.float()
        losses = dict(reconstruction_loss(recon, target, cfg))
        if perceptual is not None and cfg.perceptual_weight > 0:
            losses["perceptual"] = cfg.perceptual_weight * perceptual_loss(recon, target, perceptual)
        stats = {k: v.detach().float() for k, v in out.stats.items()}
        if disc is not None:
            disc.requires_grad_(False)  # this graph must not reach D's weights (nor the D engine's grad hooks)
            try:
                g = hinge_g_loss(disc(out.recon).float())
            finally:
                disc.requires_grad_(True)
            # VQGAN's balance needs d(loss)/d(last decoder layer) before the engine's backward:
            # autograd.grad on the bare module accumulates nothing and fires no ZeRO hook.
            last = self.tokenizer.decoder.conv_out.conv.weight
            weight = adaptive_weight(sum(losses.values()), g, last, cfg.adaptive_weight_max)
            losses["gan"] = cfg.adversarial_weight * weight * g
            stats["adaptive_weight"] = weight.float()
        losses.update(out.losses)
        total = sum(losses.values())
        with torch.no_grad():
            stats["psnr"] = psnr(recon.clamp(-1, 1), target).mean()
        terms = {k: v.detach().float() for k, v in losses.items()}
        return total, {**terms, **stats, "loss": total.detach().float()}, out.recon.detach()


class TokenizerTrainer:
    """Builds data, tokenizer, discriminator and their engines from the config and runs the loop."""

    def __init__(self, cfg: TokenizerTrainConfig, out: Path, perceptual: nn.Module | None = None) -> None:
        self.cfg, self.out, self.ckpt_dir = cfg, out, out / "checkpoints"
        tc, lc, o = cfg.train, cfg.loss, cfg.optim
        # ---- checks that need no process group, so bad input fails fast
        if lc.perceptual_weight > 0 and perceptual is None:
            raise ValueError("loss.perceptual_weight > 0 needs a perceptual network (--perceptual PATH)")
        VideoTokenizer(cfg.model).latent_shape(cfg.data.num_frames, cfg.data.size, cfg.data.size)  # validates
        engine_cfg = partial(distributed.deepspeed_config, tc.deepspeed or None, micro_batch=tc.batch_size,
                             grad_accum=o.grad_accum, precision=tc.precision, zero_stage=tc.zero_stage)
        gen_ds, disc_ds = engine_cfg(grad_clip=o.grad_clip), engine_cfg(grad_clip=0.0)
        self.zero_stage = gen_ds["zero_optimization"]["stage"]
        if lc.adversarial_weight > 0 and self.zero_stage == 3:
            raise ValueError("loss.adversarial_weight > 0 needs ZeRO stage 0-2: the adaptive weight takes the gradient "
                             "of the decoder's last layer, which ZeRO-3 partitions")
        self.pool = ClipPool(cfg.data)
        # ---- processes, models, engines
        self.dist = distributed.init_distributed()
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        if tc.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(tc.seed)
        self.model = VideoTokenizer(cfg.model).to(self.dist.device)
        self.perceptual = perceptual.to(self.dist.device) if perceptual is not None else None
        opt = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.engine = distributed.build_engine(TokenizerTask(self.model, lc), opt, gen_ds)
        self.dtype = next(self.model.parameters()).dtype  # the engine casts for bf16 / fp16
        self.disc = self.disc_engine = self.lecam = None
        extras = {}
        if lc.adversarial_weight > 0:
            self.disc = PatchDiscriminator3d(cfg.model.in_channels, lc.discriminator_channels, lc.discriminator_layers)
            self.disc.to(self.dist.device)
            disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=o.disc_lr, betas=o.disc_betas)
            self.disc_engine = extras["discriminator"] = distributed.build_engine(self.disc, disc_opt, disc_ds)
            self.lecam = LeCam(lc.lecam_decay).to(self.dist.device)  # per-rank EMAs, averaged every step
        self.engines = EngineGroup(self.engine, **extras)
        self.model_state = persistent_buffers(self.model)  # updated by the forward (VQ codebook EMAs)
        # Clips differ per rank; whether a step is an image or a clip step is shared, so every
        # rank runs the same kind of batch (and the same collectives).
        self.rng = torch.Generator().manual_seed(tc.seed + 1_000_003 * self.dist.rank)
        self.kind_rng = torch.Generator().manual_seed(tc.seed + 2)
        self.step = 0
        self._saved_step: int | None = None
        self._poisoned = False
        self._skipped_in_a_row = 0

    # ------------------------------------------------------------------ state
    def _state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        state = {"step": self.step, "world_size": self.dist.world_size, "adversarial": self.disc is not None}
        tensors = {"torch_rng": torch.get_rng_state(), "clip_rng": self.rng.get_state(), "kind_rng": self.kind_rng.get_state()}
        if self.dist.device.type == "cuda":
            tensors["cuda_rng"] = torch.cuda.get_rng_state(self.dist.device)
        if self.lecam is not None:
            tensors.update({f"lecam.{k}": v for k, v in self.lecam.state_dict().items()})
        return state, tensors

    def resume(self) -> None:
        """Loads the newest complete checkpoint under ``<out>/checkpoints``, if any."""
        tag = checkpoint.latest_complete(self.ckpt_dir)
        if tag is None:
            return
        state, tensors = checkpoint.load(self.engines, self.ckpt_dir, tag, self.dist.rank)
        if state["world_size"] != self.dist.world_size:
            raise ValueError(f"checkpoint {tag} was written by {state['world_size']} processes, "
                             f"this run has {self.dist.world_size}")
        self.step = self._saved_step = int(state["step"])
        torch.set_rng_state(tensors["torch_rng"])
        self.rng.set_state(tensors["clip_rng"])
        self.kind_rng.set_state(tensors["kind_rng"])
        if "cuda_rng" in tensors and self.dist.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["cuda_rng"], self.dist.device)
        if self.lecam is not None and "lecam.ema_real" in tensors:
            self.lecam.load_state_dict({k.removeprefix("lecam."): v for k, v in tensors.items() if k.startswith("lecam.")})
        log.info("resumed from %s at step %d", tag, self.step)

    def save(self) -> None:
        """A checkpoint of both engines and every rank's state, then a fresh ``tokenizer/`` (collective)."""
        state, tensors = self._state()
        checkpoint.save(self.engines, self.ckpt_dir, self.step, self.dist.rank, state, tensors,
                        self.cfg.train.keep_last, self.cfg)
        self._saved_step = self.step
        self.export()

    def export(self) -> Path:
        """``save_pretrained`` of the fp32 weights into ``<out>/tokenizer`` on rank 0 (collective)."""
        state = distributed.full_state_dict(self.engine, self.model, self.zero_stage)
        directory = self.out / "tokenizer"
        if self.dist.is_main:
            tok = VideoTokenizer(self.cfg.model)
            load_strict(tok, state, "tokenizer")
            tok.save_pretrained(directory)
        distributed.barrier()
        return directory

    # ------------------------------------------------------------------ loop
    def train_step(self) -> dict[str, float]:
        """One optimizer step of both engines (``optim.grad_accum`` micro-batches); returns logs.

        A micro-batch whose generator or discriminator loss is non-finite on any rank is
        dropped before its backward (no weight, optimizer state or EMA changes) and replaced
        by the next batch; ``train.nonfinite=stop`` raises instead.
        """
        cfg, o = self.cfg, self.cfg.optim
        lr = o.lr * lr_factor(self.step, o.warmup_steps, cfg.train.steps, o.min_lr_ratio)
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        images = cfg.data.image_ratio > 0 and torch.rand((), generator=self.kind_rng).item() < cfg.data.image_ratio
        # The 3D discriminator needs several frames: image steps train the tokenizer alone.
        use_gan = self.disc is not None and self.step >= cfg.loss.adversarial_start_step and not images
        rows, gnorm = [], None
        while len(rows) < o.grad_accum:
            kept = [b.clone() for b in self.model_state]
            video = self.pool.sample(cfg.train.batch_size, self.rng, images=images).to(self.dist.device, self.dtype)
            total, logs, recon = self.engine(video, self.disc if use_gan else None, self.perceptual)
            d_loss = real = fake = None
            if use_gan:
                logits = self.disc_engine(torch.cat([video, recon])).float()  # (2B, 1, t', h', w'), one forward
                real, fake = logits.chunk(2)
                d_loss = hinge_d_loss(real, fake)
            if self._test_poison():
                total = total * float("nan")
            finite = bool(torch.isfinite(total)) and (d_loss is None or bool(torch.isfinite(d_loss)))
            if distributed.all_reduce_max(0.0 if finite else 1.0, self.dist.device) > 0:
                for b, old in zip(self.model_state, kept):  # undo the forward's EMA updates
                    b.copy_(old)
                self._nonfinite()
                continue
            self.engine.backward(total)
            if self.zero_stage == 0 and self.engine.is_gradient_accumulation_boundary():
                grads = [p.grad.detach().float().norm() for p in self.model.parameters() if p.grad is not None]
                gnorm = float(torch.stack(grads).norm()) if grads else None  # before clipping
            self.engine.step()
            if use_gan:
                if cfg.loss.lecam_weight > 0:
                    d_loss = d_loss + cfg.loss.lecam_weight * self.lecam(real, fake)
                self.disc_engine.backward(d_loss)
                self.disc_engine.step()
                logs["d_loss"] = d_loss.detach()
            rows.append(logs)
        self._skipped_in_a_row = 0
        average_buffers(self.model, *([self.lecam] if self.lecam is not None else []))
        self.step += 1
        if gnorm is None:
            gnorm = self.engine.get_global_grad_norm()
        logs = {k: float(torch.stack([r[k] for r in rows]).mean()) for k in rows[0]}
        logs.update(grad_norm=float(gnorm) if gnorm is not None else float("nan"), lr=lr, frames=video.shape[2])
        return logs

    def _test_poison(self) -> bool:
        """Test hook: a NaN loss on the last rank only, once, at ``TOKVID_TEST_NAN_AT_STEP``."""
        hit = (os.environ.get("TOKVID_TEST_NAN_AT_STEP") == str(self.step) and not self._poisoned
               and self.dist.rank == self.dist.world_size - 1)
        self._poisoned |= hit
        return hit

    def _nonfinite(self) -> None:
        self._skipped_in_a_row += 1
        policy = self.cfg.train.nonfinite
        if policy == "stop" or self._skipped_in_a_row > 10:
            why = "train.nonfinite=stop" if policy == "stop" else f"{self._skipped_in_a_row} skipped batches in a row"
            raise FloatingPointError(f"non-finite loss at step {self.step}; stopped before the optimizer step ({why})")
        log.warning("non-finite loss at step %d: batch skipped, parameters unchanged", self.step)

    def preview(self, video: torch.Tensor) -> Path:
        """Writes originals over reconstructions for up to 2 clips (rank 0); returns the PNG path."""
        path = self.out / "previews" / f"step_{self.step:06d}.png"
        if not (self.dist.is_main or self.zero_stage == 3):  # ZeRO-3's forward is collective
            return path
        self.model.eval()
        recon = self.model.reconstruct(video[:2].to(self.dist.device, self.dtype))
        self.model.train()
        if self.dist.is_main:
            rows = []
            for orig, rec in zip(tensor_to_frames(video[:2]), tensor_to_frames(recon)):
                rows += [orig, rec]
            path.parent.mkdir(parents=True, exist_ok=True)
            write_contact_sheet(path, rows)
        return path

    def _out_of_time(self, start: float) -> bool:
        """Whether ``train.max_minutes`` has passed, decided by all ranks together."""
        over = time.time() - start > 60 * self.cfg.train.max_minutes
        return distributed.all_reduce_max(float(over), self.dist.device) > 0

    def fit(self) -> dict[str, float]:
        """Runs until ``train.steps`` or ``train.max_minutes``; saves and returns the last logs."""
        cfg, tc, main = self.cfg, self.cfg.train, self.dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "train_config.yaml")
        self.resume()
        metrics = MetricsLog(self.out, enabled=main, tensorboard=tc.tensorboard)
        preview_batch = self.pool.sample(2, torch.Generator().manual_seed(tc.seed + 1))
        clips_per_step = tc.batch_size * cfg.optim.grad_accum * self.dist.world_size
        bar = tqdm(total=tc.steps, initial=self.step, desc="tokenizer", unit="step", disable=not main, dynamic_ncols=True)
        start, logs = time.time(), {}
        self.model.train()
        while self.step < tc.steps:
            if os.environ.get("TOKVID_TEST_EXIT_AT_STEP") == str(self.step):  # test hook: hard kill
                os._exit(17)
            if tc.max_minutes and self._out_of_time(start):
                log.info("time budget of %.1f min reached at step %d", tc.max_minutes, self.step)
                break
            t0 = time.perf_counter()
            logs = self.train_step()
            logs["clips_per_s"] = clips_per_step / (time.perf_counter() - t0)
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == 1:
                keys = sorted(logs)  # the same on every rank: same config, same kind of batch
                values = torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=self.dist.device)
                means = distributed.all_reduce_mean(values)
                logs.update({k: float(v) for k, v in zip(keys, means.cpu()) if k != "clips_per_s"})
                bar.set_postfix(loss=f"{logs['loss']:.4f}", psnr=f"{logs['psnr']:.1f}", usage=f"{logs.get('usage', 0):.2f}")
                metrics.write(self.step, {"time": time.time() - start, **logs})
            if tc.preview_every and self.step % tc.preview_every == 0:
                self.preview(preview_batch)
            if tc.save_every and self.step % tc.save_every == 0:
                self.save()
        bar.close()
        metrics.close()
        if not tc.save_every:
            self.export()
        elif self._saved_step != self.step:
            self.save()  # the final state (and tokenizer), so a time-limited run can be continued
        final = self.preview(preview_batch)
        if main:
            minutes = (time.time() - start) / 60
            log.info("saved %s at step %d (%.1f min); preview %s", self.out / "tokenizer", self.step, minutes, final)
        return logs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), merged in order")
    parser.add_argument("--data", action="append", default=[], help="video/image folder or file (repeatable); overrides data.paths")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, metrics, previews, tokenizer)")
    parser.add_argument("--perceptual", help="TorchScript perceptual network (x, y) -> distance, e.g. a traced LPIPS")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.steps=100")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after options
    setup_logging()
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)
    overrides = list(args.overrides)
    if args.data:
        overrides.append("data.paths=" + json.dumps(args.data))
    cfg = build_config(TokenizerTrainConfig, args.config, overrides)
    perceptual = None
    if args.perceptual:
        from videoeval.metrics import LPIPS

        perceptual = LPIPS(args.perceptual)
    launched = "RANK" in os.environ
    with restored_env():  # an in-process call leaves no RANK / MASTER_PORT behind
        try:
            trainer = TokenizerTrainer(cfg, Path(args.out), perceptual)
            logs = trainer.fit()
        finally:
            # A bare process keeps its one-rank group: DeepSpeed caches groups, so a second
            # in-process run (tests, notebooks) could not initialise after a teardown.
            if launched:
                distributed.shutdown()
    if trainer.dist.is_main:
        nan = float("nan")
        print(f"trained {trainer.step} steps: psnr {logs.get('psnr', nan):.2f} dB, usage {logs.get('usage', nan):.3f}")
        print(f"wrote {Path(args.out) / 'tokenizer'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
