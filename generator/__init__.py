"""Video generators over discrete tokens: one block-causal transformer for GPT-style and
MaskGIT-style generation, with token, cube, frame or clip units and class/text conditioning.

One job: the generator model and what defines it (layers, KV cache, units and orders,
conditions, frozen text encoders, the mask schedule, the training objective); sampling is
:mod:`generator.sampling`. May import only :mod:`core` from this repository (and third-party
libraries); never the tokenizer, pipelines, training, data or evaluation packages, nor tools/.
"""

from generator.conditioning import Condition, ConditionEmbedder
from generator.kv_cache import KVCache
from generator.objectives import LossOutput, ObjectiveConfig, generator_loss, processed_length, train_flops_per_clip
from generator.transformer import Generator, GeneratorConfig
from generator.units import ORDERS, UnitLayout, make_layout

__all__ = [
    "ORDERS",
    "Condition",
    "ConditionEmbedder",
    "Generator",
    "GeneratorConfig",
    "KVCache",
    "LossOutput",
    "ObjectiveConfig",
    "UnitLayout",
    "generator_loss",
    "make_layout",
    "processed_length",
    "train_flops_per_clip",
]
