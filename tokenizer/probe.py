"""A tokenizer's token space, told by the ids it gives one fixed synthetic clip.

A generator's ids mean what its training tokenizer's encoder and codebook made them mean. The file bytes of a
tokenizer folder do not tell that: the same weights stored in fp16 (as ``make_pipeline --dtype float16`` ships
them), or a decoder fine-tuned with the encoder and quantizer frozen, are other bytes and the same token space.
The ids of a fixed clip do: such a tokenizer gives (nearly) the same ids, another one almost none of them (each id
agrees by chance with probability 1 / codebook size). Measured on the shipped shapes tokenizer with every weight
rounded to bf16 (coarser than fp16): 99.5% of the 192 probe ids unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tokenizer.model import TokenizerConfig, VideoTokenizer

PROBE_LATENT_FRAMES = 3  # the first frame alone, then two groups of temporal_compression frames
PROBE_LATENT_SIZE = 8  # latent cells per side
PROBE_AGREEMENT = 0.9  # the share of equal ids that counts as the same token space


def probe_clip(config: TokenizerConfig) -> torch.Tensor:
    """(1, C, T, H, W) smooth noise in [-1, 1], the same on every machine: coarse uniform noise from a seeded
    generator, trilinearly upsampled, so neighbouring cells share structure as in a real video."""
    frames = 1 + (PROBE_LATENT_FRAMES - 1) * config.temporal_compression
    size = PROBE_LATENT_SIZE * config.spatial_compression
    coarse = torch.rand(1, config.in_channels, frames, size // 8 or 1, size // 8 or 1,
                        generator=torch.Generator().manual_seed(0)) * 2 - 1  # fmt: skip
    return F.interpolate(coarse, size=(frames, size, size), mode="trilinear", align_corners=False)


@torch.no_grad()
def probe_ids(tokenizer: VideoTokenizer) -> list[int]:
    """The ids ``tokenizer`` gives :func:`probe_clip`, flattened (t, h, w order)."""
    device = next(tokenizer.parameters()).device
    clip = probe_clip(tokenizer.config).to(device)
    return tokenizer.encode(clip).flatten().tolist()


def agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """The share of positions where two probe id lists agree; 0.0 when their lengths differ (another grid)."""
    if len(a) != len(b) or not a:
        return 0.0
    return sum(x == y for x, y in zip(a, b)) / len(a)
