"""The block-causal video transformer shared by GPT-style and MaskGIT-style generation.

One model class; the style and the unit orders are config fields. The model maps token ids
laid out in sequence order (see :mod:`generator.units`) plus a condition prefix to logits
over the tokenizer's codebook. What may attend to what is given by the caller as a mask, so
the same weights serve training (full sequences) and cached sampling (a few new tokens).
Losses live in :mod:`generator.objectives`, samplers in :mod:`generator.sampling`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.checks import is_int
from core.config import to_dict
from core.weights import load_config, load_pretrained, save_pretrained
from generator.conditioning import Condition, ConditionEmbedder
from generator.kv_cache import KVCache
from generator.layers import Attention, DecodingLinear, RMSNorm, Rope3d, SwiGLU, decoding_layout_
from generator.units import ORDERS, make_layout, unit_extent

# The longest token sequence a config may ask for: one full attention over it is already far past any machine this
# runs on, and the layouts of a larger grid cannot be allocated.
MAX_GRID_TOKENS = 1 << 20


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig:
    """Architecture and token space of a :class:`Generator`; it alone rebuilds the model.

    Attributes:
        style: "ar" (next-token, causal inside units) or "maskgit" (masked tokens, bidirectional
            inside units, iterative parallel decoding).
        orders: unit orders the model supports (trained on); the first is the default.
        cube_size: (ct, ch, cw) of a cube unit, in tokens.
        vocab_size: tokenizer codebook size; ids ``vocab_size`` (mask) and ``vocab_size + 1``
            (start of video) are the two special tokens.
        max_grid: the largest (t, h, w) token grid; longer videos are made by the pipeline, window
            by window (``pipelines/rollout.py``).
        cond: "class", "text" or "none".
        max_text_len, text_dim: text tokens in the condition prefix, and the text encoder's width.
        text_pooled: text models: one more prefix token, the pooled sentence embedding (see
            :class:`~generator.conditioning.ConditionEmbedder`).
        target_positions: GPT-style only: add to each input a learned embedding of the (t, h, w)
            position it predicts (as in sigma-GPT), so one model learns and samples several orders
            ('frame' and 'cube' lay the same tokens out differently; without it the next position is
            implicit in the order and a model can serve only one layout).
    """

    style: Literal["ar", "maskgit"] = "ar"
    orders: tuple[str, ...] = ("token",)
    cube_size: tuple[int, int, int] = (1, 2, 2)
    vocab_size: int = 1000
    max_grid: tuple[int, int, int] = (5, 8, 8)
    dim: int = 256
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 8 / 3
    cond: Literal["class", "text", "none"] = "class"
    num_classes: int = 72
    text_dim: int = 384
    max_text_len: int = 16
    rope_base: float = 10000.0
    attention_backend: Literal["sdpa", "xformers"] = "sdpa"
    target_positions: bool = False
    text_pooled: bool = False
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        sizes = {"vocab_size": self.vocab_size, "dim": self.dim, "depth": self.depth, "num_heads": self.num_heads,
                 "num_classes": self.num_classes, "text_dim": self.text_dim,
                 "max_text_len": self.max_text_len}  # fmt: skip
        for name, value in sizes.items():  # num_heads 0 was a ZeroDivisionError, depth 0 a model without blocks
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        choices = {"style": ("ar", "maskgit"), "cond": ("class", "text", "none"),
                   "attention_backend": ("sdpa", "xformers")}  # fmt: skip
        for name, allowed in choices.items():  # a Python-built style="AR" trained as MaskGIT, and did not load back
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name, grid in (("max_grid", self.max_grid), ("cube_size", self.cube_size)):
            if len(grid) != 3 or not all(is_int(n) and n >= 1 for n in grid):
                raise ValueError(f"{name} must be three integers >= 1 (t, h, w), got {list(grid)}")
        if math.prod(self.max_grid) > MAX_GRID_TOKENS:  # [1e5]*3 allocated 8e15 bytes for its layouts: a traceback
            raise ValueError(
                f"max_grid {list(self.max_grid)} holds {math.prod(self.max_grid):,} tokens, more than the "
                f"{MAX_GRID_TOKENS:,} one sequence may hold"
            )
        for name, value in (("mlp_ratio", self.mlp_ratio), ("rope_base", self.rope_base)):
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not self.orders or any(o not in ORDERS for o in self.orders) or len(set(self.orders)) < len(self.orders):
            # a repeated order was accepted, and training drew it twice as often as the others
            raise ValueError(f"orders must be a non-empty subset of {list(ORDERS)}, got {list(self.orders)}")
        if self.style == "ar" and "clip" in self.orders:
            raise ValueError("order 'clip' is one unit of parallel decoding: it needs style 'maskgit'")
        if "cube" in self.orders:
            unit_extent("cube", self.max_grid, self.cube_size)
        if self.target_positions and self.style != "ar":
            raise ValueError("target_positions is for GPT-style models: a masked token's position is its own")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2 or self.dim // self.num_heads < 6:
            # below 6, 3D RoPE gives h and w no frequency pair: every position of a frame looks the same
            raise ValueError(f"dim {self.dim} / num_heads {self.num_heads} must give an even head size of at least 6")
        if self.style == "ar" and not self.target_positions:
            layouts = {tuple(make_layout(self.max_grid, o, self.cube_size).perm.tolist()) for o in self.orders}
            if len(layouts) > 1:  # the same inputs at the same positions would be asked for different next tokens
                raise ValueError(
                    f"GPT-style orders {list(self.orders)} lay tokens out differently: one model learns them all only "
                    "with target_positions: true (each input then knows the position it predicts)"
                )

    def weights_identity(self) -> dict:
        """The fields that define the weights and what they mean: all but the runtime choices (attention backend,
        activation checkpointing), which a resumed run may change, e.g. on another machine."""
        return {k: v for k, v in to_dict(self).items() if k not in ("attention_backend", "activation_checkpointing")}

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def start_id(self) -> int:
        return self.vocab_size + 1


class Block(nn.Module):
    """Pre-norm transformer block: RMSNorm -> attention, RMSNorm -> SwiGLU."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.num_heads, cfg.attention_backend)
        self.norm2 = RMSNorm(cfg.dim)
        self.mlp = SwiGLU(cfg.dim, int(cfg.mlp_ratio * cfg.dim))

    def forward(self, x, freqs, mask, cache=None, layer=0, span=None):
        """Shapes and arguments as :meth:`generator.layers.Attention.forward`."""
        x = x + self.attn(self.norm1(x), freqs, mask, cache, layer, span)
        return x + self.mlp(self.norm2(x))


