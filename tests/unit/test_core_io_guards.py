"""Core I/O at its edges: each case returned a wrong result, ended in a traceback or cost far more than its input.

* A relative file name with a colon ("take1:2.mp4") was read by FFmpeg as a protocol: unreadable, unwritable.
* A truncated mp4 whose index lists all its frames read as a shorter clip, without a word.
* A 102-byte 1x8000 PNG took 567 MiB to become a 64x64 crop.
* Frames wider than libx264 takes, and GIFs faster than a GIF can hold (written at 100 fps), passed the checks.
* A target name of 243-255 bytes made a temporary name over the file-name limit.
* A YAML mapping that holds itself (aliases) sent the renamed-key walk into endless recursion.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from core.config import build_config
from core.files import atomic_write_text
from core.frames import MAX_COVER_AREA, cover_size
from core.video_io import read_video
from core.video_probe import frame_count, video_fps
from core.video_write import MAX_GIF_FPS, MAX_MP4_SIDE, write_video
from videotrain.generator_task import GeneratorTrainConfig


def clip(T: int = 10, H: int = 32, W: int = 48) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (T, H, W, 3), dtype=np.uint8)


def test_a_relative_name_with_a_colon_is_written_and_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_video("take1:2.mp4", clip(), 8)
    assert read_video("take1:2.mp4").shape == (10, 32, 48, 3)
    assert frame_count("take1:2.mp4") == 10 and video_fps("take1:2.mp4") == pytest.approx(8)


def test_a_truncated_video_read_to_its_end_is_a_value_error(tmp_path):
    write_video(tmp_path / "c.mp4", clip(), 24)
    data = (tmp_path / "c.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # faststart: the index, listing 10, comes first
    with pytest.raises(ValueError, match="cannot decode"):
        read_video(tmp_path / "cut.mp4")
    assert read_video(tmp_path / "c.mp4").shape[0] == 10


def test_a_frame_far_thinner_than_its_crop_is_refused_before_it_is_resized(tmp_path):
    Image.new("RGB", (8000, 1), (200, 10, 10)).save(tmp_path / "strip.png")
    with pytest.raises(ValueError, match="1x8000 frame is too far from the 64x64") as caught:
        read_video(tmp_path / "strip.png", size=64)
    assert "cannot decode" not in str(caught.value) and "strip.png" in str(caught.value)  # it decodes: its shape
    assert cover_size(64, 64 * MAX_COVER_AREA, 64) == (64, 64 * MAX_COVER_AREA)  # the limit itself is taken
    assert cover_size(1080, 1920, 64) == (64, 114)


def test_write_video_refuses_sizes_h264_cannot_take_and_gif_rates_a_gif_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match=f"H.264 takes frames up to {MAX_MP4_SIDE} px a side"):
        write_video(tmp_path / "wide.mp4", np.zeros((1, 2, MAX_MP4_SIDE + 2, 3), np.uint8), 8)
    with pytest.raises(ValueError, match=f"a GIF holds at most {MAX_GIF_FPS}"):
        write_video(tmp_path / "fast.gif", clip(T=3), 150)
    write_video(tmp_path / "ok.gif", clip(T=3), MAX_GIF_FPS)
    assert not [p for p in tmp_path.iterdir() if p.name not in ("ok.gif",)]


@pytest.mark.parametrize("length", [243, 255])
def test_a_long_target_name_the_system_takes_is_written(tmp_path, length):
    name = "n" * (length - 4) + ".txt"
    atomic_write_text(tmp_path / name, "x")
    assert (tmp_path / name).read_text() == "x" and os.listdir(tmp_path) == [name]


@pytest.mark.parametrize("where", ["file", "override"])
def test_a_yaml_mapping_that_holds_itself_is_one_value_error(tmp_path, where):
    yaml_text = "optim:\n  lr: &a {b: *a}\n"
    (tmp_path / "c.yaml").write_text(yaml_text)
    files, overrides = ([tmp_path / "c.yaml"], []) if where == "file" else ([], ["optim.lr=&a {b: *a}"])
    with pytest.raises(ValueError, match="optim.lr"):
        build_config(GeneratorTrainConfig, files, overrides)


def test_a_video_whose_name_is_not_utf8_is_read(tmp_path):
    """decord takes no file name that is not UTF-8 (a Latin-1 ``caf\\xe9.mp4``): its UnicodeEncodeError escaped, so
    PyAV, which opens the file, was never tried, and the CLIs said only "'utf-8' codec can't encode"."""
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    frames[:, 8:24, 8:24, 0] = 200
    path = tmp_path / os.fsdecode(b"caf\xe9.mp4")
    write_video(path, frames, fps=8)
    assert frame_count(path) == 5 and video_fps(path) == pytest.approx(8.0)
    assert read_video(path).shape == (5, 32, 32, 3)


def test_a_file_that_is_not_a_video_is_named_once(tmp_path):
    """The line read "cannot decode 'x.mp4': decord: cannot decode 'x.mp4': [Errno ...]; PyAV: [Errno ...]", the
    display probe's error wrapped as decord's although decord was never tried."""
    path = tmp_path / "x.mp4"
    path.write_text("not a video")
    with pytest.raises(ValueError) as err:
        read_video(path)
    assert str(err.value).count("cannot decode") == 1 and "decord: not tried" in str(err.value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("[08:57:31] /github/workspace/src/video/video_reader.cc:151: Check failed: st_nb >= 0 (-1381258232 vs. 0) "
         "ERROR cannot find video stream with wanted index: -1", "cannot find video stream with wanted index: -1"),
        ('[08:57:31] /github/workspace/src/video/ffmpeg/filter_graph.cc:61: Check failed: avfilter_graph_create_filter'
         '(&buffersrc_ctx_, buffersrc, "in", args, __null, filter_graph_.get()) >= 0 (-22 vs. 0) Cannot create buffer '
         "source", "Cannot create buffer source"),
        ("some other message", "some other message"),
    ],
)  # fmt: skip
def test_decords_log_prefix_is_left_out_of_the_error_line(raw, reason):
    """An audio-only or cut mp4 was refused with decord's C++ log line: a time, a source path, a failed check."""
    from core.video_io import decord_reason

    assert decord_reason(RuntimeError(raw + "\nStack trace:\n  [bt] (0) ...")) == reason


def test_an_audio_only_file_is_refused_in_words(tmp_path):
    import subprocess

    import imageio_ffmpeg

    path = tmp_path / "audio.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=0.3",
                    str(path)], check=True)  # fmt: skip
    with pytest.raises(ValueError, match="no video stream") as caught:
        read_video(path)
    assert ".cc:" not in str(caught.value) and "Check failed" not in str(caught.value)
