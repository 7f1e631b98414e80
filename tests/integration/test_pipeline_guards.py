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
from pipelines.spec import MAX_NUM_FRAMES
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


def test_generate_with_refuses_a_path_over_its_input_and_too_few_paths(no_sampling, tmp_path):
    """generate_with (the server's and notebooks' call on a loaded pipeline) skipped generate_to_files' checks: the
    contact sheet of first.mp4 replaced the input image first.png, and a second video with no path of its own was
    made and dropped by zip."""
    from PIL import Image

    from pipelines.generate import GenerationRequest, generate_with

    image = tmp_path / "first.png"
    Image.new("RGB", (32, 32), (200, 0, 0)).save(image)
    before = image.read_bytes()
    with pytest.raises(ValueError, match="would replace an input file"):
        generate_with(no_sampling, GenerationRequest(image=str(image)), [tmp_path / "first.mp4"])
    assert image.read_bytes() == before
    with pytest.raises(ValueError, match="2 videos need as many paths, got 1"):
        generate_with(no_sampling, GenerationRequest(num_videos=2), [tmp_path / "a.mp4"])


def test_save_output_refuses_a_path_count_other_than_the_videos(tmp_path):
    import numpy as np

    from pipelines.io import save_output
    from pipelines.video import VideoOutput

    output = VideoOutput(frames=np.zeros((2, 1, 8, 8, 3), np.uint8), ids=None, fps=8.0, timings={})
    with pytest.raises(ValueError, match="2 videos need as many paths, got 1"):
        save_output(output, [tmp_path / "a.mp4"])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("label", [2.7, True, 71.9, 2.0])
def test_a_label_that_is_not_an_integer_or_a_name_is_refused(label):
    """int(2.7) and int(True) made classes 2 and 1 (the server refused them; the Python request did not)."""
    from pipelines.generate import GenerationRequest, parse_label

    with pytest.raises(ValueError, match="a label is a class id"):
        GenerationRequest(label=label)
    with pytest.raises(ValueError, match="a label is a class id"):
        parse_label(label, ["a", "b", "c"])
    assert GenerationRequest(label=3).label == 3 and parse_label("2", ["a", "b", "c"]) == 2


def test_one_string_is_not_a_story_of_its_letters():
    from pipelines.generate import GenerationRequest

    with pytest.raises(ValueError, match=r"give \(prompt,\) for one"):
        GenerationRequest(prompts="red", segment_frames=5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": 2.0}, "a prompt or label must be a string, an integer class id or a list of them, got 2.0"),
        ({"labels": True}, "a prompt or label must be a string, an integer class id or a list of them, got True"),
        ({"sampling": {"temperature": 0.5}}, "sampling must be a SamplingConfig"),
        ({"generator": 0}, "generator must be a torch.Generator"),
    ],
)
def test_the_pipeline_call_refuses_arguments_of_the_wrong_type_in_one_line(no_sampling, kwargs, message):
    """Each failed with a TypeError or AttributeError traceback, some after the text encoder and the prefill ran."""
    with pytest.raises(ValueError, match=message):
        no_sampling(**kwargs)
    if "labels" not in kwargs:
        with pytest.raises(ValueError, match=message):
            no_sampling.story(["a red circle moving left"], segment_frames=9, **kwargs)


def test_a_generator_on_another_device_than_the_pipeline_is_one_line(no_sampling, monkeypatch):
    """A CPU torch.Generator (the form the old message suggested) on a CUDA pipeline failed inside torch's sampler
    with a RuntimeError traceback. This CPU-only test plays the CUDA pipeline by its device; tests/gpu runs it."""
    import torch

    monkeypatch.setattr(type(no_sampling), "device", property(lambda self: torch.device("cuda", 0)))
    with pytest.raises(ValueError, match=r"generator is on cpu, the pipeline on cuda:0"):
        no_sampling("a red circle moving left", generator=torch.Generator().manual_seed(0))


def test_a_folder_without_pipeline_yaml_points_at_make_pipeline(tmp_path):
    """A generator's export given as --model said only "is it a tokvid pipeline?", not how to make one."""
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"has no pipeline.yaml: is it a tokvid pipeline\? \(tools/make_pipeline.py"):
        VideoPipeline.from_pretrained(tmp_path)


def test_any_sequence_of_labels_counts_and_a_0d_array_is_one_line():
    """The type check added for labels=2.0 refused labels=range(3), which worked before; np.array(1) passed it and
    then failed in len() with a TypeError."""
    import numpy as np

    from pipelines.batching import batch_size

    assert batch_size(range(3), None, 1) == 3 and batch_size(np.array([0, 2]), None, 1) == 2
    assert batch_size(("a", "b"), None, 1) == 2
    with pytest.raises(ValueError, match="is a 0-d array: give int"):
        batch_size(np.array(1), None, 1)


def test_the_request_surfaces_agree_on_odd_values(no_sampling):
    """Found comparing the CLI, the API and the server: a prompt with a label passed the checks made before the model
    loads; seed alone refused np.int64; a label "1_0", "+7" or "٣" was read by int() as a class id; story(None) was a
    TypeError; the server took "prompt": [] as no prompt and made the default prompt's video."""
    import numpy as np

    from pipelines.generate import GenerationRequest, parse_label
    from videoserve.requests import parse_request

    with pytest.raises(ValueError, match="give a prompt or a label, not both"):
        GenerationRequest(prompts=("a red circle moving left",), label=3)
    seed = GenerationRequest(seed=np.int64(3)).seed
    assert seed == 3 and type(seed) is int
    names = [f"class {i}" for i in range(72)]
    for text in ("1_0", "+7", "\u0663", "1e1"):
        with pytest.raises(ValueError, match="unknown class"):
            parse_label(text, names)
    assert [parse_label(t, names) for t in (" 5 ", "71", "-1", "CLASS 4")] == [5, 71, -1, 4]
    with pytest.raises(ValueError, match="a story needs a list of at least one prompt"):
        no_sampling.story(None, segment_frames=5)
    with pytest.raises(ValueError, match="the prompt is empty"):
        parse_request({"prompt": []}, lambda upload: None, max_frames=64, default_frames=17)
    from pipelines.generate import generate_to_files

    with pytest.raises(ValueError, match="the prompt is empty"):  # before anything loads or is written
        generate_to_files([], out="/nonexistent/never/v.mp4")
