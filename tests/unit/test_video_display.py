"""core/video_display.py and the readers: video frames come back as players show them (anamorphic pixels
stretched, rotated phone videos upright), from decord and from PyAV, at full size and scaled in the decoder."""

from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

import core.video_io as vio
from core.frames import decoded_size, resize_center_crop
from core.video_display import Display, pixel_aspect, quarter_turns, video_display
from core.video_io import read_frames, read_video
from core.video_probe import frame_count, video_fps
from core.video_write import write_video


@pytest.fixture(params=["decord", "pyav"])
def backend(request, monkeypatch) -> str:
    """Each test runs with decord first (the default) and with PyAV alone."""
    if request.param == "pyav":
        monkeypatch.setattr(vio, "decord", None)
    return request.param


def anamorphic_disc_video(path: Path, sar: int = 2, T: int = 3) -> None:
    """A 32x64 (w x h) H.264 file whose pixels are ``sar`` times as wide as tall, showing a disc of diameter 32
    on a 64x64 display: stored, it is an ellipse 32 / sar pixels wide."""
    yy, xx = np.mgrid[0:64, 0:32]
    disc = ((xx + 0.5 - 16) * sar / 16) ** 2 + ((yy + 0.5 - 32) / 16) ** 2 <= 1.0
    frame = np.zeros((64, 32, 3), np.uint8)
    frame[disc] = (230, 30, 30)
    writer = imageio_ffmpeg.write_frames(
        str(path), (32, 64), fps=8, codec="libx264", macro_block_size=1, output_params=["-vf", f"setsar={sar}/1"]
    )
    writer.send(None)
    for _ in range(T):
        writer.send(frame.tobytes())
    writer.close()


def disc_extent(frame: np.ndarray) -> tuple[int, int]:
    """(width, height) in pixels of the red region of a (H, W, 3) frame."""
    red = (frame[..., 0].astype(int) - frame[..., 1]) > 100
    cols, rows = np.flatnonzero(red.any(axis=0)), np.flatnonzero(red.any(axis=1))
    return int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def test_anamorphic_video_is_read_at_its_display_shape(tmp_path, backend):
    """Frames of a file with non-square pixels came back as stored: a disc read as an ellipse half as wide as
    tall, and cropping to a square cut it further."""
    path = tmp_path / "anamorphic.mp4"
    anamorphic_disc_video(path)
    assert video_display(path) == Display(sar=2.0, turns=0)
    full = read_video(path)
    assert full.shape == (3, 64, 64, 3)
    w, h = disc_extent(full[1])
    assert 28 <= w <= 36 and 28 <= h <= 36  # round, 32 px across
    small = read_video(path, num_frames=2, size=32)
    assert small.shape == (2, 32, 32, 3)
    w, h = disc_extent(small[0])
    assert 13 <= w <= 19 and 13 <= h <= 19
    square = tmp_path / "square.mp4"  # square pixels keep their stored shape
    write_video(square, np.full((3, 32, 48, 3), 90, np.uint8), fps=8)
    assert video_display(square) == Display() and read_video(square).shape == (3, 32, 48, 3)


def corner_marks(T: int = 4, H: int = 32, W: int = 64) -> np.ndarray:
    """(T, H, W, 3) frames told apart from any turn or mirror of themselves: white in the top-left corner, red
    top-right, green bottom-left, on grey."""
    frames = np.full((T, H, W, 3), 60, np.uint8)
    frames[:, :8, :8] = 255
    frames[:, :8, -8:] = (230, 20, 20)
    frames[:, -8:, :8] = (20, 230, 20)
    return frames


def rotated_video(path: Path, frames: np.ndarray, degrees: int) -> None:
    """An H.264 file of ``frames`` whose display matrix turns them ``degrees`` counter-clockwise, as a phone
    stores portrait video (near-lossless, so the picture can be compared)."""
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):  # PyAV 18 on
        pytest.skip("this PyAV cannot write a display rotation")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt, stream.options = "yuv444p", {"crf": "0"}
        stream.set_display_rotation(degrees)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.mark.parametrize("degrees, turns", [(90, 1), (-90, 3), (180, 2)])
