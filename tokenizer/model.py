"""VideoTokenizer: causal 3D encoder + quantizer + decoder, and its config.

Videos are (B, 3, T, H, W) floats in [-1, 1] with T = 1 + k*ct (images: T = 1) and H, W
divisible by cs. They become token grids (B, t, h, w) with t = 1 + k, h = H/cs, w = W/cs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from core.checks import is_int
from core.config import to_dict
from core.numerics import exact_numerics
from core.weights import load_config, load_pretrained, save_pretrained
from tokenizer.decoder import Decoder
from tokenizer.encoder import CoderSpec, Encoder, StagePlan
from tokenizer.layers import StreamState
from tokenizer.quantizers import QUANTIZERS, BSQConfig, FSQConfig, LFQConfig, QuantizerOutput, VQConfig

TEMPORAL_COMPRESSIONS = (1, 2, 4, 8)
VALUE_TOLERANCE = 1e-3  # how far past [-1, 1] an input video may reach (rounding of a resize or a cast)
SPATIAL_COMPRESSIONS = (4, 8, 16)


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """Architecture of a :class:`VideoTokenizer`; it alone rebuilds the model.

    ``patch_size`` p folds each p x p pixel block into channels before the first convolution
    (and unfolds the decoder's output), a lossless 2D space-to-depth that moves the costly
    full-resolution layers to H/p x W/p. ``channel_mult`` has one entry per stage and needs
    ``max(log2 (cs/p), log2 ct) + 1`` entries.
    Only the sub-config named by ``quantizer`` is used.
    """

    in_channels: int = 3
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    decoder_res_blocks: int | None = None
    spatial_only_stages: int = 0
    patch_size: int = 1
    temporal_compression: int = 4
    spatial_compression: int = 8
    attention: bool = False
    num_heads: int = 1
    norm_groups: int = 8
    quantizer: Literal["vq", "fsq", "lfq", "bsq"] = "fsq"
    vq: VQConfig = field(default_factory=VQConfig)
    fsq: FSQConfig = field(default_factory=FSQConfig)
    lfq: LFQConfig = field(default_factory=LFQConfig)
    bsq: BSQConfig = field(default_factory=BSQConfig)

    def __post_init__(self) -> None:
        if self.temporal_compression not in TEMPORAL_COMPRESSIONS:
            raise ValueError(
                f"temporal_compression must be one of {TEMPORAL_COMPRESSIONS}, got {self.temporal_compression}"
            )
        if self.spatial_compression not in SPATIAL_COMPRESSIONS:
            raise ValueError(
                f"spatial_compression must be one of {SPATIAL_COMPRESSIONS}, got {self.spatial_compression}"
            )
        sizes = {"in_channels": self.in_channels, "base_channels": self.base_channels, "num_heads": self.num_heads,
                 "norm_groups": self.norm_groups, "channel_mult": min(self.channel_mult, default=0)}  # fmt: skip
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"model.{name} must be >= 1 (each entry), got {getattr(self, name)}")
        if self.num_res_blocks < 0 or (self.decoder_res_blocks is not None and self.decoder_res_blocks < 0):
            raise ValueError(f"model.num_res_blocks and decoder_res_blocks must be >= 0, got {self.num_res_blocks}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {sorted(QUANTIZERS)}, got {self.quantizer!r}")
        if self.patch_size not in (1, 2, 4) or self.patch_size >= self.spatial_compression:
            raise ValueError(f"patch_size must be 1, 2 or 4 and below spatial_compression, got {self.patch_size}")
        StagePlan.build(len(self.channel_mult), self.spatial_compression // self.patch_size, self.temporal_compression)
        if not 0 <= self.spatial_only_stages < len(self.channel_mult):
            raise ValueError(
                f"spatial_only_stages must be in [0, {len(self.channel_mult) - 1}], got {self.spatial_only_stages}"
            )

    def weights_identity(self) -> dict:
        """The fields that define the weights and the token space: the architecture and the quantizer in use, without
        the other quantizers' sections and the settings that shape training only (:data:`TRAINING_ONLY`)."""
        out = {k: v for k, v in to_dict(self).items() if k not in QUANTIZERS}
        active = to_dict(getattr(self, self.quantizer))
        out[self.quantizer] = {k: v for k, v in active.items() if k not in TRAINING_ONLY[self.quantizer]}
        return out


# Quantizer settings that shape training only (loss weights, codebook averaging): the same weights give the same
# tokens whatever they are, so a later stage or a resumed run may change them.
TRAINING_ONLY = {
    "fsq": ("bound_loss_weight", "bound_range"),
    "vq": ("commitment_weight", "codebook_weight", "ema_decay", "ema_epsilon", "dead_code_threshold"),
    "lfq": ("commitment_weight", "entropy_weight", "codebook_entropy_weight", "entropy_temperature",
            "entropy_group_size"),
    "bsq": ("commitment_weight", "entropy_weight", "codebook_entropy_weight", "entropy_temperature",
            "entropy_group_size"),
}  # fmt: skip


def _weight_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of a module's weights (its inputs are cast to it), or ``default`` for a parameter-free one."""
    param = next(module.parameters(), None)
    return default if param is None else param.dtype


@dataclass
class TokenizerOutput:
    """Result of :meth:`VideoTokenizer.forward`.

    Attributes:
        recon: (B, C, T, H, W) reconstruction, differentiable through the quantizer.
        ids: (B, t, h, w) token ids.
        losses: quantizer losses (already weighted).
        stats: quantizer diagnostics (usage, perplexity, ...).
    """

    recon: torch.Tensor
    ids: torch.Tensor
    losses: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor]


