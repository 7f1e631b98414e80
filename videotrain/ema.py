"""Exponential moving average of a model's weights, kept outside the model."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """fp32 shadow copies of every floating-point parameter: shadow = d * shadow + (1 - d) * param.

    ``param`` is the module's own tensor: under DeepSpeed's bf16 or fp16 that is the half-precision copy, not the
    optimizer's fp32 master (partitioned under ZeRO; reading it every step would cost a collective per parameter),
    so the average is of rounded values. The export of a run without EMA reads the masters
    (:func:`videotrain.distributed.full_state_dict`).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: p.detach().float().clone() for k, p in model.named_parameters() if p.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, p in model.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"ema.{k}": v for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [k for k in self.shadow if f"ema.{k}" not in state]
        if missing:
            raise ValueError(f"checkpoint lacks EMA weights for {missing[:5]}")
        for k in self.shadow:
            self.shadow[k].copy_(state[f"ema.{k}"])

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the fp32 EMA values in place of the parameters, every float tensor in fp32
        on the CPU, as the export of a run without EMA (a bf16 or fp16 engine casts the module itself, and
        casting the average back to its dtype rounded the exported weights)."""
        state = {
            k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
            for k, v in model.state_dict().items()
        }
        for k, v in self.shadow.items():
            state[k] = v.cpu().clone()
        return state
