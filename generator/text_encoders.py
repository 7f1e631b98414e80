"""Frozen Hugging Face text encoders, loaded from a local directory only.

A text encoder turns a batch of prompts into per-token features for the generator's
cross-attention or prefix: ``encode(prompts) -> TextFeatures(features (B, L, D), mask (B, L))``
with ``L == max_length`` always, so features of any batch can be cached and stacked.

Two families, picked by ``TextEncoderConfig.kind`` through ``TEXT_ENCODERS``:

* ``"t5"``: T5 / Flan-T5 / mT5 / UMT5 encoders (``T5EncoderModel``, ``MT5EncoderModel`` or
  ``UMT5EncoderModel``, chosen by ``model_type`` in ``config.json``) with their SentencePiece
  tokenizer. The directory holds ``config.json``, ``*.safetensors`` and ``spiece.model`` and/or
  ``tokenizer.json``. Full encoder-decoder checkpoints load too; the decoder weights are skipped.
* ``"bert"``: BERT-style encoders (BERT, MiniLM, RoBERTa, ...); the features are the last hidden
  state, one vector per token, not pooled. ``model_type: bert`` with a ``tokenizer.json`` loads
  without ``transformers`` (:mod:`generator.bert_encoder`, the same features and ids, 1.7 s less
  start-up); other models go through ``AutoModel`` + ``AutoTokenizer``.

Everything is read with ``local_files_only=True`` and ``use_safetensors=True``: nothing is
downloaded and nothing is unpickled. Weights load in float32; ``.to(device, dtype)`` afterwards
moves the encoder like any module (prefer bfloat16 over float16 for T5, which overflows in fp16).
Reading the directory (checks, strict loading, hashing) lives in :mod:`generator.text_encoder_files`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from core.checks import check_text, first_line, shown
from core.files import read_json_object
from generator.bert_encoder import BertModel, BertTokenizer
from generator.bert_encoder import unsupported as bert_unsupported
from generator.text_encoder_files import (
    check_directory,
    check_spiece,
    check_vocab,
    hash_files,
    load_model,
    load_tokenizer,
    read_tokenizer,
)

if TYPE_CHECKING:  # transformers is imported only when an encoder is loaded
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# config.json model_type values that T5TextEncoder loads (T5/MT5/UMT5EncoderModel in its load()).
T5_MODEL_TYPES = ("t5", "mt5", "umt5")
_PAD_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "roberta-prelayernorm", "xlm-roberta-xl")


@dataclass(frozen=True, kw_only=True)
class TextEncoderConfig:
    """Which frozen text encoder to load, and how prompts become a fixed number of tokens.

    Attributes:
        kind: ``"t5"`` (T5 / Flan-T5 / mT5 / UMT5) or ``"bert"`` (any ``AutoModel`` encoder).
        path: local directory with ``config.json``, ``*.safetensors`` and tokenizer files.
        max_length: L, the number of token positions of every output, special tokens included
            (T5 appends ``</s>``; BERT adds ``[CLS]`` and ``[SEP]``).
        on_too_long: what to do with a prompt of more than ``max_length`` tokens. ``"error"``
            (the default) raises, because silently dropping the end of a prompt changes what is
            generated without anyone noticing; ``"truncate"`` keeps the first tokens plus the
            closing special token and logs a warning.
    """

    kind: Literal["t5", "bert"]
    path: str
    max_length: int = 32
    on_too_long: Literal["truncate", "error"] = "error"

    def __post_init__(self) -> None:
        if self.kind not in ("t5", "bert"):
            raise ValueError(f"kind must be one of ['bert', 't5'], got {self.kind!r}")
        if isinstance(self.path, os.PathLike):  # a package's get_model_path() gives a Path
            object.__setattr__(self, "path", os.fspath(self.path))
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"path must be a non-empty directory path, got {self.path!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2, got {self.max_length!r}")
        if self.on_too_long not in ("truncate", "error"):
            raise ValueError(f"on_too_long must be 'truncate' or 'error', got {self.on_too_long!r}")


@dataclass
class TextFeatures:
    """What :meth:`TextEncoder.encode` returns.

    Attributes:
        features: (B, L, D) float32 per-token features, zero at padding positions.
        mask: (B, L) bool, True on real tokens (special tokens included), False on padding.
    """

    features: torch.Tensor
    mask: torch.Tensor


class TextEncoder(nn.Module):
    """A frozen HF encoder plus its tokenizer: prompts -> (B, L, D) features and a (B, L) mask.

    Frozen means: parameters never require grad, the module stays in eval mode whatever
    ``train()`` is asked (so dropout never fires), and :meth:`encode` runs under
    ``torch.no_grad()``. It is ``no_grad`` and not ``inference_mode`` on purpose: the features
    feed trainable layers, and inference tensors cannot be saved for their backward pass.

    Build one with :func:`load_text_encoder` (or ``<Subclass>.load(config)``); the constructor
    only wraps already-loaded parts and reads nothing from disk.

    Attributes:
        dim: D, the hidden size of the encoder.
        max_length: L, the fixed token length of every output.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.dim: int = int(model.config.hidden_size)
        self.max_length: int = config.max_length
        self._files_digest: str | None = None
        # Right padding keeps real tokens at positions 0..n-1, which is what the mask promises;
        # some tokenizers ship with left padding configured.
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "right"  # keep a long prompt's start, as promised, whatever the files say
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"the tokenizer in {config.path!r} has no pad token; a padded batch needs one")
        num_special = self.tokenizer.num_special_tokens_to_add()
        if config.max_length < num_special + 1:
            raise ValueError(
                f"max_length={config.max_length} leaves no room for text: "
                f"the tokenizer adds {num_special} special token(s)"
            )
        # The unknown token and SentencePiece's bare word marker ("▁", which T5 puts before an unknown emoji):
        # a prompt of these alone carries no text.
        unknown = {self.tokenizer.unk_token_id, self.tokenizer.convert_tokens_to_ids("\u2581")}
        self._unknown_ids = {t for t in unknown if t is not None}
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def load(cls, config: TextEncoderConfig) -> TextEncoder:
        """Loads the encoder named by ``config`` from its local directory."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> TextEncoder:
        """Ignores ``mode``: a frozen encoder is always in eval mode."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"kind={self.config.kind!r}, dim={self.dim}, max_length={self.max_length}, path={self.config.path!r}"

    # ----------------------------------------------------------------- text -> ids
    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Checks and tokenizes prompts to exactly ``max_length`` positions, padded on the right.

        Args:
            prompts: B non-empty strings.

        Returns:
            input_ids: (B, L) long, on the CPU.
            mask: (B, L) bool, True on real tokens.

        Raises:
            ValueError: ``prompts`` is not a non-empty list of strings, a prompt is empty,
                whitespace-only or tokenizes to special tokens only, or (with
                ``on_too_long="error"``) a prompt has more than ``max_length`` tokens.
        """
        counts, refused = self._check(prompts)
        if refused:
            i, why = next(iter(refused.items()))
            raise ValueError(f"prompt {i} {why}")
        too_long = [(i, n) for i, n in enumerate(counts) if n > self.max_length]
        if too_long:
            shown = ", ".join(f"prompt {i} ({n} tokens)" for i, n in too_long[:5])
            more = f" and {len(too_long) - 5} more" if len(too_long) > 5 else ""
            logger.warning(
                "truncated %d prompt(s) to max_length=%d tokens: %s%s", len(too_long), self.max_length, shown, more
            )
        batch = self.tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return batch["input_ids"].long(), batch["attention_mask"].bool()

    def refusals(self, prompts: list[str]) -> dict[int, str]:
        """Why :meth:`tokenize` would refuse each prompt it refuses: index -> reason, empty when it takes all.

        For checking many prompts up front (a training cache's captions) without encoding them. Raises
        ValueError, like :meth:`tokenize`, when ``prompts`` is not a non-empty list of non-blank strings."""
        return self._check(prompts)[1]

    def _check(self, prompts: list[str]) -> tuple[list[int], dict[int, str]]:
        """(token count of each prompt, special tokens included; index -> reason of each refused prompt)."""
        check_prompts(prompts)
        all_ids = self.tokenizer(list(prompts), truncation=False)["input_ids"]
        special = set(self.tokenizer.all_special_ids) - self._unknown_ids  # an unknown token is refused below, by name
        refused: dict[int, str] = {}
        for i, ids in enumerate(all_ids):
            content = [t for t in ids if t not in special]
            if not content:  # e.g. only zero-width or control characters, dropped by the tokenizer
                refused[i] = f"has no tokens besides the special ones: {shown(prompts[i])}"
            elif set(content) <= self._unknown_ids:  # emoji alone: every such prompt gave the same features
                refused[i] = f"has only tokens that the text encoder does not know: {shown(prompts[i])}"
            elif len(ids) > self.max_length and self.config.on_too_long == "error":
                refused[i] = (
                    f"has {len(ids)} tokens (special tokens included), more than max_length={self.max_length}; "
                    "shorten it, or set on_too_long='truncate' to keep its first tokens (a trained generator fixes "
                    "max_length)"
                )
        return [len(ids) for ids in all_ids], refused

    # ----------------------------------------------------------------- ids -> features
    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextFeatures:
        """Encodes prompts into padded per-token features.

        Args:
            prompts: B non-empty strings (see :meth:`tokenize` for the checks).

        Returns:
            TextFeatures with features (B, L, D) float32 (zero on padding) and mask (B, L) bool,
            both on the encoder's device, L == max_length. A prompt's features do not depend on
            the other prompts of the batch.
        """
        input_ids, mask = self.tokenize(prompts)
        device = next(self.model.parameters()).device
        input_ids, mask = input_ids.to(device), mask.to(device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state  # (B, L, D)
        features = hidden.float() * mask.unsqueeze(-1)  # (B, L, D); padding rows hold no information
        return TextFeatures(features=features, mask=mask)

    def forward(self, prompts: list[str]) -> TextFeatures:
        """Same as :meth:`encode`."""
        return self.encode(prompts)

    # ----------------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """A 16-hex-digit tag of everything that decides the features, for cached text features.

        It is the sha256 of: the kind and ``max_length``; the content of ``config.json``, of every
        tokenizer file present and of every ``*.safetensors`` file (and the shard index) in the
        directory; and the current parameter dtype (bf16 features differ from fp32 ones). It does
        not depend on the directory's path or the device, nor on ``on_too_long`` (both modes give
        the same features for every prompt they both accept).

        The files are hashed once, on the first call, and remembered: sha256 runs at about
        1.5 GB/s, so MiniLM (90 MB) takes well under a second and a multi-GB T5 some seconds.
        Files changed on disk after that first call are not seen.
        """
        if self._files_digest is None:
            self._files_digest = hash_files(Path(self.config.path))
        dtype = next(self.model.parameters()).dtype
        h = hashlib.sha256()
        for part in (self.config.kind, str(self.max_length), self._files_digest, str(dtype)):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()[:16]


class T5TextEncoder(TextEncoder):
    """T5 / Flan-T5 / mT5 / UMT5 encoder with its SentencePiece tokenizer."""

    @classmethod
    def load(cls, config: TextEncoderConfig) -> T5TextEncoder:
        """Loads the encoder stack of a T5-family checkpoint from ``config.path``.

        The model class follows ``model_type`` in ``config.json`` (``t5``, ``mt5``, ``umt5``).
        The tokenizer is loaded with ``AutoTokenizer.from_pretrained(dir)``: it reads
        ``tokenizer.json`` or converts ``spiece.model``. (Never build it as
        ``T5Tokenizer(vocab_file=...)``: transformers 5 ignores that file without a word.) When
        ``spiece.model`` is present, the loaded tokenizer must split text as it does.
        """
        from transformers import AutoConfig, MT5EncoderModel, T5EncoderModel, UMT5EncoderModel

        models = {"t5": T5EncoderModel, "mt5": MT5EncoderModel, "umt5": UMT5EncoderModel}
        path = check_directory(config.path, ("spiece.model", "tokenizer.json"))
        model_type = AutoConfig.from_pretrained(path, local_files_only=True).model_type
        if model_type not in models:
            raise ValueError(
                f"text encoder kind 't5' expects a config.json with model_type in {sorted(models)}, "
                f"got {model_type!r} in {str(path)!r}; use kind 'bert' for encoder-only models"
            )
        model = load_model(models[model_type], path, extra_prefixes=("decoder.", "lm_head."))  # a full T5 loads
        tokenizer = read_tokenizer(load_tokenizer, path)
        if (path / "spiece.model").is_file():
            check_spiece(tokenizer, path / "spiece.model")
        check_vocab(tokenizer, model, path)
        return cls(model, tokenizer, config)


class BertTextEncoder(TextEncoder):
    """A BERT-style encoder (BERT, MiniLM, RoBERTa, ...) through ``AutoModel`` + ``AutoTokenizer``."""

    @classmethod
    def load(cls, config: TextEncoderConfig) -> BertTextEncoder:
        """Loads an encoder-only checkpoint from ``config.path``; its last hidden state is the output."""
        path = check_directory(config.path, ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model"))
        hf_config = read_json_object(path / "config.json", "text encoder file")
        model_type = hf_config.get("model_type")
        # A saved T5EncoderModel has is_encoder_decoder=False, so check the family by name too.
        if model_type in T5_MODEL_TYPES or hf_config.get("is_encoder_decoder", False):
            hint = "; use kind 't5'" if model_type in T5_MODEL_TYPES else ""
            raise ValueError(
                f"text encoder kind 'bert' expects an encoder-only model, but {str(path)!r} holds "
                f"the encoder-decoder family {model_type!r}{hint}"
            )
        max_positions = hf_config.get("max_position_embeddings")
        if max_positions is not None and model_type in _PAD_OFFSET_POSITIONS:
            # RoBERTa-style models number positions from pad_token_id + 1: 514 table rows hold 512 tokens
            max_positions -= int(hf_config.get("pad_token_id", 1)) + 1
        if max_positions is not None and config.max_length > max_positions:
            raise ValueError(
                f"max_length={config.max_length} exceeds the {max_positions} positions of the model in {str(path)!r}"
            )
        fast = model_type == "bert" and (path / "tokenizer.json").is_file() and _bert_tokenizer_class(path)
        if fast and bert_unsupported(hf_config) is None:  # else transformers, which computes what the config says
            model, tokenizer = BertModel.load(path), read_tokenizer(BertTokenizer, path)  # no transformers import
        else:
            from transformers import AutoModel

            model = load_model(AutoModel, path, optional_prefixes=("pooler.",), extra_prefixes=("cls.", "pooler."))
            tokenizer = read_tokenizer(load_tokenizer, path)
        check_vocab(tokenizer, model, path)
        return cls(model, tokenizer, config)


def _bert_tokenizer_class(path: Path) -> bool:
    """Whether ``AutoTokenizer`` would build BERT's own tokenizer here, the one :class:`BertTokenizer` mirrors."""
    config_file = path / "tokenizer_config.json"
    config = read_json_object(config_file, "text encoder file") if config_file.is_file() else {}
    return config.get("tokenizer_class") in (None, "BertTokenizer", "BertTokenizerFast")


