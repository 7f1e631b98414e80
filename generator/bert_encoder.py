"""BERT encoders (BERT, MiniLM) without ``transformers``: the model in torch, the tokenizer from ``tokenizer.json``.

Importing ``transformers`` and building a model through ``AutoModel`` costs about 1.7 s on 2 CPU cores,
more than sampling a video with the default model. A checkpoint whose ``config.json`` says
``model_type: bert`` (post-LayerNorm, absolute positions, GELU) and that ships a ``tokenizer.json`` is
loaded here instead: the weights strictly from ``model.safetensors`` (or its index's shards), as
``from_pretrained`` reads them, and the tokenizer with the ``tokenizers``
library, which reads the same normalizer, WordPiece vocabulary and special-token template that
``transformers``' fast tokenizer reads. Tests compare features and ids with ``transformers`` on the real
MiniLM weights.

:class:`BertModel` and :class:`BertTokenizer` mimic the few parts of the ``transformers`` interfaces that
:class:`generator.text_encoders.TextEncoder` calls, so both loaders share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.files import read_json_object
from generator.text_encoder_files import weight_files

SUPPORTED_ACTIVATIONS = {"gelu": F.gelu}  # exact (erf) GELU, as transformers' "gelu"


@dataclass(frozen=True)
class BertShape:
    """The ``config.json`` fields the forward pass needs (``hidden_size`` is what TextEncoder reads)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str

    @classmethod
    def read(cls, path: Path) -> BertShape:
        raw = read_json_object(path / "config.json", "text encoder file")
        if why := unsupported(raw):
            raise ValueError(f"{str(path)!r}: {why}")
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__})


def unsupported(config: dict) -> str | None:
    """Why :class:`BertModel` would not compute what transformers computes for this ``config.json``, else None:
    such checkpoints load through ``AutoModel`` (a saved ``BertLMHeadModel`` has ``is_decoder``, so transformers
    attends causally, and this bidirectional path gave features up to 1.4 apart)."""
    if config.get("position_embedding_type", "absolute") != "absolute":
        return "only absolute position embeddings are supported"
    if config.get("hidden_act") not in SUPPORTED_ACTIVATIONS:
        return f"activation {config.get('hidden_act')!r} is not supported"
    if config.get("is_decoder") or config.get("add_cross_attention"):
        return "a decoder (causal attention, cross-attention) is not supported"
    missing = sorted(set(BertShape.__dataclass_fields__) - set(config))
    return f"config.json lacks {missing}" if missing else None


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, L, D)


