"""A generator's export names the tokenizer and text encoder it was trained with (``trained_on.json``), and
make_pipeline refuses other ones: a tokenizer of the same vocabulary decoded its ids to other pictures, and an encoder
of the same width gave its prompts other features, both assembled and sampled without a word."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from core.weights import folder_fingerprint
from generator.provenance import TRAINED_ON_NAME, TrainedOn, read_trained_on, write_trained_on
from generator.text_encoders import TextEncoderConfig, load_text_encoder
from pipelines import VideoPipeline
from tests.helpers.procs import run_main
from tests.helpers.tiny_pipeline import make_tiny_pipeline
from tests.helpers.tiny_text import make_tiny_t5
from tokenizer.probe import probe_ids

ROOT = Path(__file__).resolve().parents[2]


def test_a_text_models_export_records_its_cache_tokenizer_and_encoder(tmp_path):
    from tests.unit.test_token_data import FINGERPRINT, make_cache
    from tools.train import main as train_main

    t5 = make_tiny_t5(tmp_path / "t5", d_model=32)
    make_cache(tmp_path / "cache", num_clips=7, caption=lambda i: f"red {i}")
    args = ["--config", str(ROOT / "configs/tiny/train_generator.yaml"), "--out", str(tmp_path / "run"),
            f"data.cache={tmp_path / 'cache'}", "data.tokenizer=", "model.vocab_size=100", "model.max_grid=[2,3,3]",
            "model.orders=[clip]", "model.cond=text", "data.text_encoder.kind=t5", f"data.text_encoder.path={t5}",
            "data.text_encoder.max_length=8", "model.max_text_len=8", "model.text_dim=32", "run.steps=1",
            "run.eval_every=0", "run.sample_every=0", "run.checkpoint_every=0"]  # fmt: skip
    assert train_main(args) == 0
    encoder = load_text_encoder(TextEncoderConfig(kind="t5", path=str(t5), max_length=8)).fingerprint()
    made = read_trained_on(tmp_path / "run" / "export")  # the cache cut 5-frame clips at stride 1 (no --fps)
    assert made == TrainedOn(tokenizer=FINGERPRINT, text_encoder=encoder, num_frames=5, fps=None, stride=1)


def _make_pipeline(src: Path, out: Path, *, config: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """tools/make_pipeline.py in this process (``run_main``): what it assembles and refuses, not its start-up."""
    from tools.make_pipeline import main

    return run_main(main, ["--config", str(config), *extra, "--tokenizer", str(src / "tokenizer"), "--generator",
                           f"ar={src / 'generator_ar'}", "--out", str(out)])  # fmt: skip


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny pipeline's parts, the pipeline YAML naming its text encoder, and the true fingerprints."""
    root = tmp_path_factory.mktemp("trained_on")
    src = make_tiny_pipeline(root / "src")
    config = root / "pipe.yaml"
    config.write_text(f"num_frames: 9\nfps: 8\ndefault_mode: ar\ntext_encoder:\n  kind: t5\n  path: "
                      f"{(src / 'text_encoder').resolve()}\n  max_length: 48\n")  # fmt: skip
    pipe = VideoPipeline.from_pretrained(src)
    truth = TrainedOn(folder_fingerprint(src / "tokenizer", "tokenizer"), tokenizer_ids=probe_ids(pipe.tokenizer),
                      text_encoder=pipe.text_encoder.fingerprint())  # fmt: skip
    return src, config, truth


def _other_ids(ids):
    return [(i + 1) % 1000 for i in ids]  # every id another: the token space of another tokenizer


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (None, None),
        ({"tokenizer_ids": "other"}, "was trained on the tokens of another tokenizer: "),
        ({"text_encoder": "f" * 16}, "was trained with text encoder ffffffffffffffff, but the pipeline's"),
    ],
)
def test_make_pipeline_refuses_a_tokenizer_or_encoder_the_generator_was_not_trained_with(parts, tmp_path, change,
                                                                                          message):  # fmt: skip
    src, config, truth = parts
    copy = tmp_path / "src"
    shutil.copytree(src, copy)
    if change and change.get("tokenizer_ids") == "other":
        change = {"tokenizer_ids": _other_ids(truth.tokenizer_ids)}
    write_trained_on(copy / "generator_ar", replace(truth, **(change or {})))
    proc = _make_pipeline(copy, tmp_path / "out", config=config)
    if message is None:
        assert proc.returncode == 0, proc.stderr
        assert "not checked" not in proc.stderr
        return
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert str(copy / "generator_ar" / TRAINED_ON_NAME) in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_generator_without_the_file_is_assembled_and_said(parts, tmp_path):
    src, config, _ = parts
    proc = _make_pipeline(src, tmp_path / "out", config=config)
    assert proc.returncode == 0, proc.stderr
    assert f"has no {TRAINED_ON_NAME}: its tokenizer, text encoder and clip settings are not checked" in proc.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not valid JSON"),
        ('{"text_encoder": null}', "must be a JSON object with 'tokenizer'"),
        ('{"tokenizer": "ab", "tokeniser": "ab"}', "must be a JSON object with 'tokenizer'"),
        ('{"tokenizer": 7}', "tokenizer must be a fingerprint string"),
        ("[]", "must be a JSON object"),
    ],
)
def test_a_damaged_trained_on_file_is_one_error(tmp_path, text, message):
    (tmp_path / TRAINED_ON_NAME).write_text(text)
    with pytest.raises(ValueError, match=message):
        read_trained_on(tmp_path)


