"""``generate.py``'s checks before the model loads (:func:`pipelines.generate.check_request`): a bad frame count,
mode, order, label, setting or context count is refused from the folder's YAML files alone. All of these loaded the
whole model, text encoder included, before failing (7.9 s for ``--num-frames 18`` on the shipped model; minutes for
a large one), while the module promised that bad input fails before the load."""

from __future__ import annotations

import numpy as np
import pytest

import pipelines.generate as pg
from core.video_write import write_video
from pipelines.spec import MAX_NUM_FRAMES

CASES = [
    (dict(num_frames=18), "num_frames=18 is not reachable"),
    (dict(num_frames=0), "num_frames=0 is not reachable"),
    (dict(num_frames=MAX_NUM_FRAMES + 4), f"more than the {MAX_NUM_FRAMES} frames"),
    (dict(prompt=["a", "b"], segment_frames=18), "segment_frames=18 is not reachable"),  # it said num_frames=18
    (dict(prompt=["a", "b"], segment_frames=1), "segment_frames=1 adds no frames"),
    (dict(prompt=["a", "b"], segment_frames=4097), "the story has 8193 frames, more than the 4097"),  # after the load
    (dict(prompt=None, image="clip", segment_frames=17), "a story from prompts: give at least one --prompt"),  # ditto
    (dict(video="clip"), "continuing a video needs context_frames"),
    (dict(video="clip", context_frames=6), "context_frames=6 cannot be encoded on its own"),
    (dict(video="clip", context_frames=9, num_frames=9), "9 context frames leave nothing to generate"),
    (dict(image="clip", context_frames=5), "an image is one context frame"),
    (dict(context_frames=5), "context_frames needs a video"),
    (dict(prompt=None, label="999"), "unknown class 999: valid class ids are 0..71"),
    (dict(prompt=None, label="purple hexagon"), "unknown class 'purple hexagon'"),
    (dict(mode="maskgit", order="token"), "supports orders"),
    (dict(mode="video"), "mode 'video' is not available"),
    (dict(sampling={"top_p": 2.0}), "top_p must be in (0, 1]"),
    (dict(sampling={"cfg_scale": -1.0}), "cfg_scale must be in"),
    (dict(sampling={"steps": 0}), "steps must be >= 1"),
    (dict(sampling={"temperature": -1.0}), "temperature must be >= 0"),
    (dict(sampling={"tempreature": 1.0}), "unknown sampling setting(s) ['tempreature']"),
]


@pytest.mark.parametrize(("kwargs", "message"), CASES, ids=[m for _, m in CASES])
def test_bad_input_is_refused_before_the_model_loads(kwargs, message, tmp_path, monkeypatch):
    def load(directory):
        raise AssertionError("the model was loaded before the request was checked")

    monkeypatch.setattr(pg.VideoPipeline, "from_pretrained", staticmethod(load))
    clip = tmp_path / "clip.mp4"
    write_video(clip, np.zeros((9, 64, 64, 3), np.uint8), fps=8)
    kwargs = {k: (clip if v == "clip" else v) for k, v in kwargs.items()}
    kwargs.setdefault("prompt", "a red circle moving left")
    with pytest.raises(ValueError) as err:
        pg.generate_to_files(out=tmp_path / "v.mp4", progress=False, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "v.mp4").exists()


def test_a_good_request_passes_the_checks_and_loads(tmp_path, monkeypatch):
    loaded = []

    def load(directory):
        loaded.append(directory)
        raise RuntimeError("stop here")

    monkeypatch.setattr(pg.VideoPipeline, "from_pretrained", staticmethod(load))
    clip = tmp_path / "clip.mp4"
    write_video(clip, np.zeros((9, 64, 64, 3), np.uint8), fps=8)
    for kwargs in (dict(num_frames=33), dict(video=clip, context_frames=5), dict(image=clip.with_suffix(".png"))):
        if "image" in kwargs:
            from PIL import Image

            Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(kwargs["image"])
        with pytest.raises(RuntimeError, match="stop here"):
            pg.generate_to_files("a red circle moving left", out=tmp_path / "v.mp4", progress=False, **kwargs)
    assert len(loaded) == 3


def test_a_gif_of_a_model_faster_than_a_gif_holds_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    """A model of 120 fps with --gif failed when the GIF was written, after sampling and after its mp4."""
    from pipelines.video import DEFAULT_MODEL_DIR

    fast = tmp_path / "fast"
    fast.mkdir()
    for part in ("tokenizer", "generator_ar", "generator_maskgit"):
        (fast / part).symlink_to(DEFAULT_MODEL_DIR / part)
    yaml = (DEFAULT_MODEL_DIR / "pipeline.yaml").read_text().replace("fps: 8.0", "fps: 120.0")
    (fast / "pipeline.yaml").write_text(yaml)
    monkeypatch.setattr(pg.VideoPipeline, "from_pretrained", staticmethod(lambda d: pytest.fail("loaded")))
    with pytest.raises(ValueError, match="this model makes 120 fps, more than a GIF holds"):
        pg.generate_to_files("a red circle moving left", model=fast, out=tmp_path / "v.mp4", gif=True)
