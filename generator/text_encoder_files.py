"""Reading a Hugging Face text-encoder directory: layout checks, strict offline loading and the
content hash behind :meth:`generator.text_encoders.TextEncoder.fingerprint`.

Split from :mod:`generator.text_encoders` (the encoder classes) so each file has one job:
this one knows the files on disk and nothing of prompts or features.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from core.checks import first_line
from core.files import read_json_object

if TYPE_CHECKING:  # transformers is imported only when an encoder is loaded
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

T = TypeVar("T")

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# Files that define how text becomes ids. Only those present are read; which one a tokenizer
# actually uses is up to transformers, so the fingerprint hashes all of them.
TOKENIZER_FILES = (
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)
# Plain ASCII text on which the tokenizer must agree with ``spiece.model`` (see check_spiece).
SPIECE_PROBES = ("a red circle moving left", "two small squares bounce on a blue background")


def check_directory(path: str, tokenizer_files: tuple[str, ...]) -> Path:
    """Checks that ``path`` holds a config, safetensors weights and one of ``tokenizer_files``."""
    directory = Path(path)
    expected = f"config.json, *.safetensors and one of {', '.join(tokenizer_files)}"
    if not directory.is_dir():
        raise ValueError(f"text encoder directory {path!r} does not exist (expected a local directory with {expected})")
    if not (directory / CONFIG_FILE).is_file():
        raise ValueError(f"text encoder directory {path!r} has no config.json (expected {expected})")
    if not any(directory.glob("*.safetensors")):
        hint = "; convert the .bin weights to safetensors" if any(directory.glob("*.bin")) else ""
        raise ValueError(f"text encoder directory {path!r} has no *.safetensors weights{hint} (expected {expected})")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):  # what from_pretrained looks for
        raise ValueError(
            f"text encoder directory {path!r} has safetensors weights but no {' or '.join(WEIGHT_FILES)}: name a "
            "single weights file model.safetensors"
        )
    if not any((directory / name).is_file() for name in tokenizer_files):
        names = ", ".join(tokenizer_files)
        raise ValueError(f"text encoder directory {path!r} has no tokenizer file (expected one of {names})")
    return directory


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files ``from_pretrained`` reads: ``model.safetensors``, else the shards its index names.
    Other ``*.safetensors`` files in the folder (a ``model_fp16.safetensors`` beside the weights) are not weights
    of this model; reading them all let the last in name order replace the real tensors without a word."""
    if (directory / WEIGHT_FILES[0]).is_file():
        return [directory / WEIGHT_FILES[0]]
    index = directory / WEIGHT_FILES[1]
    weight_map = read_json_object(index, "text encoder file").get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{str(index)!r} has no weight_map of tensor names to file names")
    shards = sorted(set(weight_map.values()))
    outside = [name for name in shards if Path(name).name != name or not (directory / name).is_file()]
    if outside:
        raise ValueError(f"{str(index)!r} names shards that are not files in its folder: {outside[:3]}")
    return [directory / name for name in shards]


def load_model(
    model_cls: type, path: Path, optional_prefixes: tuple[str, ...] = (), extra_prefixes: tuple[str, ...] = ()
) -> PreTrainedModel:
    """``from_pretrained`` offline, float32, safetensors only; missing weights, and weights the model has no place
    for, are an error.

    transformers only logs both: missing keys are left randomly initialised, which for a frozen encoder would
    silently produce noise features, and a ``config.json`` that lists fewer layers than the weights hold built the
    shallower model (features up to 2.0 off). Keys under ``optional_prefixes`` (the BERT pooler, never used here)
    may be missing; keys under ``extra_prefixes`` (a full checkpoint's decoder or pre-training heads) may be left
    over.
    """
    model, info = model_cls.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=torch.float32, output_loading_info=True
    )
    what = type(model).__name__
    for kind, keys, allowed in (("lack", info["missing_keys"], optional_prefixes),
                                ("hold", info["unexpected_keys"], extra_prefixes)):  # fmt: skip
        bad = sorted(k for k in keys if not k.startswith(allowed))
        if bad:
            shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            place = f"tensor(s) of {what}" if kind == "lack" else f"tensor(s) that {what} has no place for"
            raise ValueError(f"the weights in {str(path)!r} {kind} {len(bad)} {place}: {shown}")
    return model


def read_tokenizer(build: Callable[[Path], T], path: Path) -> T:
    """``build(path)``, with any failure of the tokenizer files (the ``tokenizers`` library raises a bare
    ``Exception`` on a truncated ``tokenizer.json``) as a ValueError naming the folder."""
    try:
        return build(path)
    except ValueError as err:
        if not isinstance(err, json.JSONDecodeError):  # a truncated file gave "Expecting ',' delimiter", no file
            raise
        why = str(err)
    except Exception as err:
        why = f"{type(err).__name__}: {first_line(err)}"
    raise ValueError(f"the tokenizer files in {str(path)!r} could not be read: {why}")


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def check_spiece(tokenizer: PreTrainedTokenizerBase, spiece_path: Path) -> None:
    """Raises ValueError unless ``tokenizer`` splits probe text into the ids of ``spiece.model``.

    Guards against a tokenizer that did not come from this directory's SentencePiece model (a
    stale ``tokenizer.json``, or a default vocabulary picked up instead of the file).
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spiece_path))
    for probe in SPIECE_PROBES:
        ours = tokenizer(probe, add_special_tokens=False)["input_ids"]
        theirs = sp.encode(probe)
        if ours != theirs:
            raise ValueError(
                f"the tokenizer loaded from {str(spiece_path.parent)!r} does not match its spiece.model: "
                f"{probe!r} -> {ours} vs {theirs}; regenerate tokenizer.json from spiece.model"
            )


def check_vocab(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, path: Path) -> None:
    """Every id the tokenizer can emit must index a row of the model's embedding table."""
    num_rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > num_rows:
        raise ValueError(
            f"the tokenizer in {str(path)!r} has {len(tokenizer)} tokens but the model embeds only {num_rows}; "
            "they do not belong together"
        )


def hash_files(directory: Path) -> str:
    """sha256 over the names and contents of the config, tokenizer and safetensors files."""
    names = [CONFIG_FILE, *TOKENIZER_FILES, "model.safetensors.index.json"]
    files = [directory / n for n in names if (directory / n).is_file()]
    files += sorted(directory.glob("*.safetensors"))
    h = hashlib.sha256()
    for file in files:
        h.update(file.name.encode() + b"\0")
        file_hash = hashlib.sha256()
        with open(file, "rb") as f:
            while chunk := f.read(1 << 24):
                file_hash.update(chunk)
        h.update(file_hash.digest())
    return h.hexdigest()
