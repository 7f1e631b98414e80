"""Train a VideoTokenizer on a folder of videos and/or images.

    python tools/train_tokenizer.py --config configs/tokenizer/tiny.yaml --out runs/tok \
        data.paths='[/path/to/videos]' train.steps=2000

Logs reconstruction loss, PSNR and codebook usage (progress bar + ``metrics.jsonl``), writes
PNG strips of originals over reconstructions under ``previews/``, and saves the model with
``save_pretrained`` under ``tokenizer/`` (safetensors + config.yaml) next to the resolved
training config.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from core.cli import run_cli, setup_logging
from core.config import build_config, save_config
from tokenizer import TokenizerConfig, VideoTokenizer
from tokenizer.losses import (
    LeCam,
    LossConfig,
    PatchDiscriminator3d,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
)
from tools.clip_data import ClipDataConfig, ClipPool
from tools.metrics import psnr
from tools.video_io import tensor_to_frames, write_contact_sheet

log = logging.getLogger("train_tokenizer")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW with linear warmup and cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    disc_lr: float = 2e-4


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Run length, batching and logging."""

    steps: int = 2000
    max_minutes: float = 0.0
    batch_size: int = 4
    seed: int = 0
    log_every: int = 10
    preview_every: int = 200
    save_every: int = 500
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


