"""Transformer layers: RMSNorm, SwiGLU, 3D rotary embeddings, attention that can use a KV cache.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` with an explicit
boolean mask. xformers is an optional backend used only when it is installed and the tensors
are on CUDA; the default everywhere is SDPA.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

from generator.kv_cache import KVCache

_HAS_XFORMERS = importlib.util.find_spec("xformers") is not None


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension with a learned scale."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


# Inputs of 2 to this many rows multiply the weight as ``W @ x.T``, see DecodingLinear.
ROW_PRODUCT_MAX = 256


class DecodingLinear(nn.Linear):
    """A bias-free ``nn.Linear`` whose inference products on CPU use MKL's fastest formulation for their row count.

    Training, other devices and a module as built use ``F.linear``. After :meth:`decoding_layout_`, an input on
    CPU without autograd is multiplied by the same weight in one of two other ways:

    * 1 row (batch-1 decoding): as a batch of two products, each half of the weight's output rows times the input
      (``torch.bmm`` of a (2, out/2, in) view of the weight by the input as a column). ``F.linear`` sends a single
      row to MKL's matrix-vector kernel, which read the weights at about 15 GB/s on an AMD EPYC with 33 GB/s of
      read bandwidth. Measured there (``bench/decoding_products.py``), one pass over the 33 products of
      ``bench/generator_bench.py``'s model (80 MB, read from memory) took 2.6-3.4 against 5.2-6.5 ms; over the
      shipped generator's 25 (14 MB, which stay in the cache) it is a wash to 15% slower (0.56 against 0.54 ms,
      0.69 against 0.60 ms), and that model samples with guidance, two rows;
    * 2 to 256 rows (two rows of classifier-free guidance, a batch of videos, a MaskGIT unit): as ``W @ x.T``,
      which MKL computes reading the weight once: the shipped generator's 25 products took 0.75-1.16 against
      0.78-1.41 ms for 2 rows, 1.2 against 2.5 ms for 4 and 8.2 against 9.0 ms for 128. The result is the
      transposed view of that product.

    Each is timed against ``F.linear`` on a column-major weight, the faster layout for ``F.linear`` and the one
    these layers used before; ``bench/decoding_products.py`` repeats that on the machine it runs on. Both give
    ``F.linear``'s values up to rounding. The parameter stays as ``nn.Linear`` stores it (row-major), and both
    products read it directly, never a copy, so no change to it (``load_state_dict``, an optimizer step,
    ``.to()``, or an in-place write through ``.data``, which leaves ``_version`` as it was) can leave them on old
    values. The 1-row product needs an even number of outputs and a contiguous weight to view as two halves;
    other layers (the shipped generators' 4,375-way head) multiply a single row with ``F.linear``.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.decoding = False

    def decoding_layout_(self) -> None:
        """Turns on the row-count rule above (in place); the weight itself is unchanged."""
        self.decoding = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        w = self.weight
        if (
            not self.decoding
            or rows > ROW_PRODUCT_MAX
            or x.device.type != "cpu"
            or (torch.is_grad_enabled() and (w.requires_grad or x.requires_grad))
            or (rows == 1 and (self.out_features % 2 or not w.is_contiguous()))
        ):
            return F.linear(x, w)
        w = w.detach()
        col = x.reshape(rows, self.in_features).T  # (in, rows): the input as columns (the strides MKL is fast with)
        if rows == 1:
            halves = w.view(2, self.out_features // 2, self.in_features)  # (2, out/2, in), the parameter's storage
            y = torch.bmm(halves, col.expand(2, -1, -1))  # (2, out/2, 1)
            return y.view(*x.shape[:-1], self.out_features)
        y = w @ col  # (out, rows)
        return y.T.reshape(*x.shape[:-1], self.out_features)  # a view: (..., out), strides (1, ..., rows)


def decoding_layout_(module: nn.Module) -> nn.Module:
    """Puts every linear layer of ``module`` in its decoding layout, in place; returns it.

    :class:`DecodingLinear` layers get their row-count rule. Other ``nn.Linear`` weights (the condition
    embedder's, used once per video) are stored column-major: the (out, in) parameter becomes a transposed view of
    a contiguous (in, out) buffer, with the same values, shape and state-dict entry, and ``F.linear`` of a single
    row is ~25% faster on it with MKL. ``.to()``, ``load_state_dict`` and optimizers keep the layout; the saved
    weights are plain contiguous copies. Not for models handed to DeepSpeed, whose parameter broadcast needs
    row-major tensors.
    """
    for m in module.modules():
        if isinstance(m, DecodingLinear):
            m.decoding_layout_()
        elif isinstance(m, nn.Linear) and m.weight.is_contiguous():
            m.weight = nn.Parameter(m.weight.detach().t().contiguous().t(), requires_grad=m.weight.requires_grad)
    return module


class SwiGLU(nn.Module):
    """Gated feed-forward: W2(silu(W1 x) * W3 x); hidden width rounded up to a multiple of 8."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        hidden_dim = 8 * ((hidden_dim + 7) // 8)
        self.w13 = DecodingLinear(dim, 2 * hidden_dim)
        self.w2 = DecodingLinear(hidden_dim, dim)

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
        # float64 masters on the CPU: the buffers are rebuilt from them after every move or cast (``_apply``), so
        # ``model.to(torch.bfloat16)`` does not round the frequencies to 8 bits and every angle with them.
        self._masters = {
            axis: 1.0 / base ** (torch.arange(n, dtype=torch.float64) / max(n, 1)) for axis, n in zip("thw", self.split)
        }
        for axis, inv in self._masters.items():
            self.register_buffer(f"inv_{axis}", inv.float(), persistent=False)

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - torch's own signature
        super()._apply(fn, recurse)
        for axis, inv in self._masters.items():
            device = getattr(self, f"inv_{axis}").device
            setattr(self, f"inv_{axis}", inv.to(device=device, dtype=torch.float32))
        return self

    def angles(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, 3) long coordinates -> (N, head_dim/2) rotation angles (0 for prefix tokens)."""
        parts = []
        for i, axis in enumerate("thw"):
            pos = coords[:, i].float().clamp_min(0)
            parts.append(pos[:, None] * getattr(self, f"inv_{axis}")[None])
        ang = torch.cat(parts, dim=-1)
        return ang * (coords[:, :1] >= 0)  # prefix tokens (coords < 0) stay unrotated

    def freqs(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, 3) long coordinates -> (N, head_dim/2) complex64 unit rotations cos + i sin."""
        ang = self.angles(coords)
        return torch.complex(ang.cos(), ang.sin())

    @staticmethod
    def rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        """Rotates feature pairs of ``x`` (..., hd) by ``freqs`` (..., hd/2) complex, broadcast.

        Each pair (x1, x2) becomes (x1 cos - x2 sin, x1 sin + x2 cos), as one complex multiply:
        one kernel instead of the seven of the real form, and the same products and sums. A last dim
        that is not contiguous (the transposed products of :class:`DecodingLinear`) is copied first.
        """
        x32 = x.float()
        x32 = x32 if x32.stride(-1) == 1 else x32.contiguous()
        y = torch.view_as_complex(x32.unflatten(-1, (-1, 2))) * freqs  # (..., hd/2) complex
        return torch.view_as_real(y).flatten(-2).type_as(x)


class Attention(nn.Module):
    """Multi-head self-attention with 3D RoPE and an optional static KV cache."""

    def __init__(self, dim: int, num_heads: int, backend: str = "sdpa") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.backend = backend
        self.qkv = DecodingLinear(dim, 3 * dim)
        self.proj = DecodingLinear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        freqs: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer: int = 0,
        span: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Attends ``x`` (B, N, D) to itself and to the cache.

        Args:
            x: (B, N, D) new positions.
            freqs: (N, hd/2) complex rotary table of the new positions (:meth:`Rope3d.freqs`).
            mask: (B or 1, 1, N, K) bool, True = may attend; K = N, or the cache length after
                writing when a cache is used. None: every query attends every key.
            cache: keys/values of earlier positions; the new ones are written at ``span``.
            layer: this block's index into the cache.
            span: (start, stop) positions reserved in the cache for the new tokens.
        """
        B, N, _ = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3, nh, hd)
        # q and k rotated in one op; (B, N, 2, nh, hd) -> (2, B, nh, N, hd) as strided views
        q, k = Rope3d.rotate(qkv[:, :, :2], freqs[:, None, None]).permute(2, 0, 3, 1, 4).unbind(0)
        v = qkv[:, :, 2].transpose(1, 2)  # (B, nh, N, hd)
        if cache is not None:
            start, stop = span
            cache.k[layer, :, :, start:stop] = k
            cache.v[layer, :, :, start:stop] = v
            k, v = cache.k[layer, :, :, :stop], cache.v[layer, :, :, :stop]
        if self.backend == "xformers" and _HAS_XFORMERS and x.is_cuda:  # pragma: no cover - CUDA only
            out = _xformers_attention(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, N, hd)
        return self.proj(out.transpose(1, 2).reshape(B, N, -1))  # (B, N, nh * hd)


def xformers_bias(mask: torch.Tensor, dtype: torch.dtype, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """The additive attention bias xformers needs for a boolean ``mask`` (True = may attend).

    xformers' kernels take a materialized bias (no broadcast dimensions) whose rows start on 8-element
    boundaries: for a key length K that is not a multiple of 8, the bias is a slice of a tensor padded to one
    (see xformers' "attn_bias is not correctly aligned" hint). Returns (B, H, N, K), 0 where allowed and -inf
    elsewhere, with ``stride(-2)`` a multiple of 8.
    """
    B, H, N, K = shape
    padded = -(-K // 8) * 8
    bias = torch.zeros(B, H, N, padded, dtype=dtype, device=mask.device)[..., :K]
    return bias.masked_fill_(~mask.expand(B, H, N, K), float("-inf"))


def _xformers_attention(  # pragma: no cover - CUDA only
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    import xformers.ops as xops

    bias = None if mask is None else xformers_bias(mask, q.dtype, (*q.shape[:3], k.shape[2]))
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
    return out.transpose(1, 2)
