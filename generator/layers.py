"""Transformer layers: RMSNorm, SwiGLU, 3D rotary embeddings, attention with a static KV cache.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` with an explicit
boolean mask. xformers is an optional backend used only when it is installed and the tensors
are on CUDA; the default everywhere is SDPA.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

_HAS_XFORMERS = importlib.util.find_spec("xformers") is not None


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension with a learned scale."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class SwiGLU(nn.Module):
    """Gated feed-forward: W2(silu(W1 x) * W3 x); hidden width rounded up to a multiple of 8."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        hidden_dim = 8 * ((hidden_dim + 7) // 8)
        self.w13 = nn.Linear(dim, 2 * hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(a) * b)


class Rope3d(nn.Module):
    """Rotary position embedding over (t, h, w) coordinates.

    The head dimension is split into three even parts, one per axis (time gets the remainder).
    A token with coordinates (t, h, w) rotates each part by its own axis position; prefix
    (condition) tokens get coordinates ``-1`` on every axis, which this module leaves unrotated.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
        pairs = head_dim // 2
        hw = pairs // 3
        self.split = (pairs - 2 * hw, hw, hw)  # frequency pairs for t, h, w
        for axis, n in zip("thw", self.split):
            inv = 1.0 / base ** (torch.arange(n, dtype=torch.float64) / max(n, 1))
            self.register_buffer(f"inv_{axis}", inv.float(), persistent=False)

    def angles(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, 3) long coordinates -> (N, head_dim/2) rotation angles (0 for prefix tokens)."""
        parts = []
        for i, axis in enumerate("thw"):
            pos = coords[:, i].float().clamp_min(0)
            parts.append(pos[:, None] * getattr(self, f"inv_{axis}")[None])
        ang = torch.cat(parts, dim=-1)
        return ang * (coords[:, :1] >= 0)  # prefix tokens (coords < 0) stay unrotated

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotates (B, nh, N, hd) by per-position angles given as (N, hd/2) cos and sin."""
        x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, nh, N, hd/2) each
        y = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
        return y.flatten(-2).type_as(x)


class KVCache(nn.Module):
    """A preallocated key/value cache for every layer: (layers, B, nh, max_len, hd) buffers.

    ``length`` is how many positions are filled. A forward pass writes its new keys and values
    at ``[length, length + n)`` and advances ``length``; a sampler that only probes (MaskGIT
    steps) calls :meth:`rewind` afterwards. ``valid`` marks real positions (text padding is
    False) and is the key mask every later query uses.
    """

    def __init__(self, num_layers: int, batch: int, num_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        shape = (num_layers, batch, num_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("valid", torch.zeros(batch, max_len, dtype=torch.bool, device=device), persistent=False)
        self.max_len = max_len
        self.length = 0

    def reset(self) -> None:
        self.length = 0

    def rewind(self, length: int) -> None:
        """Forgets every position from ``length`` on."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot rewind a cache of length {self.length} to {length}")
        self.length = length

    def reserve(self, n: int, valid: torch.Tensor) -> tuple[int, int]:
        """Claims ``n`` positions whose key validity is ``valid`` (B, n); returns (start, stop)."""
        start, stop = self.length, self.length + n
        if stop > self.max_len:
            raise ValueError(f"KV cache overflow: {stop} positions needed, {self.max_len} allocated")
        self.valid[:, start:stop] = valid
        self.length = stop
        return start, stop


class Attention(nn.Module):
    """Multi-head self-attention with 3D RoPE and an optional static KV cache."""

    def __init__(self, dim: int, num_heads: int, backend: str = "sdpa") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        span: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Attends ``x`` (B, N, D) to itself and to the cache.

        Args:
            x: (B, N, D) new positions.
            cos, sin: (N, hd/2) rotary tables of the new positions.
            mask: (B or 1, 1, N, K) bool, True = may attend; K = N, or the cache length after
                writing when a cache is used.
            cache: keys/values of earlier positions; the new ones are written at ``span``.
            layer: this block's index into the cache.
            span: (start, stop) positions reserved in the cache for the new tokens.
        """
        q, k, v = rearrange(self.qkv(x), "b n (three nh hd) -> three b nh n hd", three=3, nh=self.num_heads)
        q, k = Rope3d.rotate(q, cos, sin), Rope3d.rotate(k, cos, sin)
        if cache is not None:
            start, stop = span
            cache.k[layer, :, :, start:stop] = k
            cache.v[layer, :, :, start:stop] = v
            k, v = cache.k[layer, :, :, :stop], cache.v[layer, :, :, :stop]
        if self.backend == "xformers" and _HAS_XFORMERS and x.is_cuda:  # pragma: no cover - CUDA only
            out = _xformers_attention(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, N, hd)
        return self.proj(rearrange(out, "b nh n hd -> b n (nh hd)"))


def _xformers_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
    import xformers.ops as xops

    bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
    bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
    return out.transpose(1, 2)
