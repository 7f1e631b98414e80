"""Conditions and their prefix embeddings: class labels or frozen text-encoder features.

A condition becomes a short sequence of prefix tokens that every video token attends to:
one token for a class label, ``max_text_len`` projected tokens for text (plus, optionally, one token for
the pooled sentence embedding). Text goes in as a
prefix (not cross-attention) so that one attention mask and one KV cache serve both styles,
and the prefix is prefilled once. Classifier-free guidance replaces a dropped condition with a
learned null: the extra class id ``num_classes`` or a learned null text sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Condition:
    """What a batch is conditioned on. Exactly one of ``labels`` / ``text`` for conditional
    models; ``drop`` marks rows replaced by the null condition (CFG's unconditional branch).

    Attributes:
        labels: (B,) long class ids.
        text: (B, L, D_text) float text-encoder features.
        text_mask: (B, L) bool, True on real text tokens.
        drop: (B,) bool, rows to replace by the null condition.
    """

    labels: torch.Tensor | None = None
    text: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    drop: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        for name, t in (("labels", self.labels), ("text", self.text), ("drop", self.drop)):
            if t is not None:
                if not isinstance(t, torch.Tensor):  # a list of labels failed on .ndim
                    raise ValueError(f"Condition.{name} must be a tensor, got {type(t).__name__}")
                if t.ndim == 0:
                    raise ValueError("condition tensors need a batch dimension, got a 0-d tensor")
                if t.shape[0] < 1:  # the samplers failed deep inside torch on an empty batch
                    raise ValueError("the condition has no rows: give at least one")
                return t.shape[0]
        raise ValueError("an empty Condition has no batch size; pass drop=torch.ones(B, dtype=torch.bool)")

    @property
    def device(self) -> torch.device:
        """The device of the first tensor set (labels, text, then drop); CPU for an empty condition."""
        for t in (self.labels, self.text, self.drop):
            if t is not None:
                return t.device
        return torch.device("cpu")

    def rows(self, start: int, stop: int) -> Condition:
        """Rows ``start:stop`` of every tensor."""

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[start:stop]

        return Condition(
            labels=cut(self.labels), text=cut(self.text), text_mask=cut(self.text_mask), drop=cut(self.drop)
        )

    def repeat_interleave(self, k: int) -> Condition:
        """Each row ``k`` times in a row: (B * k) rows, row ``b * k + j`` a copy of row ``b``."""

        def rep(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.repeat_interleave(k, dim=0)

        return Condition(
            labels=rep(self.labels), text=rep(self.text), text_mask=rep(self.text_mask), drop=rep(self.drop)
        )

    def with_null(self) -> Condition:
        """The same batch followed by its unconditional copy: 2B rows (for CFG)."""
        B = self.batch_size
        drop = self.drop if self.drop is not None else torch.zeros(B, dtype=torch.bool, device=self.device)

        def cat(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else torch.cat([t, t], dim=0)

        return Condition(
            labels=cat(self.labels),
            text=cat(self.text),
            text_mask=cat(self.text_mask),
            drop=torch.cat([drop, torch.ones_like(drop)]),
        )


class ConditionEmbedder(nn.Module):
    """Maps a :class:`Condition` to prefix tokens (B, P, D) and their validity (B, P).

    Args:
        kind: "class", "text" or "none" (unconditional: one learned start-of-video token).
        dim: model width.
        num_classes: number of real classes; id ``num_classes`` is the null class.
        text_dim: width of the text-encoder features.
        max_text_len: text tokens in the prefix.
        text_pooled: put one more token first: the mask-averaged, L2-normalized text features (the
            sentence embedding that encoders like all-MiniLM-L6-v2 are trained to make), which
            depends less on word order and phrasing than the per-token features.
    """

    def __init__(
        self, kind: str, dim: int, num_classes: int, text_dim: int, max_text_len: int, text_pooled: bool = False
    ) -> None:
        super().__init__()
        self.kind = kind
        self.num_classes = num_classes
        self.max_text_len = max_text_len
        self.text_pooled = text_pooled and kind == "text"
        if kind == "class":
            self.class_emb = nn.Embedding(num_classes + 1, dim)
        elif kind == "text":
            self.text_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
            self.null_text = nn.Parameter(torch.randn(max_text_len, dim) * 0.02)
            self.text_pos = nn.Parameter(torch.randn(max_text_len, dim) * 0.02)
            if self.text_pooled:
                self.pooled_proj = nn.Sequential(
                    nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
                )  # fmt: skip
                self.null_pooled = nn.Parameter(torch.randn(1, dim) * 0.02)
        elif kind == "none":
            self.start = nn.Parameter(torch.randn(1, dim) * 0.02)
        else:
            raise ValueError(f"condition kind must be 'class', 'text' or 'none', got {kind!r}")

    @property
    def prefix_len(self) -> int:
        return self.max_text_len + self.text_pooled if self.kind == "text" else 1

    def forward(self, cond: Condition) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns prefix embeddings (B, P, D) and key validity (B, P) bool."""
        if not isinstance(cond, Condition):  # None gave an AttributeError, even for an unconditional model
            raise ValueError(
                f"cond must be a Condition, got {type(cond).__name__}; an unconditional batch is "
                "Condition(drop=torch.ones(B, dtype=torch.bool))"
            )
        B = cond.batch_size
        if self.kind == "none":
            emb = self.start[None].expand(B, -1, -1)
            return emb, torch.ones(B, 1, dtype=torch.bool, device=emb.device)
        drop = cond.drop
        if drop is not None and (drop.dtype != torch.bool or drop.shape != (B,)):
            # a (1,) drop would broadcast over the batch and null every row
            raise ValueError(f"drop must be a ({B},) bool tensor, got {drop.dtype} {tuple(drop.shape)}")
        if self.kind == "class":
            if cond.labels is None:
                if drop is None or not bool(drop.all()):
                    raise ValueError("this generator is class-conditional: pass labels")
                labels = torch.full((B,), self.num_classes, dtype=torch.long, device=drop.device)
            else:
                labels = cond.labels
                if labels.ndim != 1 or labels.dtype not in (torch.int32, torch.int64):
                    raise ValueError(f"labels must be a (B,) integer tensor, got {labels.dtype} {tuple(labels.shape)}")
                bad = (labels < 0) | (labels >= self.num_classes)
                if bool(bad.any()):
                    raise ValueError(f"unknown class id {int(labels[bad][0])}: valid ids are 0..{self.num_classes - 1}")
                if drop is not None:
                    labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
            emb = self.class_emb(labels)[:, None]  # (B, 1, D)
            return emb, torch.ones(B, 1, dtype=torch.bool, device=emb.device)
        return self._text(cond, B, drop)

    def _text(self, cond: Condition, B: int, drop: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        null = self.null_text
        if self.text_pooled:
            null = torch.cat([self.null_pooled, null])  # (P, D)
        null = null[None].expand(B, -1, -1)
        if cond.text is None:
            if drop is None or not bool(drop.all()):
                raise ValueError("this generator is text-conditional: pass text features")
            return null, torch.ones(B, self.prefix_len, dtype=torch.bool, device=null.device)
        text, mask = cond.text, cond.text_mask
        width = self.text_proj[0].in_features
        if text.ndim != 3 or text.shape[0] != B or text.shape[1:] != (self.max_text_len, width):
            raise ValueError(f"text features must be ({B}, {self.max_text_len}, {width}), got {tuple(text.shape)}")
        if mask is None:
            mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        elif mask.dtype != torch.bool or mask.shape != text.shape[:2]:  # e.g. a tokenizer's 0/1 attention_mask
            raise ValueError(f"text_mask must be a {tuple(text.shape[:2])} bool tensor, got {mask.dtype} "
                             f"{tuple(mask.shape)}")  # fmt: skip
        empty = ~mask.any(1) if drop is None else ~mask.any(1) & ~drop
        if bool(empty.any()):  # its prefix would attend to nothing: NaN that spreads to every token
            raise ValueError(f"text_mask row(s) {empty.nonzero().flatten().tolist()} mark no token; drop them instead")
        # padding holds whatever the encoder left there: zero it, so that NaN or inf in a padded position cannot reach
        # the logits through the pooled mean or as 0 * NaN in attention (masked keys still multiply their values)
        text = text.to(null.dtype).masked_fill(~mask[:, :, None], 0.0)
        emb = self.text_proj(text) + self.text_pos[None]
        if self.text_pooled:
            w = mask.to(text.dtype)[:, :, None]  # (B, L, 1)
            pooled = (text * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, D_text)
            pooled = nn.functional.normalize(pooled, dim=-1)
            emb = torch.cat([self.pooled_proj(pooled)[:, None], emb], dim=1)  # (B, 1 + L, D)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        if drop is not None:
            emb = torch.where(drop[:, None, None], null, emb)
            mask = mask | drop[:, None]
        return emb, mask
