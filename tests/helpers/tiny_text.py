"""A tiny random T5 encoder with a SentencePiece model trained on synthetic captions.

``make_tiny_t5(dir)`` writes a directory that :class:`generator.text_encoders.T5TextEncoder`
loads exactly like a real Flan-T5 one: ``config.json``, ``model.safetensors``, ``spiece.model``
and the tokenizer files that ``save_pretrained`` writes. It takes well under a second.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import torch

WORDS: dict[str, tuple[str, ...]] = {
    "size": ("small", "big", "tiny", "large", "huge"),
    "color": ("red", "green", "blue", "yellow", "white", "purple", "orange", "black", "pink", "gray", "brown", "cyan"),
    "shape": ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon", "heart"),
    "motion": (
        "moving",
        "going",
        "sliding",
        "bouncing",
        "spinning",
        "drifting",
        "jumping",
        "rolling",
        "falling",
        "rising",
    ),
    "direction": ("left", "right", "up", "down", "around", "diagonally", "in circles"),
    "speed": ("slowly", "quickly", "steadily", ""),
}


def synthetic_captions(num_captions: int, seed: int = 0) -> list[str]:
    """Captions like "a small red circle moving left slowly", drawn from ``WORDS``."""
    rng = random.Random(seed)
    captions = []
    for _ in range(num_captions):
        words = ["a"] + [rng.choice(WORDS[k]) for k in ("size", "color", "shape", "motion", "direction", "speed")]
        captions.append(" ".join(w for w in words if w))
    return captions


def train_spiece(vocab_size: int = 72, num_captions: int = 600, seed: int = 0) -> bytes:
    """Trains a unigram SentencePiece model with T5's special ids (pad 0, eos 1, unk 2, no bos).

    The synthetic captions support at most 78 pieces under sentencepiece 0.2.2 and 83 under 0.2.3 (more is an
    error), so the default stays below both.

    Returns:
        The serialized model, i.e. the bytes of a ``spiece.model`` file.
    """
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(synthetic_captions(num_captions, seed)),
        model_writer=buffer,
        model_type="unigram",  # what T5 uses; transformers' converter assumes it
        vocab_size=vocab_size,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return buffer.getvalue()


def make_tiny_t5(
    directory: str | Path,
    *,
    vocab_size: int = 72,
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    seed: int = 0,
) -> Path:
    """Writes a random tiny T5 encoder and its trained SentencePiece tokenizer to ``directory``.

    Args:
        directory: created if missing.
        vocab_size: SentencePiece pieces; the model's embedding has exactly as many rows (no
            ``<extra_id_*>`` sentinels).
        d_model, num_layers, num_heads: encoder size; the feature dim is ``d_model``.
        seed: seeds the caption draw and the weight init.

    Returns:
        The directory, as a Path.
    """
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spiece.model").write_bytes(train_spiece(vocab_size, seed=seed))
    # from_pretrained(dir) is what reads spiece.model; T5Tokenizer(vocab_file=...) would ignore it.
    tokenizer = T5Tokenizer.from_pretrained(directory, extra_ids=0, local_files_only=True)
    tokenizer.save_pretrained(directory)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=2 * d_model,
        num_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.1,  # non-zero so that a model left in train mode would be caught
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = T5EncoderModel(config)
    model.save_pretrained(directory, safe_serialization=True)
    return directory
