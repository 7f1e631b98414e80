"""Tokenizer training: a :class:`~tokenizer.VideoTokenizer` on clips and images, with an optional GAN.

``tools/train_tokenizer.py`` builds a :class:`TokenizerTrainer` from a :class:`TokenizerTrainConfig`
and calls ``fit()``. The tokenizer trains inside one DeepSpeed engine (ZeRO 0-2, or 3 without the
adversarial loss) and, when ``loss.adversarial_weight > 0``, the 3D patch discriminator inside a
second one; both are checkpointed under one tag. Every rank samples its own clips; whether a step
is an image or a clip step is shared, so every rank runs the same kind of batch (and collectives).
Every checkpoint also refreshes ``<out>/tokenizer`` (``save_pretrained``: safetensors + config.yaml).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from core.frames import tensor_to_frames
from core.video_write import write_contact_sheet
from core.weights import WEIGHTS_NAME, load_config, load_state, load_strict
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
from videodata.clips import ClipPool
from videoeval.metrics import psnr
from videotrain import checkpoint, distributed, guards
from videotrain.discriminator_update import DiscriminatorUpdate
from videotrain.engines import EngineGroup, average_buffers, persistent_buffers
from videotrain.guards import NonFiniteGuard
from videotrain.optim import build_adamw, lr_at
from videotrain.outputs import check_out_apart
from videotrain.run import run_training
from videotrain.tokenizer_config import TokenizerTrainConfig, check_discriminator_input
from videotrain.trainer import Trainer

log = logging.getLogger(__name__)


class TokenizerTask(nn.Module):
    """The tokenizer and its objective as one module, so the engine's forward returns the loss.

    The discriminator and the perceptual network are arguments of each call, not submodules:
    the engine owns (casts, broadcasts, checkpoints) the tokenizer's weights only.
    """

    def __init__(self, tokenizer: VideoTokenizer, loss: LossConfig) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.loss = loss

    def forward(
        self, video: torch.Tensor, disc: nn.Module | None = None, perceptual: nn.Module | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The tokenizer-side loss of one batch.

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
            weight = adaptive_weight(
                sum(losses.values()), g, self.tokenizer.last_decoder_weight, cfg.adaptive_weight_max
            )
            losses["gan"] = cfg.adversarial_weight * weight * g
            stats["adaptive_weight"] = weight.float()
        losses.update(out.losses)
        total = sum(losses.values())
        with torch.no_grad():
            stats["psnr"] = psnr(recon.clamp(-1, 1), target).mean()
        terms = {k: v.detach().float() for k, v in losses.items()}
        return total, {**terms, **stats, "loss": total.detach().float()}, out.recon.detach()


class TokenizerTrainer(Trainer):
    """Trains a tokenizer (and its discriminator) on media files (see :class:`~videotrain.trainer.Trainer`).

    Args:
        cfg: the run's config.
        out: the run directory.
        perceptual: TorchScript network (x, y) -> distance, needed when ``loss.perceptual_weight > 0``.
    """

    task = "tokenizer"
    unsupported = ("eval_every", "eval_batches", "sample_steps", "peak_tflops")
    # A change of the frozen parts changes the optimizer's parameter groups: DeepSpeed failed on them with "loaded
    # state dict contains a parameter group that doesn't match the size of optimizer's group".
    resume_keys = ("frozen",)

    def __init__(self, cfg: TokenizerTrainConfig, out: str | Path, perceptual: nn.Module | None = None) -> None:
        self.perceptual = perceptual
        super().__init__(cfg, out)

    def kept_keys(self, folder: Path) -> tuple[str, ...]:
        """A checkpoint with the discriminator's state also keeps its shape (another failed inside DeepSpeed's loader
        with a traceback); one without it (adversarial training switched on later) keeps no disc_optim setting: the
        new discriminator starts from scratch with the settings given now."""
        keys = super().kept_keys(folder)
        if (folder / "discriminator").is_dir():
            return (*keys, "loss.discriminator_channels", "loss.discriminator_layers")
        return tuple(k for k in keys if not k.startswith("disc_optim."))

    def validate(self) -> None:
        cfg = self.cfg
        check_out_apart(self.out, {"data.paths": cfg.data.paths})
        if cfg.loss.perceptual_weight > 0 and self.perceptual is None:
            raise ValueError("loss.perceptual_weight > 0 needs a perceptual network (--perceptual PATH)")
        tokenizer = VideoTokenizer(cfg.model)
        tokenizer.latent_shape(cfg.data.num_frames, cfg.data.size, cfg.data.size)  # validates
        trainable = [p for name, p in tokenizer.named_parameters() if name.split(".")[0] not in cfg.frozen]
        if not trainable:
            raise ValueError(
                f"frozen: {list(cfg.frozen)} leaves no trainable weight (the {cfg.model.quantizer} quantizer has none)"
            )
        if cfg.loss.adversarial_weight > 0:
            check_discriminator_input(cfg.model.in_channels, cfg.loss, cfg.data.num_frames, cfg.data.size)
        ds = self.engine_config(self.optim.grad_clip)
        stage = ds["zero_optimization"]["stage"]
        vq = cfg.model.vq
        restarts = cfg.model.quantizer == "vq" and not vq.use_ema and vq.dead_code_threshold > 0
        if restarts and "quantizer" not in cfg.frozen and (stage > 0 or ds.get("fp16", {}).get("enabled")):
            raise ValueError(
                "a learned VQ codebook (model.vq.use_ema=false) with dead-code restarts needs ZeRO stage 0 and fp32 "
                "or bf16: ZeRO's and fp16's master copies of the weights overwrite every restarted code at the next "
                "step; use model.vq.use_ema=true, model.vq.dead_code_threshold=0 or run.zero_stage=0"
            )
        if cfg.frozen and (ds.get("fp16", {}).get("enabled") or ds.get("bf16", {}).get("enabled")):
            raise ValueError(
                f"frozen: {list(cfg.frozen)} needs run.precision=fp32 (or bf16 on a CPU, which autocasts): a "
                f"{self.run.precision} engine holds the whole module in {self.run.precision}, and the export would "
                "round the frozen weights and change token ids"
            )
        if cfg.loss.adversarial_weight > 0 and cfg.data.image_ratio >= 1.0:
            raise ValueError(
                "loss.adversarial_weight > 0 with data.image_ratio=1: image steps skip the discriminator, so it would "
                "never train; lower data.image_ratio or set loss.adversarial_weight=0"
            )
        if cfg.loss.adversarial_weight > 0 and cfg.loss.adversarial_start_step >= self.run.steps:
            log.warning(
                "loss.adversarial_start_step=%d >= run.steps=%d: the adversarial loss never applies in this run",
                cfg.loss.adversarial_start_step, self.run.steps,
            )  # fmt: skip
        if cfg.loss.adversarial_weight > 0 and stage == 3:
            raise ValueError(
                "loss.adversarial_weight > 0 needs ZeRO stage 0-2: the adaptive weight takes the gradient "
                "of the decoder's last layer, which ZeRO-3 partitions"
            )
        self.pool = ClipPool(cfg.data)

    def build(self) -> None:
        cfg, lc, device = self.cfg, self.cfg.loss, self.dist.device
        self.model = VideoTokenizer(cfg.model)
        # A later stage (e.g. longer clips) starts from an exported tokenizer; a resumed one has its own weights.
        if self.run.init_from and checkpoint.latest_complete(self.ckpt_dir) is None:
            src = load_config(TokenizerConfig, self.run.init_from)
            if src.weights_identity() != cfg.model.weights_identity():  # loss weights may change between stages
                raise ValueError(f"run.init_from {self.run.init_from} has another architecture than model.*")
            load_strict(self.model, load_state(Path(self.run.init_from) / WEIGHTS_NAME), what="tokenizer")
            log.info("initialized from %s", self.run.init_from)
        for part in cfg.frozen:
            getattr(self.model, part).requires_grad_(False)
        if cfg.frozen:
            log.info("kept fixed: %s", ", ".join(cfg.frozen))
        self.model.to(device)
        if self.perceptual is not None:
            self.perceptual = self.perceptual.to(device)
        opt = build_adamw(self.model, self.optim)
        self.engine = self.make_engine(TokenizerTask(self.model, lc), opt, self.optim.grad_clip)
        self.dtype = next(self.model.parameters()).dtype  # the engine casts for bf16 / fp16
        self.disc = self.disc_engine = self.lecam = None
        extras = {}
        if lc.adversarial_weight > 0:
            self.disc = PatchDiscriminator3d(cfg.model.in_channels, lc.discriminator_channels, lc.discriminator_layers)
            self.disc.to(device)
            disc_cfg = self.engine_config(cfg.disc_optim.grad_clip)
            disc_opt = build_adamw(self.disc, cfg.disc_optim)
            self.disc_engine = extras["discriminator"] = distributed.build_engine(self.disc, disc_opt, disc_cfg)
            guard = NonFiniteGuard(self.run.nonfinite, self.run.max_nonfinite)
            self.disc_update = DiscriminatorUpdate(self.disc_engine, self.disc, self.zero_stage, self.run.precision,
                                                   device, guard)  # fmt: skip
            self.lecam = LeCam(lc.lecam_decay).to(device)  # per-rank EMAs, averaged every step
        self.checkpointed = EngineGroup(self.engine, **extras)
        # Updated by the forward (VQ codebook EMAs) and by the discriminator's loss (LeCam EMAs): restored together.
        self.model_state = persistent_buffers(self.model) + (persistent_buffers(self.lecam) if self.lecam else [])
        self.rng = torch.Generator().manual_seed(self.run.seed + 1_000_003 * self.dist.rank)
        self.kind_rng = torch.Generator().manual_seed(self.run.seed + 2)
        # Fixed clips (not a draw with image_ratio, which could make them single frames for the whole run)
        preview_rng = torch.Generator().manual_seed(self.run.seed + 1)
        self.preview_batch = self.pool.sample(self.run.num_samples, preview_rng, images=not self.pool.clip_videos)

    def train_mode(self) -> None:
        """Training mode, except for the frozen parts: in training mode a VQ quantizer updates its codebook
        (moving averages, dead-code restarts) without any gradient, which would change the token space."""
        super().train_mode()
        for part in self.cfg.frozen:
            getattr(self.model, part).eval()

    # ------------------------------------------------------------------ the step
    def set_disc_lr(self) -> None:
        """The discriminator's rate: its schedule starts when it does, at ``loss.adversarial_start_step`` (counted
        from step 0, a warmup was over before the discriminator first trained)."""
        start = self.cfg.loss.adversarial_start_step
        lr = lr_at(max(0, self.step - start), self.cfg.disc_optim, max(1, self.run.steps - start))
        for group in self.disc_engine.optimizer.param_groups:
            group["lr"] = lr

    def train_step(self) -> dict[str, float] | None:
        """One optimizer step of both engines (``optim.grad_accum`` micro-batches); None if it was skipped.

        A micro-batch whose tokenizer or discriminator loss is non-finite on any rank is dropped
        before its backward, its buffer updates (VQ codebook EMAs) undone, and the next batch takes
        its place. A non-finite gradient skips the whole step and restores the buffers of the step.
        """
        cfg, gas = self.cfg, self.optim.grad_accum
        lr = self.set_lr()
        images = cfg.data.image_ratio > 0 and torch.rand((), generator=self.kind_rng).item() < cfg.data.image_ratio
        # The 3D discriminator needs several frames: image steps train the tokenizer alone.
        use_gan = self.disc is not None and self.step >= cfg.loss.adversarial_start_step and not images
        if use_gan:
            self.set_disc_lr()
        rows, step_start = [], [b.clone() for b in self.model_state]
        self.grad_norm = None
        while len(rows) < gas:
            kept = [b.clone() for b in self.model_state]
            video = self.pool.sample(self.run.micro_batch, self.rng, images=images).to(self.dist.device, self.dtype)
            total, logs, recon = self.engine(video, self.disc if use_gan else None, self.perceptual)
            d_loss = real = fake = None
            if use_gan:
                logits = self.disc_engine(torch.cat([video, recon])).float()  # (2B, 1, t', h', w'), one forward
                real, fake = logits.chunk(2)
                d_loss = hinge_d_loss(real, fake)
            if self.any_nonfinite(total, d_loss):
                self._restore(kept)
                self.guard.record(guards.LOSS, self.step)
                continue
            boundary = len(rows) == gas - 1
            if not self.backward(total, boundary):
                self._restore(step_start)
                if self.disc_engine is not None:  # its micro-batches of this step are dropped too
                    self.disc_update.discard()
                return None
            self.engine.step()
            if use_gan:
                if cfg.loss.lecam_weight > 0:
                    d_loss = d_loss + cfg.loss.lecam_weight * self.lecam(real, fake)
                self.disc_update.backward(d_loss, boundary, self.step)
                logs["d_loss"] = d_loss.detach()
            rows.append(logs)
        average_buffers(self.model, *([self.lecam] if self.lecam is not None else []))
        self.finished_step()
        logs = {k: float(torch.stack([r[k] for r in rows]).mean()) for k in rows[0]}
        logs.update(grad_norm=self.grad_norm_value(), lr=lr, frames=video.shape[2])
        return logs

    def _restore(self, buffers: list[torch.Tensor]) -> None:
        for b, old in zip(self.model_state, buffers):
            b.copy_(old)

    def throughput(self, seconds: float) -> dict[str, float]:
        return {"clips_per_s": self.run.micro_batch * self.optim.grad_accum * self.dist.world_size / seconds}

    # ------------------------------------------------------------------ state and outputs
    def task_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        tensors = {"clip_rng": self.rng.get_state(), "kind_rng": self.kind_rng.get_state()}
        if self.lecam is not None:
            tensors.update({f"lecam.{k}": v for k, v in self.lecam.state_dict().items()})
        return {"adversarial": self.disc is not None}, tensors

    def load_task_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.rng.set_state(tensors["clip_rng"])
        self.kind_rng.set_state(tensors["kind_rng"])
        if self.lecam is not None and "lecam.ema_real" in tensors:
            self.lecam.load_state_dict(
                {k.removeprefix("lecam."): v for k, v in tensors.items() if k.startswith("lecam.")}
            )

    def save(self) -> None:
        """A checkpoint of both engines, then a refreshed ``<out>/tokenizer`` (collective)."""
        super().save()
        self.export()

    def export(self) -> Path:
        """``save_pretrained`` of the (EMA) fp32 weights into ``<out>/tokenizer`` on rank 0 (collective)."""
        directory = self.out / "tokenizer"
        if self._exported_step == self.step and directory.is_dir():
            return directory
        state = self.export_state()
        if self.dist.is_main:
            tok = VideoTokenizer(self.cfg.model)
            load_strict(tok, state, "tokenizer")
            tok.save_pretrained(directory)
        distributed.barrier()
        self._exported_step = self.step
        return directory

    def write_samples(self) -> None:
        """Originals over reconstructions of the fixed preview clips, as ``previews/step_N.png`` (rank 0)."""
        if not (self.dist.is_main or self.zero_stage == 3):  # ZeRO-3's forward is collective
            return
        self.model.eval()
        with torch.no_grad():
            recon = self.model.reconstruct(self.preview_batch.to(self.dist.device, self.dtype))
        self.train_mode()
        if self.dist.is_main:
            rows = []
            for orig, rec in zip(tensor_to_frames(self.preview_batch), tensor_to_frames(recon)):
                rows += [orig, rec]
            path = self.out / "previews" / f"step_{self.step:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_contact_sheet(path, rows)

    def after_export(self) -> None:
        """A last preview of the final weights (written while the run still holds ``--out``)."""
        if self.run.sample_every:  # 0 = no previews
            self.write_samples()


def train_tokenizer(
    cfg: TokenizerTrainConfig, out: str | Path, perceptual: nn.Module | None = None
) -> TokenizerTrainer:
    """Builds a :class:`TokenizerTrainer`, runs it to the end and returns it (see :func:`run_training`)."""
    return run_training(lambda: TokenizerTrainer(cfg, out, perceptual))
