"""core: frame order, orientation, write errors, file modes, sizes, NaN videos and table cells (review of 12-05)."""

import errno
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

import core.frames as frames_module
from core.cli import run_cli
from core.files import atomic_write_text
from core.frames import resize_center_crop, tensor_to_frames
from core.tables import format_table
from core.video_io import frame_files, read_frames, read_video
from core.video_write import check_fps, write_video


def test_frame_files_compare_numbers_as_numbers(tmp_path):
    """As text, 100000.png sorted between 10000.png and 10001.png (the writer's 5-digit names run out there), and a
    user's unpadded 10.png came before 2.png: read_video returned the frames out of order without a word."""
    names = ["10001.png", "100000.png", "10000.png", "99999.png", "2.png", "10.png", "frame2.png", "frame10.png"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    got = [p.name for p in frame_files(tmp_path)]
    assert got == ["2.png", "10.png", "10000.png", "10001.png", "99999.png", "100000.png", "frame2.png", "frame10.png"]
    folder = tmp_path / "unpadded"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.full((4, 4, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")
    assert read_video(folder)[:, 0, 0, 0].tolist() == [20 * i for i in range(12)]


def test_exif_orientation_turns_every_frame_of_an_animated_file(tmp_path):
    """Frame 0 alone was turned: an animated WebP with orientation 6 failed to stack (no file named) or, resized,
    mixed two orientations."""
    base = np.zeros((16, 32, 3), np.uint8)
    base[:, :16] = 200  # left half bright
    frames = [Image.fromarray(base + np.uint8(i)) for i in range(3)]
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, lossless=True, exif=exif.tobytes())
    video = read_video(path)
    assert video.shape == (3, 32, 16, 3)  # every frame upright, so they stack
    assert (video[:, :4, :, 0] > 150).all() and (video[:, -4:, :, 0] < 50).all()  # the bright half on top in each


def test_a_tiff_with_an_orientation_tag_is_turned_once(tmp_path):
    """Pillow turns a TIFF upright itself as it loads it (since Pillow 11) and drops the tag; tokvid read the tag
    before the load and turned the frame again: portrait came back landscape, no error."""
    from PIL import ImageOps

    base = np.zeros((16, 32, 3), np.uint8)
    base[:, :16] = (200, 30, 40)  # red left, blue right
    base[:, 16:] = (30, 40, 200)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.tif"
    Image.fromarray(base).save(path, exif=exif)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))  # (32, 16, 3): red on top
    video = read_video(path)
    assert video.shape == (1, *upright.shape) and np.array_equal(video[0], upright)
    assert video[0, 0, 0, 0] > 150 and video[0, -1, 0, 2] > 150  # red on top, blue below, as any viewer shows it


def test_a_jpeg_that_carries_a_preview_is_one_frame(tmp_path):
    """A camera's or phone's JPEG with a second picture after the photo (MPO) opens with two frames: --image refused
    the photo ("one frame, got 2"), and the demo page took it for a 2-frame video."""
    from core.video_probe import frame_count, image_frames_at_most
    from pipelines.context import context_frames

    photo = np.zeros((48, 80, 3), np.uint8)
    photo[:, :40] = (200, 30, 40)
    im = Image.fromarray(photo)
    path = tmp_path / "photo.jpg"
    im.save(path, format="MPO", save_all=True, append_images=[im.resize((40, 24))], quality=95)
    assert Image.open(path).n_frames == 2  # what Pillow says
    assert frame_count(path) == 1 and image_frames_at_most(path, 4) == 1
    video = read_video(path)
    assert video.shape == (1, 48, 80, 3) and abs(int(video[0, 0, 0, 0]) - 200) < 8  # the photo, not the preview
    assert context_frames(path, None, None, temporal_compression=4, size=(64, 64), fps=8.0).shape[1] == 1


def test_an_animation_given_as_the_image_is_refused_before_the_model_loads(tmp_path):
    """probe_frames read the first frame only, so an animated GIF passed it and was refused after the model had
    loaded (a minute and a half on a busy machine), against the module's promise of a bad command failing fast."""
    from pipelines.context import probe_frames

    frames = [Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(ValueError, match="image must be one frame, but 'anim.gif' has several"):
        probe_frames(tmp_path / "anim.gif", "image")
    probe_frames(tmp_path / "anim.gif", "video")  # a video context may have many


def test_a_full_disk_under_ffmpeg_is_one_cli_line(tmp_path, monkeypatch, capsys):
    """ffmpeg's "No space left on device" became an OSError without an errno, which run_cli passes on: a traceback.
    Its message also named the hidden temp file instead of the target."""
    script = tmp_path / "ffmpeg"
    script.write_text("#!/bin/sh\necho '[out#0/mp4] Error closing file: No space left on device' >&2\nexit 1\n")
    script.chmod(0o755)
    import imageio_ffmpeg

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(script))
    target = tmp_path / "out" / "a.mp4"
    with pytest.raises(OSError) as err:
        write_video(target, np.zeros((2, 16, 16, 3), np.uint8), fps=8)
    assert err.value.errno == errno.ENOSPC and str(target) in str(err.value) and ".tmp" not in str(err.value)
    assert run_cli(lambda argv: write_video(target, np.zeros((2, 16, 16, 3), np.uint8), fps=8)) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []


def test_gif_says_when_it_merges_equal_frames(tmp_path, caplog):
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    frames[3] = 200
    with caplog.at_level("WARNING", logger="core.video_write"):
        write_video(tmp_path / "a.gif", frames, fps=8)
    assert "2 frame(s) that show the same as the one before in 256 colours are merged" in caplog.text
    assert len(read_video(tmp_path / "a.gif")) == 2  # what the warning says