class TargetPositions(nn.Module):
    """A learned embedding of a (t, h, w) grid position: the sum of one table per axis."""

    def __init__(self, max_grid: tuple[int, int, int], dim: int) -> None:
        super().__init__()
        self.axes = nn.ModuleList(nn.Embedding(n, dim) for n in max_grid)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, 3) long -> (N, dim)."""
        return sum(table(coords[:, i]) for i, table in enumerate(self.axes))


class Generator(nn.Module):
    """Block-causal transformer over video tokens with a condition prefix."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size + 2, c.dim)
        self.target_emb = TargetPositions(c.max_grid, c.dim) if c.target_positions else None
        self.cond_emb = ConditionEmbedder(c.cond, c.dim, c.num_classes, c.text_dim, c.max_text_len, c.text_pooled)
        self.rope = Rope3d(c.dim // c.num_heads, c.rope_base)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.depth))
        self.norm = RMSNorm(c.dim)
        self.head = DecodingLinear(c.dim, c.vocab_size)
        self.apply(self._init)
        for block in self.blocks:  # scale residual outputs by depth (GPT-2)
            nn.init.normal_(block.attn.proj.weight, std=0.02 / math.sqrt(2 * c.depth))
            nn.init.normal_(block.mlp.w2.weight, std=0.02 / math.sqrt(2 * c.depth))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------- helpers
    @property
    def prefix_len(self) -> int:
        return self.cond_emb.prefix_len

    @property
    def device(self) -> torch.device:
        """The device the weights are on; samplers put new tokens there."""
        return self.head.weight.device

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count (optionally without the token embedding table)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.tok_emb.weight.numel() if exclude_embeddings else n

    def flops_per_token(self, context: int, training: bool = True) -> float:
        """Approximate FLOPs per token: 6N + 12*depth*dim*context for training, a third of it
        for a forward pass (Kaplan et al. 2020, with attention over ``context`` keys)."""
        n = self.num_params(exclude_embeddings=True)
        fwd = 2 * n + 2 * self.config.depth * self.config.dim * context * 2
        return 3 * fwd if training else fwd

    def decoding_layout_(self) -> Generator:
        """Puts the linear layers in their inference layout, in place; returns self: the transformer's products
        pick the fastest CPU formulation for their row count (:class:`generator.layers.DecodingLinear`), the
        condition embedder's weights are stored column-major. Values, shapes and the state dict are unchanged.
        For inference: DeepSpeed's engine needs row-major parameters, so training builds the model without it.
        :meth:`from_pretrained` applies it."""
        return decoding_layout_(self)

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        """A static KV cache for ``batch`` rows and ``max_len`` positions (prefix included)."""
        p = self.head.weight
        c = self.config
        return KVCache(c.depth, batch, c.num_heads, max_len, c.dim // c.num_heads, dtype or p.dtype, p.device)

    def check_grid(self, grid: tuple[int, int, int], order: str) -> None:
        """ValueError if ``grid`` exceeds ``max_grid``: positions beyond it were never trained.

        Longer videos are made by the pipeline, window by window, each continuing from the last
        frames re-encoded as a fresh clip.
        """
        del order  # every order has the same limits
        mt, mh, mw = self.config.max_grid
        t, h, w = grid
        if t > mt or h > mh or w > mw:
            raise ValueError(f"token grid {tuple(grid)} is larger than the model's maximum {self.config.max_grid}")

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        ids: torch.Tensor,
        cond: Condition,
        cache: KVCache | None = None,
        *,
        coords: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for ``N`` new token positions.

        Without a cache (or with an empty one) the condition prefix is embedded first and every
        new token attends to it. With a non-empty cache the new tokens attend to every valid
        cached position and, among themselves, as ``mask`` allows; their keys and values are
        appended to the cache.

        Args:
            ids: (B, N) token ids (codes, ``mask_id`` or ``start_id``).
            cond: the condition (B rows).
            cache: optional static KV cache.
            coords: (N, 3) long (t, h, w) position of each new token (for 3D RoPE), inside ``max_grid``; -1 on
                every axis for the start token, which stays unrotated.
            mask: (N, N) bool, True where new token i may attend new token j.
            targets: (N, 3) long (t, h, w) position each new token predicts; needed (and only used)
                with ``config.target_positions``.

        Returns:
            logits: (B, N, vocab_size).
        """
        if ids.ndim != 2 or ids.shape[1] < 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"ids must be (B, N) integer token ids with N >= 1, got {ids.dtype} {tuple(ids.shape)}")
        ids = ids.long()  # the embedding takes int32/int64 only; int16/uint8 ids (a compact cache's) failed there
        B, N = ids.shape
        if cache is not None and cache.k.shape[1] != B:  # a shape error inside the attention before
            raise ValueError(f"the cache holds {cache.k.shape[1]} rows but ids have {B}")
        if coords.shape != (N, 3) or mask.shape != (N, N):
            raise ValueError(
                f"coords must be ({N}, 3) and mask ({N}, {N}), got {tuple(coords.shape)} and {tuple(mask.shape)}"
            )
        if coords.dtype.is_floating_point or coords.dtype == torch.bool:
            raise ValueError(f"coords must be integer (t, h, w) positions, got {coords.dtype}")
        inside = (coords >= 0) & (coords < coords.new_tensor(self.config.max_grid))  # (N, 3)
        if not bool((inside.all(1) | (coords == -1).all(1)).all()):  # rotations never trained, silently
            raise ValueError(f"coords must lie in the grid {tuple(self.config.max_grid)}, or be -1 on every axis")
        if mask.dtype != torch.bool:  # a 0/1 float mask would be added to the scores as a bias, masking nothing
            raise ValueError(f"mask must be a bool tensor (True where attention is allowed), got {mask.dtype}")
        lo, hi = torch.aminmax(ids)
        if int(lo) < 0 or int(hi) > self.config.start_id:
            raise ValueError(f"token ids must lie in [0, {self.config.start_id}]")
        x = self.tok_emb(ids)
        dev = x.device
        coords, mask = coords.to(dev), mask.to(dev)
        if self.target_emb is not None:
            if targets is None or targets.shape != (N, 3):
                raise ValueError(f"give targets, the ({N}, 3) positions the inputs predict (config.target_positions)")
            if targets.dtype.is_floating_point or targets.dtype == torch.bool:
                raise ValueError(f"targets must be integer (t, h, w) positions, got {targets.dtype}")
            targets = targets.long()
            if bool((targets < 0).any()) or bool((targets >= targets.new_tensor(self.config.max_grid)).any()):
                raise ValueError(f"targets must lie in the grid {tuple(self.config.max_grid)}")  # an IndexError
            x = x + self.target_emb(targets.to(dev)).to(x.dtype)
        key_valid = None  # (B, P + N) validity of the keys written now; None = all valid
        if cache is None or cache.length == 0:
            prefix, p_valid = self.cond_emb(cond)
            if prefix.shape[0] != B:
                raise ValueError(f"condition has {prefix.shape[0]} rows but ids have {B}")
            P = prefix.shape[1]
            x = torch.cat([prefix.to(x.dtype), x], dim=1)  # (B, P + N, D)
            coords = torch.cat([torch.full((P, 3), -1, dtype=coords.dtype, device=dev), coords])
            # The prefix never sees the video tokens, so this mask is never all True. It gets a
            # batch dimension only when some prefix key is padding.
            top = torch.cat(
                [torch.ones(P, P, dtype=torch.bool, device=dev), torch.zeros(P, N, dtype=torch.bool, device=dev)], 1
            )
            bottom = torch.cat([torch.ones(N, P, dtype=torch.bool, device=dev), mask], 1)
            full = torch.cat([top, bottom])[None, None]  # (1, 1, P+N, P+N)
            if not bool(p_valid.all()):
                key_valid = torch.cat([p_valid, torch.ones(B, N, dtype=torch.bool, device=dev)], dim=1)  # (B, P + N)
                full = full & key_valid[:, None, None, :]  # (B, 1, P+N, P+N)
        elif cache.all_valid and bool(mask.all()):
            # Every cached key is real and the new tokens see each other (a decoding step):
            # no mask, so SDPA skips building and applying one in every layer.
            full = None
        else:
            past_valid = cache.valid[:, : cache.length]
            full = torch.cat(
                [past_valid[:, None, None, :].expand(B, 1, N, -1), mask[None, None].expand(B, 1, N, N)], dim=-1
            )  # (B, 1, N, past + N)
        span = cache.reserve(x.shape[1], key_valid) if cache is not None else None
        freqs = self.rope.freqs(coords)  # (P + N or N, hd/2) complex
        for i, block in enumerate(self.blocks):
            if self.config.activation_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, freqs, full, use_reentrant=False)
            else:
                x = block(x, freqs, full, cache, i, span)
        return self.head(self.norm(x[:, -N:]))

    @torch.no_grad()
    def prefill(self, cond: Condition, cache: KVCache) -> None:
        """Writes the condition prefix's keys and values into an empty cache, so that every later
        step of a sampler attends to it without computing it again."""
        if cache.length:
            raise ValueError("prefill needs an empty KV cache")
        prefix, p_valid = self.cond_emb(cond)
        if prefix.shape[0] != cache.k.shape[1]:  # a shape error inside the attention, after the cache was reserved
            raise ValueError(f"the cache holds {cache.k.shape[1]} rows but the condition has {prefix.shape[0]}")
        P, dev = prefix.shape[1], prefix.device
        coords = torch.full((P, 3), -1, dtype=torch.long, device=dev)
        full = torch.ones(1, 1, P, P, dtype=torch.bool, device=dev)
        key_valid = None
        if not bool(p_valid.all()):
            key_valid = p_valid
            full = full & key_valid[:, None, None, :]  # (B, 1, P, P)
        span = cache.reserve(P, key_valid)
        freqs = self.rope.freqs(coords)
        x = prefix.to(self.tok_emb.weight.dtype)
        for i, block in enumerate(self.blocks):
            x = block(x, freqs, full, cache, i, span)

    def decode_step(
        self,
        ids: torch.Tensor,
        cache: KVCache,
        *,
        freqs: torch.Tensor,
        extra: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states, normed, of one new token per row that follows everything in ``cache``: the hot
        loop of GPT-style sampling. :meth:`forward` on the same inputs gives ``self.head`` of these, up to
        rounding; this path skips its checks and its per-call tables, which the caller computes once per video.

        Args:
            ids: (R, 1) token ids, already known to be valid.
            cache: a KV cache holding the prefix and every earlier token; the new key and value are appended.
            freqs: (1, hd/2) complex rotary table of the new position (:meth:`Rope3d.freqs`).
            extra: (1, D) added to the token embedding (the target-position embedding), or None.
            key_mask: (R, 1, 1, cache.length + 1) bool, True = a key the token may see; None when every key
                is valid.

        Returns:
            (R, 1, D) hidden states; the logits are ``self.head`` of them.
        """
        x = self.tok_emb(ids)  # (R, 1, D)
        if extra is not None:
            x = x + extra
        span = cache.reserve(1)
        for i, block in enumerate(self.blocks):
            x = block(x, freqs, key_mask, cache, i, span)
        return self.norm(x)

    # ----------------------------------------------------------------- files
    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Writes ``model.safetensors`` and ``config.yaml`` (atomically, weights first); ``dtype``
        stores the float weights in that precision (e.g. fp16 to ship half-size files)."""
        save_pretrained(self, self.config, directory, dtype)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> Generator:
        """Rebuilds from ``config.yaml`` and loads weights strictly (no unpickling); returns the
        model in eval mode with :meth:`decoding_layout_` applied."""
        config = load_config(GeneratorConfig, directory)
        model = load_pretrained(lambda: cls(config), directory, what=f"generator {str(directory)!r}")
        return model.decoding_layout_().eval()