class TokenizerTrainer:
    """One process, plain PyTorch: generator (tokenizer) and, if enabled, a discriminator."""

    def __init__(self, cfg: TokenizerTrainConfig, out: Path, perceptual: torch.nn.Module | None = None) -> None:
        self.cfg, self.out = cfg, out
        self.pool = ClipPool(cfg.data)
        VideoTokenizer(cfg.model).latent_shape(cfg.data.num_frames, cfg.data.size, cfg.data.size)  # validates
        torch.manual_seed(cfg.train.seed)
        self.rng = torch.Generator().manual_seed(cfg.train.seed)
        self.model = VideoTokenizer(cfg.model)
        self.perceptual = perceptual
        if cfg.loss.perceptual_weight > 0 and perceptual is None:
            raise ValueError("loss.perceptual_weight > 0 needs a perceptual network (--perceptual PATH)")
        o = cfg.optim
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.disc = None
        if cfg.loss.adversarial_weight > 0:
            self.disc = PatchDiscriminator3d(cfg.model.in_channels, cfg.loss.discriminator_channels, cfg.loss.discriminator_layers)
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=o.disc_lr, betas=(0.5, 0.9))
            self.lecam = LeCam(cfg.loss.lecam_decay)
        self.step = 0

    def train_step(self, video: torch.Tensor) -> dict[str, float]:
        """One optimisation step on (B, C, T, H, W); returns scalar logs."""
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = cfg.optim.lr * lr_factor(self.step, cfg.optim.warmup_steps, cfg.train.steps, cfg.optim.min_lr_ratio)
        out = self.model(video)
        losses = dict(reconstruction_loss(out.recon, video, cfg.loss))
        if self.perceptual is not None and cfg.loss.perceptual_weight > 0:
            from tokenizer.losses import perceptual_loss

            losses["perceptual"] = cfg.loss.perceptual_weight * perceptual_loss(out.recon, video, self.perceptual)
        rec_total = sum(losses.values())
        use_gan = self.disc is not None and self.step >= cfg.loss.adversarial_start_step
        if use_gan:
            g = hinge_g_loss(self.disc(out.recon))
            last = self.model.decoder.conv_out.conv.weight
            w = adaptive_weight(rec_total, g, last, cfg.loss.adaptive_weight_max)
            losses["gan"] = cfg.loss.adversarial_weight * w * g
        losses.update(out.losses)
        total = sum(losses.values())
        if not torch.isfinite(total):
            values = {k: float(v) for k, v in losses.items()}
            raise FloatingPointError(f"non-finite tokenizer loss at step {self.step}: {values}")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.opt.step()
        logs = {k: float(v.detach()) for k, v in losses.items()}
        if use_gan:
            real, fake = self.disc(video), self.disc(out.recon.detach())
            d_loss = hinge_d_loss(real, fake)
            if cfg.loss.lecam_weight > 0:
                d_loss = d_loss + cfg.loss.lecam_weight * self.lecam(real, fake)
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_opt.step()
            logs["d_loss"] = float(d_loss)
        with torch.no_grad():
            logs["psnr"] = float(psnr(out.recon.clamp(-1, 1), video).mean())
        logs.update({k: float(v) for k, v in out.stats.items()})
        logs.update(loss=float(total), grad_norm=float(gnorm), lr=self.opt.param_groups[0]["lr"], frames=video.shape[2])
        self.step += 1
        return logs

    def preview(self, video: torch.Tensor) -> Path:
        """Writes originals over reconstructions for up to 2 clips; returns the PNG path."""
        self.model.eval()
        recon = self.model.reconstruct(video[:2])
        self.model.train()
        rows = []
        for orig, rec in zip(tensor_to_frames(video[:2]), tensor_to_frames(recon)):
            rows += [orig, rec]
        path = self.out / "previews" / f"step_{self.step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_contact_sheet(path, rows)
        return path

    def fit(self) -> dict[str, float]:
        """Runs until ``train.steps`` or ``train.max_minutes``; saves and returns the last logs."""
        cfg, tc = self.cfg, self.cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out / "train_config.yaml")
        metrics = (self.out / "metrics.jsonl").open("a")
        start, logs = time.time(), {}
        preview_batch = self.pool.sample(2, torch.Generator().manual_seed(cfg.train.seed + 1))
        self.model.train()
        bar = tqdm(total=tc.steps, desc="tokenizer", unit="step", dynamic_ncols=True)
        while self.step < tc.steps:
            if tc.max_minutes and time.time() - start > 60 * tc.max_minutes:
                log.info("time budget of %.1f min reached at step %d", tc.max_minutes, self.step)
                break
            t0 = time.time()
            video = self.pool.sample(tc.batch_size, self.rng)
            logs = self.train_step(video)
            logs["clips_per_s"] = tc.batch_size / (time.time() - t0)
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == 1:
                bar.set_postfix(loss=f"{logs['loss']:.4f}", psnr=f"{logs['psnr']:.1f}", usage=f"{logs.get('usage', 0):.2f}")
                metrics.write(json.dumps({"step": self.step, "time": time.time() - start, **logs}) + "\n")
                metrics.flush()
            if tc.preview_every and self.step % tc.preview_every == 0:
                self.preview(preview_batch)
            if tc.save_every and self.step % tc.save_every == 0:
                self.model.save_pretrained(self.out / "tokenizer")
        bar.close()
        metrics.close()
        self.model.eval()
        self.model.save_pretrained(self.out / "tokenizer")
        final = self.preview(preview_batch)
        log.info("saved %s after %d steps (%.1f min); preview %s", self.out / "tokenizer", self.step, (time.time() - start) / 60, final)
        return logs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), merged in order")
    parser.add_argument("--data", action="append", default=[], help="video/image folder or file (repeatable); overrides data.paths")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--perceptual", help="TorchScript perceptual network (x, y) -> distance, e.g. a traced LPIPS")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.steps=100")
    args = parser.parse_args(argv)
    setup_logging()
    overrides = list(args.overrides)
    if args.data:
        overrides.append("data.paths=" + json.dumps(args.data))
    cfg = build_config(TokenizerTrainConfig, args.config, overrides)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    perceptual = None
    if args.perceptual:
        from tools.metrics import LPIPS

        perceptual = LPIPS(args.perceptual)
    trainer = TokenizerTrainer(cfg, Path(args.out), perceptual)
    logs = trainer.fit()
    print(f"trained {trainer.step} steps: psnr {logs.get('psnr', float('nan')):.2f} dB, usage {logs.get('usage', float('nan')):.3f}")
    print(f"wrote {Path(args.out) / 'tokenizer'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
