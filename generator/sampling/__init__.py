"""Samplers: GPT-style and MaskGIT-style decoding over a shared logits function."""

from generator.sampling.ar import sample_ar
from generator.sampling.config import SamplingConfig
from generator.sampling.context import DecodeContext
from generator.sampling.filtering import filter_logits, sample_logits
from generator.sampling.maskgit import sample_maskgit
from generator.schedules import SCHEDULES, gamma, num_masked_after_step, training_mask

__all__ = [
    "DecodeContext",
    "SCHEDULES",
    "SamplingConfig",
    "filter_logits",
    "gamma",
    "num_masked_after_step",
    "sample_ar",
    "sample_logits",
    "sample_maskgit",
    "training_mask",
]