def test_the_file_round_trips(tmp_path):
    full = TrainedOn("ab" * 32, tokenizer_ids=(3, 0, 7), text_encoder="cd" * 8, num_frames=9, fps=12.5)
    for value in (TrainedOn("ab" * 32), full, TrainedOn("ab" * 32, num_frames=17, stride=2)):
        write_trained_on(tmp_path, value)
        assert read_trained_on(tmp_path) == value
        assert json.loads((tmp_path / TRAINED_ON_NAME).read_text())["tokenizer"] == "ab" * 32


def _clip_parts(parts, tmp_path):
    """A copy of the parts whose AR generator trained on 9-frame clips at 12.5 fps, and a pipeline YAML that sets
    neither num_frames nor fps."""
    src, _, truth = parts
    copy = tmp_path / "src"
    shutil.copytree(src, copy)
    write_trained_on(copy / "generator_ar", replace(truth, num_frames=9, fps=12.5))
    config = tmp_path / "pipe.yaml"
    config.write_text(f"default_mode: ar\ntext_encoder:\n  kind: t5\n  path: {(src / 'text_encoder').resolve()}\n"
                      "  max_length: 48\n")  # fmt: skip
    return copy, config, truth


def test_make_pipeline_takes_the_clip_length_and_rate_the_generator_trained_on(parts, tmp_path):
    """PipelineConfig's defaults are the shapes model's 17 frames at 8 fps: a generator trained on 9-frame clips cut
    at 25 fps rolled out 17 frames and played them at 8 fps (3x slow motion), unsaid."""
    copy, config, truth = _clip_parts(parts, tmp_path)
    proc = _make_pipeline(copy, tmp_path / "out", config=config)
    assert proc.returncode == 0, proc.stderr
    made = VideoPipeline.from_pretrained(tmp_path / "out").config
    assert (made.num_frames, made.fps) == (9, 12.5)


@pytest.mark.parametrize(
    ("clip", "given", "expected"),
    [
        ({"num_frames": 9, "fps": 25.0}, {}, (9, 25.0)),  # from the training clips
        ({"num_frames": 9, "fps": 25.0}, {"num_frames": 33}, (33, 25.0)),  # a longer default video: allowed
        ({"num_frames": 9, "fps": 25.0}, {"fps": 8.0}, "would play at 0.32x their speed; set fps=25"),
        ({"num_frames": 9, "stride": 2}, {}, "took every 2 frame(s) of each video at the video's own rate"),
        ({"num_frames": 9, "stride": 2}, {"fps": 15.0}, (9, 15.0)),  # the user says the rate
        (None, {}, (17, 8.0)),  # nothing known: the defaults, as before
    ],
)
def test_clip_settings_come_from_training_unless_given(clip, given, expected):
    from pipelines import PipelineConfig
    from pipelines.assemble import clip_from_training

    base = PipelineConfig(generators={"ar": "generator_ar"}, **given)
    trained = {"ar": None if clip is None else TrainedOn("ab" * 32, **clip)}
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=re.escape(expected)):
            clip_from_training(base, trained, set(given))
        return
    made = clip_from_training(base, trained, set(given))
    assert (made.num_frames, made.fps) == expected


