"""Quantizers of the video tokenizer: VQ, FSQ, LFQ and BSQ behind one interface.

One job: continuous latents to ids and codes and back (:class:`QuantizerOutput`). May import
only :mod:`core` from this repository (VQ uses :mod:`core.collectives`), never the rest of
:mod:`tokenizer`, which builds on it.

``QUANTIZERS`` maps each config name to its class and config class, e.g.
``cls, cfg_cls = QUANTIZERS["fsq"]; quantizer = cls(cfg_cls(levels=(8, 5, 5, 5)))``.
"""

from tokenizer.quantizers.base import Quantizer, QuantizerOutput, check_ids, check_latent, usage_stats
from tokenizer.quantizers.bsq import BSQ, BSQConfig
from tokenizer.quantizers.fsq import FSQ, FSQConfig
from tokenizer.quantizers.lfq import LFQ, LFQConfig
from tokenizer.quantizers.vq import VQ, VQConfig

QUANTIZERS: dict[str, tuple[type[Quantizer], type]] = {
    "vq": (VQ, VQConfig),
    "fsq": (FSQ, FSQConfig),
    "lfq": (LFQ, LFQConfig),
    "bsq": (BSQ, BSQConfig),
}

__all__ = [
    "BSQ",
    "FSQ",
    "LFQ",
    "QUANTIZERS",
    "VQ",
    "BSQConfig",
    "FSQConfig",
    "LFQConfig",
    "Quantizer",
    "QuantizerOutput",
    "VQConfig",
    "check_ids",
    "check_latent",
    "usage_stats",
]
