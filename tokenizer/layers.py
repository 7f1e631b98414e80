"""Causal 3D building blocks: convolutions padded only from the past, per-frame norms,
separate spatial and temporal resampling, and per-frame attention.

Causality rule: the output at frame ``i`` depends only on input frames ``<= i``. Every layer
here keeps it, which is what makes an image a valid 1-frame video and lets long videos be
encoded in chunks that give the same tokens as one pass (see :class:`StreamState`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class StreamState:
    """Carries the temporal context of every causal layer from one chunk to the next.

    Pass one fresh instance through a sequence of chunked calls. A causal conv keeps its last
    ``kt - 1`` input frames; a temporal resampler remembers that the first frame has been seen.
    """

    def __init__(self) -> None:
        self.frames: dict[nn.Module, torch.Tensor] = {}
        self.started: set[nn.Module] = set()


def frame_group_norm(x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm over (C, H, W) of each frame separately, so statistics never mix time steps.

    Args:
        x: (B, C, T, H, W).
    """
    B, C, T, H, W = x.shape
    y = x.transpose(1, 2).reshape(B * T, C, H, W)  # (B*T, C, H, W)
    y = F.group_norm(y, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return y.reshape(B, T, C, H, W).transpose(1, 2)  # (B, C, T, H, W)


def make_norm(channels: int, groups: int) -> nn.GroupNorm:
    """A GroupNorm whose group count divides ``channels``."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels, eps=1e-6)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that sends fp32 CPU inputs to oneDNN (mkldnn) at every size.

    PyTorch runs a batch-1 fp32 CPU convolution with a 3x3 (or smaller) kernel on its reference kernel
    (``slow_conv3d``) when N*C*T*H of the input is at most 20,480, a size rule made for 2D convolutions:
    the shapes tokenizer's decoder at batch 1 has most of its layers under it (32 channels at 17x32x32),
    where oneDNN is 3-6x faster (bench/README.md). Same parameters and state dict; the results agree
    within float rounding, and gradients flow through either path. Under ``torch.compile`` the plain
    convolution is traced instead.
    """

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and torch.backends.mkldnn.enabled
            and torch.backends.mkldnn.is_available()
            and not torch.compiler.is_compiling()  # fake tensors cannot enter mkldnn_convolution
            and not torch.is_autocast_enabled("cpu")  # autocast does not cover the aten op: bf16 would be skipped
        ):
            return torch.ops.aten.mkldnn_convolution(
                x.contiguous(), weight, bias, list(self.padding), list(self.stride), list(self.dilation), self.groups
            )
        return super()._conv_forward(x, weight, bias)


class CausalConv3d(nn.Module):
    """A 3D convolution padded in time only from the past.

    The first chunk of a video is padded by repeating its first frame ``kt - 1`` times; later
    chunks are padded with the true previous frames held in a :class:`StreamState`.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: (kt, kh, kw) or one int for all three.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int] = 3) -> None:
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        self.time_pad = kt - 1
        self.conv = Conv3d(in_channels, out_channels, (kt, kh, kw), padding=(0, kh // 2, kw // 2))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """(B, C_in, T, H, W) -> (B, C_out, T, H, W)."""
        if self.time_pad == 0:
            return self.conv(x)
        past = state.frames.get(self) if state is not None else None
        if past is None:
            past = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
        x = torch.cat([past, x], dim=2)  # (B, C, time_pad + T, H, W)
        if state is not None:
            state.frames[self] = x[:, :, -self.time_pad :].detach()
        return self.conv(x)


class ResBlock3d(nn.Module):
    """Pre-activation residual block of two causal convolutions: 3x3x3, or 1x3x3 (per frame)
    when ``temporal`` is False."""

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int, temporal: bool = True) -> None:
        super().__init__()
        kernel = (3, 3, 3) if temporal else (1, 3, 3)
        self.norm1 = make_norm(in_channels, norm_groups)
        self.conv1 = CausalConv3d(in_channels, out_channels, kernel)
        self.norm2 = make_norm(out_channels, norm_groups)
        self.conv2 = CausalConv3d(out_channels, out_channels, kernel)
        self.skip = Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """(B, C_in, T, H, W) -> (B, C_out, T, H, W)."""
        h = self.conv1(F.silu(frame_group_norm(x, self.norm1)), state)
        h = self.conv2(F.silu(frame_group_norm(h, self.norm2)), state)
        return self.skip(x) + h


class FrameAttention(nn.Module):
    """Self-attention over the h*w positions of each frame (never across time, so causal)."""

    def __init__(self, channels: int, norm_groups: int, num_heads: int = 1) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm = make_norm(channels, norm_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, C, T, H, W)."""
        B, _, _, H, _ = x.shape  # (B, C, T, H, W)
        h = rearrange(frame_group_norm(x, self.norm), "b c t h w -> (b t) (h w) c")
        q, k, v = rearrange(self.qkv(h), "n s (three nh d) -> three n nh s d", three=3, nh=self.num_heads)
        h = F.scaled_dot_product_attention(q, k, v)  # (B*T, nh, H*W, d)
        h = self.proj(rearrange(h, "n nh s d -> n s (nh d)"))
        return x + rearrange(h, "(b t) (h w) c -> b c t h w", b=B, h=H)


class SpatialDownsample(nn.Module):
    """Halves H and W with a strided 1x3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = Conv3d(in_channels, out_channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, C_out, T, H/2, W/2)."""
        return self.conv(x)


class SpatialUpsample(nn.Module):
    """Doubles H and W: nearest neighbour, then a 1x3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = Conv3d(in_channels, out_channels, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, C_out, T, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


class TemporalDownsample(nn.Module):
    """Halves time as 1 + 2k -> 1 + k: frame 0 alone, then frames (1,2), (3,4), ... in pairs.

    Each pair is stacked on channels and mixed by a 1x1x1 convolution; the first frame is
    paired with a copy of itself so it goes through the same weights.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.mix = Conv3d(2 * in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """(B, C, 1 + 2k, H, W) -> (B, C_out, 1 + k, H, W); later stream chunks: 2k -> k."""
        first_chunk = state is None or self not in state.started
        if state is not None:
            state.started.add(self)
        if first_chunk:
            x = torch.cat([x[:, :, :1], x], dim=2)  # (B, C, 2 + 2k, H, W)
        if x.shape[2] % 2:
            raise ValueError(f"temporal downsampling got {x.shape[2]} frames where pairs were expected")
        x = rearrange(x, "b c (t two) h w -> b (c two) t h w", two=2)
        return self.mix(x)


class TemporalUpsample(nn.Module):
    """Doubles time as 1 + k -> 1 + 2k, the inverse layout of :class:`TemporalDownsample`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.expand = Conv3d(in_channels, 2 * out_channels, 1)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """(B, C, 1 + k, H, W) -> (B, C_out, 1 + 2k, H, W); later stream chunks: k -> 2k."""
        first_chunk = state is None or self not in state.started
        if state is not None:
            state.started.add(self)
        x = rearrange(self.expand(x), "b (c two) t h w -> b c (t two) h w", two=2)
        return x[:, :, 1:] if first_chunk else x