class _Layer(nn.Module):
    """One post-LN block; submodule names follow the checkpoint's keys (``attention.self.query`` ...)."""

    def __init__(self, c: BertShape) -> None:
        super().__init__()
        d = c.hidden_size
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        for name in ("query", "key", "value"):
            setattr(self.attention.self, name, nn.Linear(d, d))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(d, d)
        self.attention.output.LayerNorm = nn.LayerNorm(d, eps=c.layer_norm_eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, c.intermediate_size)
        self.output = nn.Module()
        self.output.dense = nn.Linear(c.intermediate_size, d)
        self.output.LayerNorm = nn.LayerNorm(d, eps=c.layer_norm_eps)
        self.heads, self.act = c.num_attention_heads, SUPPORTED_ACTIVATIONS[c.hidden_act]

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        att = self.attention.self
        heads = (m(x).view(B, L, self.heads, D // self.heads).transpose(1, 2) for m in (att.query, att.key, att.value))
        q, k, v = heads  # (B, heads, L, head_dim) each
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=1.0 / math.sqrt(D // self.heads))
        a = a.transpose(1, 2).reshape(B, L, D)  # (B, L, heads * head_dim)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(a))
        h = self.output.dense(self.act(self.intermediate.dense(x)))
        return self.output.LayerNorm(x + h)


class BertModel(nn.Module):
    """The BERT encoder stack: ``model(input_ids=, attention_mask=).last_hidden_state`` (B, L, D)."""

    def __init__(self, config: BertShape) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.embeddings.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.embeddings.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.embeddings.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncoderOutput:
        """input_ids (B, L) long, attention_mask (B, L) 1 on real tokens; padded keys are never attended."""
        L = input_ids.shape[1]
        e = self.embeddings
        positions = torch.arange(L, device=input_ids.device)
        x = e.word_embeddings(input_ids) + e.position_embeddings(positions) + e.token_type_embeddings.weight[0]
        x = e.LayerNorm(x)  # (B, L, D)
        key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L)
        for layer in self.encoder.layer:
            x = layer(x, key_mask)
        return EncoderOutput(last_hidden_state=x)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    @classmethod
    def load(cls, path: Path) -> BertModel:
        """Weights from ``path``'s ``model.safetensors`` (or the shards of its index), strictly: every tensor the
        stack needs, and nothing but the pooler, the pre-training heads (``cls.``), ``position_ids`` and an optional
        ``bert.`` prefix besides."""
        from safetensors.torch import load_file

        model = cls(BertShape.read(path))
        state: dict[str, torch.Tensor] = {}
        for file in weight_files(path):
            state.update(load_file(file))
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        heads = ("pooler.", "cls.")  # BertForMaskedLM / BertForPreTraining checkpoints carry their heads
        state = {k: v for k, v in state.items() if not k.startswith(heads) and not k.endswith("position_ids")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            why = f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            raise ValueError(f"{str(path)!r} is not a BERT checkpoint: {why}")
        return model.float().eval()


def bert_normalizer(path: Path) -> Any:
    """The normalizer ``transformers``' BertTokenizer builds: from ``tokenizer_config.json``'s ``do_lower_case``,
    ``strip_accents`` and ``tokenize_chinese_chars`` (its defaults where absent), not from ``tokenizer.json``,
    whose own normalizer it replaces. A cased checkpoint whose ``tokenizer.json`` still lowercases is read cased."""
    from tokenizers import normalizers

    config_file = path / "tokenizer_config.json"
    config = read_json_object(config_file, "text encoder file") if config_file.is_file() else {}
    return normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        strip_accents=config.get("strip_accents"),
        lowercase=bool(config.get("do_lower_case", True)),
    )


class BertTokenizer:
    """``tokenizer.json`` through the ``tokenizers`` library, with the calls TextEncoder makes."""

    padding_side = "right"

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tok.normalizer = bert_normalizer(path)
        self._tok.no_padding()
        self._tok.no_truncation()
        self.pad_token_id = self._tok.token_to_id("[PAD]")
        self.unk_token_id = self._tok.token_to_id("[UNK]")
        # The tokens tokenizer.json marks special ([MASK] too, which transformers counts): a prompt "[MASK]" carries
        # no text on either path (the ids [CLS] and [SEP] that encode("") gives missed it).
        marked = {i for i, token in self._tok.get_added_tokens_decoder().items() if token.special}
        self.all_special_ids = sorted(marked | set(self._tok.encode("").ids) | {self.pad_token_id} - {None})
        self._num_special = len(self._tok.encode("").ids)  # [CLS] and [SEP] for BERT
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def num_special_tokens_to_add(self) -> int:
        return self._num_special

    def __call__(
        self,
        prompts: list[str],
        *,
        padding: str | None = None,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> dict[str, Any]:
        """Token ids per prompt (lists), or with ``padding="max_length"`` (B, max_length) tensors."""
        if padding is None:
            return {"input_ids": [e.ids for e in self._tok.encode_batch(prompts)]}
        if padding != "max_length" or max_length is None or return_tensors != "pt":
            raise ValueError("BertTokenizer pads to max_length and returns tensors, or neither")
        tok = self._tok
        try:
            if truncation:
                tok.enable_truncation(max_length=max_length)
            tok.enable_padding(length=max_length, pad_id=self.pad_token_id, pad_token="[PAD]")
            encodings = tok.encode_batch(prompts)
        finally:
            tok.no_padding()
            tok.no_truncation()
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
        }
