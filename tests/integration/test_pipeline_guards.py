"""Pipeline requests refused before any sampling, and pipeline folders that cannot reach outside themselves.

* A generator folder "../x" or "/abs/x" in pipeline.yaml loaded, and ``save_pretrained`` then rewrote that outside
  folder (fp16 -> bf16 in the reviewer's run) and left the new pipeline without a generator.
* ``--num-frames 1000000001`` sampled window after window for as long as it was let run.
* A story encoded each prompt when its segment began: a bad second prompt was refused after the first segment was
  sampled, as "prompt 0".
* A folder in the way of the contact sheet (or the extra gif) was found after sampling, with the mp4 written.
"""

from __future__ import annotations

import pytest
import yaml

from pipelines import PipelineConfig, VideoPipeline
from pipelines.folder import load_pipeline_config
from pipelines.io import check_writable
from pipelines.video import MAX_NUM_FRAMES
from tools.generate import main


@pytest.fixture
def no_sampling(pipe, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("sampling began")

    monkeypatch.setattr(pipe, "_roll", refuse)
    return pipe


@pytest.mark.parametrize("sub", ["../elsewhere", "/tmp/elsewhere", "", "tokenizer", "a/../../b", "gen\\..\\x"])
def test_a_generator_folder_outside_the_pipeline_is_refused(sub):
    with pytest.raises(ValueError, match="must be a folder inside the pipeline directory"):
        PipelineConfig(generators={"ar": sub})
    PipelineConfig(generators={"ar": "generators/ar"})  # a nested folder inside is fine


def test_a_pipeline_yaml_naming_an_outside_generator_does_not_load(model_dir, tmp_path):
    cfg = yaml.safe_load((model_dir / "pipeline.yaml").read_text())
    cfg["generators"]["ar"] = str(model_dir / "generator_ar")  # an absolute path to a real generator
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="generators.ar must be a folder inside"):
        load_pipeline_config(tmp_path)


def test_too_many_frames_are_refused_before_sampling(no_sampling):
    with pytest.raises(ValueError, match=f"more than the {MAX_NUM_FRAMES} frames one call makes"):
        no_sampling("a red circle moving left", num_frames=1_000_000_001)
    with pytest.raises(ValueError, match=r"the story has 6145 frames, more than"):  # 2,049 frames a segment is fine
        no_sampling.story(["a red circle moving left"] * 3, segment_frames=2049)


def test_the_cli_refuses_too_many_frames_in_one_line(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(VideoPipeline, "_roll", lambda *a, **k: pytest.fail("sampling began"))
    rc = main(["--model", str(model_dir), "--prompt", "a red circle", "--num-frames", "1000000001",
               "--out", str(tmp_path / "v.mp4"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "more than the 4097 frames" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("bad", ["\u200b", "a red circle " * 40], ids=["no-text", "too-long"])
def test_a_storys_bad_later_prompt_is_refused_before_sampling_and_named(no_sampling, bad):
    with pytest.raises(ValueError, match=r"^prompt 1 has"):
        no_sampling.story(["a red circle moving left", bad, "a blue square"], segment_frames=5)


@pytest.mark.parametrize("side", ["v.png", "v.gif"])
def test_a_folder_in_the_way_of_a_side_file_is_found_before_any_work(tmp_path, side):
    (tmp_path / side).mkdir()
    with pytest.raises(ValueError, match=f"cannot write '{tmp_path / side}': a directory is in the way"):
        check_writable([tmp_path / "v.mp4"], gif=True)
    check_writable([tmp_path / "w.mp4"], gif=True)  # another name is free
