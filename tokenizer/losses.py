"""Tokenizer training losses: reconstruction, a 3D patch discriminator with hinge loss,
the adaptive generator weight of VQGAN, LeCam regularisation, and an optional perceptual
loss computed by a network the caller passes in (nothing is ever downloaded here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.layers import make_norm


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Weights of the tokenizer training objective.

    ``foreground_weight`` multiplies the reconstruction error of pixels that differ from the
    clip's per-channel median colour by more than ``foreground_threshold`` (in [-1, 1] units):
    on mostly-background data (small objects on flat backgrounds) a plain mean error lets the
    model ignore the objects. 1.0 disables it. ``foreground_dilation`` grows that mask by this
    many pixels in H and W, so the background just around an object is weighted too and a
    blurred edge costs as much as a wrong object pixel.
    """

    l1_weight: float = 1.0
    l2_weight: float = 1.0
    foreground_weight: float = 1.0
    foreground_threshold: float = 0.1
    foreground_dilation: int = 0
    perceptual_weight: float = 0.0
    adversarial_weight: float = 0.0
    adversarial_start_step: int = 0
    adaptive_weight_max: float = 1e4
    lecam_weight: float = 0.0
    lecam_decay: float = 0.999
    discriminator_channels: int = 32
    discriminator_layers: int = 3

    def __post_init__(self) -> None:
        if self.foreground_dilation < 0:
            raise ValueError(f"foreground_dilation must be >= 0 pixels, got {self.foreground_dilation}")
        weights = ("l1_weight", "l2_weight", "foreground_weight", "perceptual_weight", "adversarial_weight",
                   "adaptive_weight_max", "lecam_weight", "foreground_threshold")  # fmt: skip
        for name in weights:  # `not >= 0` also refuses NaN
            if not getattr(self, name) >= 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if not (self.l1_weight > 0 or self.l2_weight > 0):
            raise ValueError("loss.l1_weight or loss.l2_weight must be > 0: without either nothing asks for the input")
        if not 0 <= self.lecam_decay < 1:
            raise ValueError(f"loss.lecam_decay must be in [0, 1), got {self.lecam_decay}")
        if self.discriminator_channels < 1 or self.discriminator_layers < 1 or self.adversarial_start_step < 0:
            raise ValueError(
                "loss.discriminator_channels and loss.discriminator_layers must be >= 1 and "
                f"loss.adversarial_start_step >= 0, got {self.discriminator_channels}, {self.discriminator_layers}, "
                f"{self.adversarial_start_step}"
            )


def foreground_mask(video: torch.Tensor, threshold: float, dilation: int = 0) -> torch.Tensor:
    """Pixels that stand out from the clip's median colour, grown by ``dilation`` pixels.

    Args:
        video: (B, C, T, H, W) target in [-1, 1].

    Returns:
        (B, 1, T, H, W) float mask in {0, 1}.
    """
    background = video.flatten(2).median(dim=2).values[:, :, None, None, None]  # (B, C, 1, 1, 1)
    mask = ((video - background).abs().amax(dim=1, keepdim=True) > threshold).float()
    if dilation > 0:
        k = 2 * dilation + 1
        mask = F.max_pool3d(mask, (1, k, k), stride=1, padding=(0, dilation, dilation))
    return mask


def check_same_shape(recon: torch.Tensor, target: torch.Tensor) -> None:
    """ValueError unless a reconstruction and its target have one shape."""
    if recon.shape != target.shape:
        raise ValueError(f"recon {tuple(recon.shape)} and target {tuple(target.shape)} must have the same shape")


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """Weighted L1 and L2 between (B, C, T, H, W) videos; returns the weighted terms.

    Raises:
        ValueError: the shapes differ (a 1-frame recon against a 9-frame target broadcast silently).
    """
    check_same_shape(recon, target)
    weight = 1.0
    if cfg.foreground_weight != 1.0:
        fg = foreground_mask(target, cfg.foreground_threshold, cfg.foreground_dilation)
        weight = 1.0 + (cfg.foreground_weight - 1.0) * fg
    diff = recon - target
    losses = {}
    if cfg.l1_weight:
        losses["l1"] = cfg.l1_weight * (weight * diff.abs()).mean()
    if cfg.l2_weight:
        losses["l2"] = cfg.l2_weight * (weight * diff.square()).mean()
    return losses


def perceptual_loss(recon: torch.Tensor, target: torch.Tensor, net: nn.Module, num_frames: int = 4) -> torch.Tensor:
    """Mean perceptual distance over up to ``num_frames`` evenly spaced frames.

    Args:
        recon, target: (B, C, T, H, W) in [-1, 1].
        net: maps two (N, C, H, W) image batches in [-1, 1] to distances of any shape with N leading.

    Raises:
        ValueError: the shapes differ.
    """
    check_same_shape(recon, target)
    T = recon.shape[2]
    idx = torch.linspace(0, T - 1, min(num_frames, T)).round().long().unique()
    a = recon[:, :, idx].transpose(1, 2).flatten(0, 1)  # (B*n, C, H, W)
    b = target[:, :, idx].transpose(1, 2).flatten(0, 1)
    return net(a, b).mean()


class PatchDiscriminator3d(nn.Module):
    """A 3D PatchGAN: strided 4x4x4 convolutions, one real/fake logit per spatiotemporal patch.

    Args:
        in_channels: pixel channels.
        channels: width of the first layer (doubled per layer, capped at 8x).
        num_layers: number of strided layers.
    """

    def __init__(self, in_channels: int = 3, channels: int = 32, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv3d(in_channels, channels, 4, stride=(1, 2, 2), padding=1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, num_layers + 1):
            nxt = channels * min(2**i, 8)
            stride = (2, 2, 2) if i < num_layers else (1, 1, 1)
            layers += [nn.Conv3d(ch, nxt, 4, stride=stride, padding=1), make_norm(nxt, 8), nn.LeakyReLU(0.2)]
            ch = nxt
        layers.append(nn.Conv3d(ch, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> patch logits (B, 1, t', h', w')."""
        return self.net(video)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))."""
    return F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean()


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge loss: -mean(D(G(z)))."""
    return -logits_fake.mean()


def adaptive_weight(
    rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float
) -> torch.Tensor:
    """VQGAN's balance ||grad rec|| / ||grad g|| at the decoder's last layer (detached)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


class LeCam(nn.Module):
    """LeCam regulariser (Tseng et al. 2021): keeps D's outputs near EMAs of the other side's.

    loss = mean((D(real) - ema_fake)^2) + mean((D(fake) - ema_real)^2).
    """

    def __init__(self, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def forward(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        """Updates the EMAs (in training mode) and returns the regulariser."""
        logits_real, logits_fake = logits_real.float(), logits_fake.float()  # bf16 logits failed in the fp32 lerp
        if self.training:
            with torch.no_grad():
                self.ema_real.lerp_(logits_real.mean(), 1 - self.decay)
                self.ema_fake.lerp_(logits_fake.mean(), 1 - self.decay)
        return (logits_real - self.ema_fake).square().mean() + (logits_fake - self.ema_real).square().mean()