def test_gif_says_when_frames_that_differ_merge_after_quantization(tmp_path, caplog):
    """Frames of many colours that differ by one pixel's small change merge after the 256-colour quantization: 8
    frames read back as 2, and the warning, which counted only exactly equal input frames, said nothing."""
    base = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    frames = np.stack([base] * 8)
    frames[:, 0, 0] = np.arange(8)[:, None] * np.array([2, 0, 0])
    with caplog.at_level("WARNING", logger="core.video_write"):
        write_video(tmp_path / "a.gif", frames, fps=8)
    back = len(read_video(tmp_path / "a.gif"))
    assert back < 8 and f"reads back with {back} of 8 frames" in caplog.text


def test_rewriting_a_file_keeps_its_mode(tmp_path):
    """Every rewrite made a new file with 0o666 minus the umask: a private 0o600 config became 0o644."""
    path = tmp_path / "private.yaml"
    atomic_write_text(path, "a: 1\n")
    os.chmod(path, 0o600)
    atomic_write_text(path, "a: 2\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.read_text() == "a: 2\n"
    fresh = tmp_path / "fresh.yaml"
    atomic_write_text(fresh, "x\n")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o666 & ~umask


def test_read_frames_refuses_indices_that_are_not_integers(tmp_path):
    """int() took 2.9 as frame 2, True as frame 1 and '3' as frame 3."""
    write_video(tmp_path / "a.mp4", np.zeros((4, 16, 16, 3), np.uint8), fps=8)
    for bad in ([2.9], [True], ["3"], []):
        with pytest.raises(ValueError, match="indices must be a non-empty list of integer frame indices"):
            read_frames(tmp_path / "a.mp4", bad)
    assert read_frames(tmp_path / "a.mp4", [np.int64(3), 0]).shape == (2, 16, 16, 3)


def test_sizes_and_frame_rates_take_numpy_numbers_and_refuse_the_rest():
    """A NumPy int size was a TypeError, True a side of 1, a triple a bare unpacking error; np.float32(10) fps was
    refused as 'not a number in [0.01, 1000]'."""
    check_size = frames_module.check_size
    assert check_size(np.int64(8)) == (8, 8) and check_size((np.int32(4), 6)) == (4, 6)
    for bad in (True, (8, 8, 8), (8,), 0, (8, -1), 8.0, "8", None):
        with pytest.raises(ValueError, match="size must be a positive int"):
            check_size(bad)
    with pytest.raises(ValueError, match="size must be"):
        resize_center_crop(np.zeros((1, 8, 8, 3), np.uint8), True)
    check_fps(np.float32(10.0))
    for bad in (np.float32("nan"), True, "8", 0.0):
        with pytest.raises(ValueError, match="fps must be"):
            check_fps(bad)


def test_a_video_with_nan_is_refused_not_written_black():
    video = torch.zeros(3, 2, 4, 4)
    video[:, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tensor_to_frames(video)
    video[:, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tensor_to_frames(video)


def test_table_cells_with_pipes_or_line_breaks_keep_their_row():
    table = format_table(["file", "psnr"], [["a|b.mp4", 30.0], ["c\nd.mp4", 31.0]])
    lines = table.splitlines()
    assert len(lines) == 4
    assert all(line.replace("\\|", "").count("|") == 3 for line in lines)
    assert "a\\|b.mp4" in lines[2] and "c d.mp4" in lines[3]


def test_exact_numerics_turns_the_fast_paths_off_inside_and_restores_them():
    """On a GPU PyTorch convolves in TF32: a clip's ids changed with its batch (2 of 2,560 on an H100). The tokenizer's
    encode and the cache builder run inside this; the settings come back as they were, even after an error."""
    import torch

    from core.numerics import exact_numerics

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark, cudnn.deterministic)
    cudnn.allow_tf32 = matmul.allow_tf32 = cudnn.benchmark = True
    cudnn.deterministic = False
    try:
        with pytest.raises(RuntimeError), exact_numerics():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
            raise RuntimeError("inside")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic  # all four come back
    finally:
        (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark, cudnn.deterministic) = before


_ENCODE_THROUGH_CTRL_C = """
import signal, sys
import imageio_ffmpeg
import numpy as np
from core.video_write import write_video
imageio_ffmpeg.get_ffmpeg_exe()  # found once, as a server's warm-up does (the lookup runs ffmpeg itself)
signal.signal(signal.SIGINT, lambda *a: print("sigint", flush=True))  # as a server does: finish the running job
frames = np.random.default_rng(0).integers(0, 256, (240, 256, 256, 3), dtype=np.uint8)  # noise: a slow encode
print("encoding", flush=True)
write_video(sys.argv[1], frames, fps=24)
print("written", flush=True)
"""


def test_ctrl_c_in_the_terminal_does_not_kill_an_encode_the_process_lets_finish(tmp_path):
    """ffmpeg ran in the caller's process group, so a terminal's Ctrl-C reached it as well: the web demo, which lets
    its running job finish, answered that request with a 500 ("ffmpeg could not write ...: exit -2")."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import imageio.v3 as iio

    target = tmp_path / "noise.mp4"
    proc = subprocess.Popen([sys.executable, "-c", _ENCODE_THROUGH_CTRL_C, str(target)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert proc.stdout.readline().strip() == "encoding"
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size for p in tmp_path.glob(".noise.tmp*")) and time.monotonic() < deadline:
        time.sleep(0.01)  # until ffmpeg has written some of the video
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.split() == ["sigint", "written"], out
    assert iio.improps(target, plugin="pyav").shape[0] == 240
