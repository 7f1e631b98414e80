"""The causal 3D decoder: codes (B, D, t, h, w) -> pixels (B, 3, T, H, W)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.encoder import CoderSpec, Stack, mid_block
from tokenizer.layers import (
    CausalConv3d,
    ResBlock3d,
    SpatialUpsample,
    StreamState,
    TemporalUpsample,
    frame_group_norm,
    make_norm,
)


class Decoder(nn.Module):
    """Mirror of :class:`~tokenizer.encoder.Encoder`: bottleneck, then stages from the
    widest back to the stem, undoing each downsampling in reverse order.

    Args:
        spec: the encoder's spec; the last ``spatial_only_stages`` stages (and the output conv)
            convolve each frame alone (1x3x3), mirroring the encoder.
        out_channels: pixel channels (3).
        num_res_blocks: residual blocks per stage (may exceed the encoder's for a stronger decoder).
    """

    def __init__(
        self,
        spec: CoderSpec,
        *,
        out_channels: int,
        num_res_blocks: int,
    ) -> None:
        super().__init__()
        widths, plan, norm_groups = spec.widths, spec.plan, spec.norm_groups
        spatial_only_stages = spec.spatial_only_stages
        ch = widths[-1]
        self.conv_in = CausalConv3d(spec.latent_dim, ch, 3)
        self.mid = mid_block(ch, spec.attention, norm_groups, spec.num_heads)
        layers: list[nn.Module] = []
        for i in reversed(range(len(widths))):
            for _ in range(num_res_blocks):
                layers.append(ResBlock3d(ch, widths[i], norm_groups, temporal=i >= spatial_only_stages))
                ch = widths[i]
            if i > 0:
                prev = widths[i - 1]
                # Undo, in reverse, what the encoder did after stage i-1: time first, then space.
                if plan.time[i - 1]:
                    layers.append(TemporalUpsample(ch, prev if not plan.space[i - 1] else ch))
                if plan.space[i - 1]:
                    layers.append(SpatialUpsample(ch, prev))
                ch = prev
        self.up = Stack(*layers)
        self.norm_out = make_norm(ch, norm_groups)
        self.conv_out = CausalConv3d(ch, out_channels, (1 if spatial_only_stages else 3, 3, 3))

    def forward(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """(B, D, t, h, w) -> (B, C, T, H, W)."""
        h = self.mid(self.conv_in(z, state), state)
        h = self.up(h, state)
        return self.conv_out(F.silu(frame_group_norm(h, self.norm_out)), state)
