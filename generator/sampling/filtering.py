"""Turning logits into samples: temperature, top-k, top-p, greedy."""

from __future__ import annotations

import torch

from generator.sampling.config import SamplingConfig


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Sets logits outside top-k / top-p to -inf; the top token always stays. (..., V) -> (..., V).

    Raises:
        ValueError: ``top_k`` < 0 or ``top_p`` outside (0, 1] (top_p = 0 dropped every token: NaN probabilities).
    """
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_k must be >= 0 and top_p in (0, 1], got {top_k} and {top_p}")
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token if the mass before it already reaches top_p (the top token always stays)
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop_sorted[..., 0] = False  # a top_p below float32's range (1e-300) became 0, dropping every token
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_logits(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Draws ids (...,) from logits (..., V) with temperature, top-k and top-p; greedy at T=0.

    Raises:
        ValueError: a logit is NaN or +inf, or every logit of a row is -inf (a broken model: NaN weights, or a
            half-precision head that overflowed). A +inf used to become NaN in the shift below, so that every
            token but the certain one was drawn, and greedy decoding returned a NaN's position.
    """
    if bool((logits.isnan() | logits.isposinf()).any() | (logits.amax(-1) == float("-inf")).any()):
        raise ValueError("the model gave logits that are NaN, +inf or -inf for every token: it cannot be sampled")
    if cfg.temperature == 0:
        return logits.argmax(-1)
    scaled = logits.float() if cfg.temperature == 1.0 else logits.float() / cfg.temperature  # x / 1 == x
    if not bool(torch.isfinite(scaled).all()):  # a tiny temperature overflowed: the same softmax, shifted first
        shifted = logits.float() - logits.float().amax(-1, keepdim=True)  # (..., V) <= 0, the top token at 0
        # the top token stays at 0: a temperature below float32's smallest number divides it as 0/0 = NaN, and
        # a NaN top left every token at -inf (softmax then drew every token but the top one)
        scaled = torch.where(shifted == 0, 0.0, shifted / cfg.temperature).nan_to_num(nan=float("-inf"))
    logits = filter_logits(scaled, cfg.top_k, cfg.top_p)
    probs = logits.softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