def test_rotated_video_is_read_upright(tmp_path, backend, degrees, turns):
    """A phone's portrait video (landscape frames and a display rotation) came back on its side: decord failed
    on a quarter turn (its frame buffer had the turned size), and PyAV, the fallback, returned the stored frames.
    The reference is np.rot90, which turns the same way as ffmpeg's own autorotation (checked by hand with the
    ffmpeg command line on these files)."""
    stored = corner_marks()
    path = tmp_path / f"rot{degrees}.mp4"
    rotated_video(path, stored, degrees)
    assert video_display(path) == Display(sar=1.0, turns=turns)
    shown = np.rot90(stored, turns, axes=(1, 2))  # (T, H', W', 3) as a player shows it
    full = read_video(path)
    assert full.shape == shown.shape
    assert mean_abs(full, shown) < 3.0  # 0.9 measured (RGB -> YUV 4:4:4 -> RGB)
    for other in {0, 1, 2, 3} - {turns}:  # every other orientation is far off
        wrong = np.rot90(stored, other, axes=(1, 2))
        assert wrong.shape != full.shape or mean_abs(full, wrong) > 10.0  # 21.8 measured; the right one 0.9
    h, w = shown.shape[1:3]
    scaled = read_video(path, num_frames=2, size=(h // 2, w // 2))  # scaled in the decoder, then turned
    assert scaled.shape == (2, h // 2, w // 2, 3)
    assert mean_abs(scaled, resize_center_crop(shown[:2], (h // 2, w // 2))) < 6.0  # 0.9 measured
    np.testing.assert_array_equal(read_frames(path, [3, 1]), full[[3, 1]])


def test_decoded_size_scales_the_stored_frame_so_that_it_is_turned_to_the_display_shape():
    assert decoded_size(16, 32, 1.0, 0, None) == (16, 32)
    assert decoded_size(16, 32, 2.0, 0, None) == (16, 64)
    assert decoded_size(16, 32, 1.0, 1, (16, 8)) == (8, 16)  # shown 32 x 16, scaled to 16 x 8, stored turned back
    assert decoded_size(16, 32, 2.0, 3, 8) == (8, 32)  # shown 64 high, 16 wide: covers 8 x 8 at 32 x 8
    assert [quarter_turns(d) for d in (0, 90, -90, 180, -180, 270, 88)] == [0, 1, 3, 2, 2, 3, 1]
    assert [pixel_aspect(v) for v in (None, Fraction(0, 1), Fraction(64, 45), 2, float("nan"), -1)] == [
        1.0, 1.0, 64 / 45, 2.0, 1.0, 1.0,
    ]  # fmt: skip


def test_an_unreadable_file_is_one_error_and_decord_is_not_tried(tmp_path, monkeypatch):
    """decord printed a C++ log line to stderr (past every error handler) for a file that does not open, so the CLI's
    one-line error came with others; PyAV is asked first."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match="cannot decode"):
        video_display(bad)
    opened = []
    monkeypatch.setattr(vio.decord, "VideoReader", lambda *a, **k: opened.append(a))
    with pytest.raises(ValueError, match="cannot decode"):
        read_video(bad)
    with pytest.raises(ValueError, match="cannot decode"):
        video_fps(bad)
    with pytest.raises(ValueError, match="cannot decode"):
        frame_count(bad)
    from videodata.cache.decode import count_frames
    from videodata.cache.sources import SourceError

    with pytest.raises(SourceError):
        count_frames(bad)
    assert opened == []


@pytest.mark.parametrize(
    "flags", [["-display_hflip:v:0"], ["-display_vflip:v:0"], ["-display_rotation:v:0", "90", "-display_hflip:v:0"]]
)
def test_a_mirrored_video_is_read_as_ffmpeg_shows_it(tmp_path, backend, flags):
    """PyAV's ``rotation`` reads a mirroring display matrix as a turn (hflip: -180) or as nothing (vflip), so such a
    file (QuickTime's "Flip Horizontal", some front cameras) came back upside down against what players show. The
    reference is ffmpeg's own decode, which applies the matrix (autorotate)."""
    import subprocess

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    plain, path = tmp_path / "plain.mp4", tmp_path / "mirrored.mp4"
    rotated_video(plain, corner_marks(), 0)
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", *flags, "-i", str(plain), "-c", "copy", str(path)], check=True)
    ours = read_video(path)
    raw = subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout  # fmt: skip
    shown = np.frombuffer(raw, np.uint8).reshape(ours.shape)  # the sizes agree, or this reshape fails
    assert mean_abs(ours, shown) < 3.0  # the stored frames turned the wrong way are ~20 off
    assert video_display(path).flip
