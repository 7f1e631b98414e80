"""What a training run writes besides checkpoints: metrics (JSONL, optional TensorBoard, a loss
curve PNG), sample videos with a contact sheet, and the exported safetensors directory."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from core.config import save_config
from core.weights import save_state, CONFIG_NAME, WEIGHTS_NAME

log = logging.getLogger(__name__)


class MetricsLog:
    """Appends ``{"step": ..., **values}`` lines to ``metrics.jsonl``; draws ``loss_curve.png`` at close."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool = False) -> None:
        self.enabled, self.out = enabled, out
        self.file = (out / "metrics.jsonl").open("a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:  # tensorboard is optional
                raise ValueError("run.tensorboard=true needs the tensorboard package (pip install tensorboard)") from err
            self.tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        plot_loss_curve(self.out / "metrics.jsonl", self.out / "loss_curve.png")


def plot_loss_curve(metrics: Path, png: Path) -> None:
    """Training (and eval) loss against step, from a metrics JSONL file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r and math.isfinite(r["eval_loss"])]
    if not train:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(*zip(*train), label="train")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png.with_name(f".{png.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png)


def export_generator(state: dict[str, torch.Tensor], cfg: Any, directory: Path) -> None:
    """Writes ``model.safetensors`` + ``config.yaml`` (the GeneratorConfig) + ``train_config.yaml``."""
    directory.mkdir(parents=True, exist_ok=True)
    save_state(state, directory / WEIGHTS_NAME)
    save_config(cfg, directory / "train_config.yaml")
    save_config(cfg.model, directory / CONFIG_NAME)


@torch.no_grad()
def write_samples(trainer: Any, directory: Path) -> None:
    """Samples ``run.num_samples`` videos, decodes them with the tokenizer, writes mp4s and a sheet."""
    from generator import Condition
    from generator.sampling import SamplingConfig, sample_ar, sample_maskgit
    from tokenizer import VideoTokenizer
    from core.video_io import tensor_to_frames, write_contact_sheet, write_video

    cfg, model = trainer.cfg, trainer.model
    if getattr(trainer, "_tokenizer", None) is None:
        trainer._tokenizer = VideoTokenizer.from_pretrained(cfg.data.tokenizer).to(trainer.dist.device)
    tok = trainer._tokenizer
    n = cfg.run.num_samples
    picks = trainer.eval_idx[:n] if len(trainer.eval_idx) >= n else list(range(n))
    samples = [trainer.cache[int(i)] for i in picks]
    if cfg.model.cond == "class":
        cond = Condition(labels=torch.tensor([s.label for s in samples], device=trainer.dist.device))
    elif cfg.model.cond == "text":
        feats = trainer.text_encoder.encode([s.caption for s in samples])
        cond = Condition(text=feats.features, text_mask=feats.mask)
    else:
        cond = Condition(drop=torch.ones(n, dtype=torch.bool, device=trainer.dist.device))
    model.eval()
    sampling = SamplingConfig(steps=cfg.run.sample_steps, cfg_scale=1.0)
    fn = sample_ar if cfg.model.style == "ar" else sample_maskgit
    ids = fn(model, cond, trainer.cache.grid, order=cfg.model.orders[0], sampling=sampling,
             generator=torch.Generator(device=trainer.dist.device).manual_seed(0))
    model.train()
    frames = tensor_to_frames(tok.decode(ids).clamp(-1, 1).float().cpu())  # (B, T, H, W, C)
    directory.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(frames):
        write_video(directory / f"sample_{i:02d}.mp4", clip, fps=8)
    write_contact_sheet(directory / "contact_sheet.png", list(frames))
    (directory / "captions.json").write_text(json.dumps([{"label": s.label, "caption": s.caption} for s in samples]))
    log.info("wrote %d samples to %s", len(frames), directory)
