"""The causal 3D encoder: pixels (B, 3, T, H, W) -> continuous latents (B, D, t, h, w)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.layers import (
    CausalConv3d,
    FrameAttention,
    ResBlock3d,
    SpatialDownsample,
    StreamState,
    TemporalDownsample,
    frame_group_norm,
    make_norm,
)


@dataclass(frozen=True)
class StagePlan:
    """Which resolution changes follow each stage of ``channel_mult``.

    ``space[i]`` / ``time[i]`` say whether the encoder halves H,W / T after stage ``i``
    (the decoder undoes them in reverse). Spatial halvings come first, temporal ones last,
    where the channel count is highest and the maps are smallest.
    """

    space: tuple[bool, ...]
    time: tuple[bool, ...]

    @staticmethod
    def build(num_stages: int, spatial_compression: int, temporal_compression: int) -> StagePlan:
        s_levels = spatial_compression.bit_length() - 1
        t_levels = temporal_compression.bit_length() - 1
        n = num_stages - 1
        if n != max(s_levels, t_levels):
            raise ValueError(
                f"channel_mult has {num_stages} stages but compression {temporal_compression}x"
                f"{spatial_compression}x{spatial_compression} needs exactly {max(s_levels, t_levels) + 1}"
            )
        return StagePlan(
            space=tuple(i < s_levels for i in range(n)),
            time=tuple(i >= n - t_levels for i in range(n)),
        )


@dataclass(frozen=True, kw_only=True)
class CoderSpec:
    """What the encoder and the decoder are both built from.

    Attributes:
        latent_dim: channels D of the latent (the quantizer's dimension).
        base_channels, channel_mult: stage widths ``base_channels * m``.
        plan: the encoder's resampling after each stage (the decoder undoes it).
        attention: add per-frame self-attention at the bottleneck.
        norm_groups, num_heads: group-norm groups and bottleneck attention heads.
        spatial_only_stages: this many full-resolution stages convolve each frame alone (1x3x3).
    """

    latent_dim: int
    base_channels: int
    channel_mult: tuple[int, ...]
    plan: StagePlan
    attention: bool
    norm_groups: int
    num_heads: int
    spatial_only_stages: int = 0

    @property
    def widths(self) -> list[int]:
        """Channels of each stage, from the full-resolution one to the widest."""
        return [self.base_channels * m for m in self.channel_mult]


class Stack(nn.Sequential):
    """A sequence of causal layers that all accept a :class:`StreamState`."""

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, state)
        return x


def mid_block(channels: int, attention: bool, norm_groups: int, num_heads: int) -> Stack:
    """Bottleneck: resblock, optional per-frame attention, resblock."""
    layers: list[nn.Module] = [ResBlock3d(channels, channels, norm_groups)]
    if attention:
        layers.append(FrameAttention(channels, norm_groups, num_heads))
    layers.append(ResBlock3d(channels, channels, norm_groups))
    return Stack(*layers)


class Encoder(nn.Module):
    """Causal conv stem, residual stages with spatial then temporal downsampling, bottleneck.

    Args:
        spec: widths, resampling plan and bottleneck, shared with the decoder; its first
            ``spatial_only_stages`` stages (and the stem) convolve each frame alone (1x3x3): the
            full-resolution stages cost the most, and time is mixed deeper.
        in_channels: pixel channels (3).
        num_res_blocks: residual blocks per stage.
    """

    def __init__(
        self,
        spec: CoderSpec,
        *,
        in_channels: int,
        num_res_blocks: int,
    ) -> None:
        super().__init__()
        widths, plan, norm_groups = spec.widths, spec.plan, spec.norm_groups
        spatial_only_stages = spec.spatial_only_stages
        self.conv_in = CausalConv3d(in_channels, widths[0], (1 if spatial_only_stages else 3, 3, 3))
        layers: list[nn.Module] = []
        ch = widths[0]
        for i, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers.append(ResBlock3d(ch, width, norm_groups, temporal=i >= spatial_only_stages))
                ch = width
            if i < len(widths) - 1:
                nxt = widths[i + 1]
                if plan.space[i]:
                    layers.append(SpatialDownsample(ch, nxt if not plan.time[i] else ch))
                if plan.time[i]:
                    layers.append(TemporalDownsample(ch, nxt))
                ch = nxt
        self.down = Stack(*layers)
        self.mid = mid_block(ch, spec.attention, norm_groups, spec.num_heads)
        self.norm_out = make_norm(ch, norm_groups)
        self.conv_out = CausalConv3d(ch, spec.latent_dim, 3)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, D, t, h, w)."""
        h = self.down(self.conv_in(x, state), state)
        h = self.mid(h, state)
        return self.conv_out(F.silu(frame_group_norm(h, self.norm_out)), state)
