"""Samplers: GPT-style and MaskGIT-style decoding over a shared logits function.

One job: turn a generator and a condition into a token grid (settings in :mod:`.config`, the
logits function with CFG and the KV cache in :mod:`.context`, logit filtering, ``ar`` and
``maskgit``). A sampler never changes the model. May import only :mod:`core` and its parent
package :mod:`generator` from this repository.
"""

from generator.sampling.ar import sample_ar
from generator.sampling.config import AR_ONLY, MASKGIT_ONLY, SamplingConfig
from generator.sampling.context import DecodeContext, check_window
from generator.sampling.filtering import filter_logits, sample_logits
from generator.sampling.maskgit import sample_maskgit
from generator.schedules import SCHEDULES, gamma, num_masked_after_step, training_mask

__all__ = [
    "AR_ONLY",
    "MASKGIT_ONLY",
    "SCHEDULES",
    "DecodeContext",
    "SamplingConfig",
    "check_window",
    "filter_logits",
    "gamma",
    "num_masked_after_step",
    "sample_ar",
    "sample_logits",
    "sample_maskgit",
    "training_mask",
]