def test_generators_trained_on_different_clips_need_the_settings_given():
    from pipelines import PipelineConfig
    from pipelines.assemble import clip_from_training

    base = PipelineConfig(generators={"ar": "a", "maskgit": "m"})
    trained = {"ar": TrainedOn("ab" * 32, num_frames=9, fps=25.0), "maskgit": TrainedOn("ab" * 32, num_frames=17,
                                                                                           fps=25.0)}  # fmt: skip
    with pytest.raises(ValueError, match=r"trained on different clips \(17 frames at 25 fps; 9 frames at 25 fps\)"):
        clip_from_training(base, trained, set())
    assert clip_from_training(replace(base, num_frames=9, fps=25.0), trained, {"num_frames", "fps"}).num_frames == 9


def test_the_same_token_space_in_another_precision_or_with_another_decoder_is_accepted(parts, tmp_path):
    """The file bytes are not the token space: make_pipeline --dtype float16 stores the tokenizer in fp16 (the shipped
    and train_shapes way), and a decoder fine-tuned with the encoder frozen keeps every id. Both were refused as
    "another tokenizer". A pipeline assembled again from its own folders keeps trained_on.json, its clip length and
    rate (it fell back to 17 frames at 8 fps), and its checks; an encoder that changed is refused."""
    import torch
    from safetensors.torch import load_file, save_file

    copy, config, truth = _clip_parts(parts, tmp_path)
    first = tmp_path / "first"
    proc = _make_pipeline(copy, first, config=config, extra=("--dtype", "float16"))
    assert proc.returncode == 0, proc.stderr
    assert read_trained_on(first / "generator_ar") == replace(truth, num_frames=9, fps=12.5)
    again = tmp_path / "again"  # from the fp16 pipeline's own folders
    proc = _make_pipeline(first, again, config=config, extra=("--dtype", "float16"))
    assert proc.returncode == 0, proc.stderr
    made = VideoPipeline.from_pretrained(again).config
    assert (made.num_frames, made.fps) == (9, 12.5) and "not checked" not in proc.stderr
    weights = copy / "tokenizer" / "model.safetensors"
    state = load_file(str(weights))
    decoder = next(k for k in state if k.startswith("decoder.") and state[k].is_floating_point())
    save_file({**state, decoder: state[decoder] + 1e-3}, str(weights))  # a decoder-only change: the same ids
    proc = _make_pipeline(copy, tmp_path / "decoder", config=config)
    assert proc.returncode == 0, proc.stderr
    encoder = next(k for k in state if k.startswith("encoder.") and state[k].dim() > 1)
    save_file({**state, encoder: torch.randn_like(state[encoder])}, str(weights))  # another encoder: other ids
    proc = _make_pipeline(copy, tmp_path / "encoder", config=config)
    assert proc.returncode == 2 and "was trained on the tokens of another tokenizer" in proc.stderr, proc.stderr


def test_without_probe_ids_the_tokenizer_folder_must_be_the_one_named(parts, tmp_path):
    """A training without data.tokenizer records no probe ids: only the very folder its cache names is accepted (a
    random tokenizer of the same vocabulary was assembled, with a warning)."""
    src, config, truth = parts
    copy = tmp_path / "src"
    shutil.copytree(src, copy)
    write_trained_on(copy / "generator_ar", replace(truth, tokenizer_ids=None))
    assert _make_pipeline(copy, tmp_path / "same", config=config).returncode == 0
    write_trained_on(copy / "generator_ar", replace(truth, tokenizer="0" * 64, tokenizer_ids=None))
    proc = _make_pipeline(copy, tmp_path / "out", config=config)
    assert proc.returncode == 2 and "names tokenizer 000000000000 and no probe ids" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_pipeline_loaded_and_saved_again_keeps_what_its_generators_were_trained_on(parts, tmp_path):
    """save_pretrained wrote the weights without ``trained_on.json``: a pipeline re-saved through the API (to
    change its precision, say) lost the record, and make_pipeline assembled a wrong tokenizer with it unchecked."""
    src, _, truth = parts
    copy = tmp_path / "src"
    shutil.copytree(src, copy)
    write_trained_on(copy / "generator_ar", truth)
    pipe = VideoPipeline.from_pretrained(copy)
    assert pipe.trained_on == {"ar": truth}
    pipe.save_pretrained(tmp_path / "again")
    assert read_trained_on(tmp_path / "again" / "generator_ar") == truth
    pipe.trained_on = {}  # the caller replaced the generator and knows no record for it
    pipe.save_pretrained(tmp_path / "bare")
    assert read_trained_on(tmp_path / "bare" / "generator_ar") is None
    pipe.trained_on = {"gpt": truth}
    with pytest.raises(ValueError, match=r"trained_on names modes the pipeline has no generator for: \['gpt'\]"):
        pipe.save_pretrained(tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()