TEXT_ENCODERS: dict[str, type[TextEncoder]] = {"t5": T5TextEncoder, "bert": BertTextEncoder}


def load_text_encoder(config: TextEncoderConfig) -> TextEncoder:
    """Loads the frozen text encoder described by ``config`` (float32, on the CPU, eval mode).

    Raises:
        ValueError: the folder is not a loadable encoder of ``config.kind``, including unreadable files (a
            truncated download, a config whose sizes differ from the weights').
    """
    from safetensors import SafetensorError

    try:
        return TEXT_ENCODERS[config.kind].load(config)
    except ValueError:
        raise
    except (OSError, RuntimeError, KeyError, TypeError, SafetensorError) as err:  # a traceback in the CLIs before
        why = f"{type(err).__name__}: {first_line(err)}"
        raise ValueError(f"text encoder folder {config.path!r} could not be read: {why}") from err


def check_prompts(prompts: list[str]) -> None:
    """Raises ValueError unless ``prompts`` is a non-empty list of non-blank strings.

    A wrong type is a ValueError too, not a TypeError: the CLIs report ValueError as a user error.
    """
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise ValueError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    if not prompts:
        raise ValueError("prompts is an empty list; pass at least one prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValueError(f"prompt {i} is a {type(prompt).__name__}, not a string")
        if not prompt.strip():
            raise ValueError(
                f"prompt {i} is empty or whitespace-only; use the generator's null condition for unconditional samples"
            )
        check_text(prompt, f"prompt {i}")