class VideoTokenizer(nn.Module):
    """Discrete causal video tokenizer. Images are 1-frame videos and share the token space."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        quant_cls, _ = QUANTIZERS[config.quantizer]
        self.quantizer = quant_cls(getattr(config, config.quantizer))
        plan = StagePlan.build(
            len(config.channel_mult), config.spatial_compression // config.patch_size, config.temporal_compression
        )
        pixels = config.in_channels * config.patch_size**2  # channels after space-to-depth
        spec = CoderSpec(
            latent_dim=self.quantizer.dim,
            base_channels=config.base_channels,
            channel_mult=config.channel_mult,
            plan=plan,
            attention=config.attention,
            norm_groups=config.norm_groups,
            num_heads=config.num_heads,
            spatial_only_stages=config.spatial_only_stages,
        )
        self.encoder = Encoder(spec, in_channels=pixels, num_res_blocks=config.num_res_blocks)
        dec_blocks = config.decoder_res_blocks if config.decoder_res_blocks is not None else config.num_res_blocks
        self.decoder = Decoder(spec, out_channels=pixels, num_res_blocks=dec_blocks)

    # ----------------------------------------------------------------- shapes and checks
    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def device(self) -> torch.device:
        """The device the weights are on (every part moves together with ``.to()``)."""
        return next(self.parameters()).device

    @property
    def last_decoder_weight(self) -> torch.Tensor:
        """The weight of the decoder's output convolution, the layer VQGAN's adaptive GAN weight
        differentiates the losses against (a parameter: gradients flow to it)."""
        return self.decoder.conv_out.conv.weight

    def latent_shape(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        """Token grid (t, h, w) for a (T, H, W) video; raises ValueError for unreachable sizes."""
        ct, cs = self.config.temporal_compression, self.config.spatial_compression
        if T < 1 or (T - 1) % ct:
            raise ValueError(f"T={T} frames is not of the form 1 + k*{ct}")
        if H < cs or W < cs or H % cs or W % cs:
            raise ValueError(f"H={H}, W={W} must be positive multiples of {cs}")
        return 1 + (T - 1) // ct, H // cs, W // cs

    def num_frames(self, t: int) -> int:
        """Pixel frames decoded from ``t`` latent frames: 1 + (t-1)*ct."""
        return 1 + (t - 1) * self.config.temporal_compression

    def check_video(self, video: torch.Tensor) -> None:
        """Raises ValueError naming the expected shape unless ``video`` is a valid input."""
        ct, cs, c = self.config.temporal_compression, self.config.spatial_compression, self.config.in_channels
        expected = f"(B, {c}, 1 + k*{ct}, H, W) with H and W multiples of {cs}"
        if not isinstance(video, torch.Tensor) or not video.dtype.is_floating_point:
            raise ValueError(f"video must be a float tensor of shape {expected}")
        if video.ndim != 5:
            raise ValueError(f"video must have shape {expected}, got rank {video.ndim} {tuple(video.shape)}")
        if video.shape[1] != c:
            raise ValueError(f"video must have shape {expected}, got {video.shape[1]} channels in {tuple(video.shape)}")
        if video.shape[0] < 1:  # attention's rearrange divided by zero; without attention an empty result
            raise ValueError(f"video must hold at least one clip, got {tuple(video.shape)}")
        try:
            self.latent_shape(*video.shape[2:])
        except ValueError as err:
            raise ValueError(f"video must have shape {expected}, got {tuple(video.shape)}: {err}") from None
        if video.device != self.device:  # a CPU clip on a CUDA model failed deep in oneDNN with a traceback
            raise ValueError(f"video is on {video.device}, the tokenizer on {self.device}: move one of them")
        if not torch.isfinite(video).all():
            raise ValueError("video contains NaN or infinite values")
        peak = float(video.detach().abs().amax()) if video.numel() else 0.0
        if peak > 1.0 + VALUE_TOLERANCE:  # frames.float() of uint8 (0..255) gave other tokens, silently
            raise ValueError(f"video values must lie in [-1, 1] (uint8 frames: x / 127.5 - 1), got up to {peak:.4g}")

    # ----------------------------------------------------------------- encode / decode
    def _latents(self, video: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """Encoder on (B, C, T, H, W) pixels -> (B, D, t, h, w) continuous latents."""
        p = self.config.patch_size
        x = rearrange(video, "b c t (h p1) (w p2) -> b (c p1 p2) t h w", p1=p, p2=p)  # (B, C*p*p, T, H/p, W/p)
        return self.encoder(x.to(_weight_dtype(self.encoder, x.dtype)), state)

    def _pixels(self, codes: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """Decoder on (B, D, t, h, w) codes -> (B, C, T, H, W) pixels."""
        p = self.config.patch_size
        x = self.decoder(codes.to(_weight_dtype(self.decoder, codes.dtype)), state)  # (B, C*p*p, T, H/p, W/p)
        return rearrange(x, "b (c p1 p2) t h w -> b c t (h p1) (w p2)", p1=p, p2=p)

    def quantize(self, video: torch.Tensor) -> QuantizerOutput:
        """Encodes and quantizes a checked video: (B, C, T, H, W) -> QuantizerOutput."""
        self.check_video(video)
        return self.quantizer(self._latents(video))

    @torch.no_grad()
    def encode(self, video: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """Tokenizes a video.

        Args:
            video: (B, C, T, H, W) in [-1, 1], T = 1 + k*ct.
            chunk_frames: if set, encode in time chunks of this many frames (a multiple of ct;
                the first chunk takes one extra frame). The result equals one full pass.

        Returns:
            ids: (B, t, h, w) long.
        """
        self.check_video(video)
        with exact_numerics() if video.is_cuda else contextlib.nullcontext():  # TF32 moved ids with the batch
            return self._encode(video, chunk_frames)

    def _encode(self, video: torch.Tensor, chunk_frames: int | None) -> torch.Tensor:
        if chunk_frames is None:
            return self._ids(self._latents(video).float())  # codes are chosen in fp32 whatever the weights
        ct = self.config.temporal_compression
        if not is_int(chunk_frames) or chunk_frames < ct or chunk_frames % ct:
            raise ValueError(f"chunk_frames must be a positive multiple of {ct}, got {chunk_frames}")
        state, latents, start = StreamState(), [], 0
        while start < video.shape[2]:
            stop = min(video.shape[2], start + chunk_frames + (1 if start == 0 else 0))
            latents.append(self._latents(video[:, :, start:stop], state))
            start = stop
        return self._ids(torch.cat(latents, dim=2).float())

    def _ids(self, latents: torch.Tensor) -> torch.Tensor:
        """The quantizer's ids of (B, D, t, h, w) latents, in eval mode whatever the module's mode: in training
        mode a VQ quantizer would also move its codebook, so encoding would change the token space."""
        if not bool(torch.isfinite(latents).all()):  # every quantizer maps NaN to a valid id: a constant grid
            raise ValueError("the tokenizer's encoder gave NaN or infinite latents (non-finite weights, or an "
                             "overflow in half precision): it has no tokens for this video")  # fmt: skip
        was_training = self.quantizer.training
        self.quantizer.eval()
        try:
            return self.quantizer(latents).ids
        finally:
            self.quantizer.train(was_training)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor, chunk_latents: int | None = None) -> torch.Tensor:
        """Detokenizes a token grid.

        Args:
            ids: (B, t, h, w) integer ids in [0, codebook_size).
            chunk_latents: if set, decode in chunks of this many latent frames (the first chunk
                takes one extra); the result equals one full pass.

        Returns:
            video: (B, C, 1 + (t-1)*ct, h*cs, w*cs) float32 whatever the weights' dtype, roughly in [-1, 1]
            (not clamped).
        """
        if isinstance(ids, torch.Tensor) and ids.ndim == 4 and min(ids.shape) < 1:
            raise ValueError(f"ids must be a non-empty (B, t, h, w) grid, got {tuple(ids.shape)}")
        if isinstance(ids, torch.Tensor) and ids.device != self.device:
            raise ValueError(f"ids are on {ids.device}, the tokenizer on {self.device}: move one of them")
        codes = self.quantizer.ids_to_codes(ids)
        if chunk_latents is None:
            return self._pixels(codes).float()
        if not is_int(chunk_latents) or chunk_latents < 1:
            raise ValueError(f"chunk_latents must be an integer >= 1, got {chunk_latents!r}")
        state, frames, start = StreamState(), [], 0
        while start < codes.shape[2]:
            stop = min(codes.shape[2], start + chunk_latents + (1 if start == 0 else 0))
            frames.append(self._pixels(codes[:, :, start:stop], state).float())
            start = stop
        return torch.cat(frames, dim=2)

    @torch.no_grad()
    def reconstruct(self, video: torch.Tensor) -> torch.Tensor:
        """decode(encode(video)): (B, C, T, H, W) -> (B, C, T, H, W), clamped to [-1, 1]."""
        return self.decode(self.encode(video)).clamp(-1, 1)

    def forward(self, video: torch.Tensor) -> TokenizerOutput:
        """Training pass: (B, C, T, H, W) -> TokenizerOutput with a differentiable reconstruction."""
        q = self.quantize(video)
        return TokenizerOutput(recon=self._pixels(q.codes), ids=q.ids, losses=q.losses, stats=q.stats)

    # ----------------------------------------------------------------- files
    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Writes ``model.safetensors`` and ``config.yaml`` (atomically, weights first); ``dtype``
        stores the float weights in that precision (e.g. fp16 to ship half-size files)."""
        save_pretrained(self, self.config, directory, dtype)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> VideoTokenizer:
        """Rebuilds the model from ``config.yaml`` and loads the weights strictly (no unpickling)."""
        config = load_config(TokenizerConfig, directory)
        return load_pretrained(lambda: cls(config), directory, what=f"tokenizer {str(directory)!r}").eval()
