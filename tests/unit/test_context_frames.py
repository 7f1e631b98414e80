"""pipelines/context.py: a video file to continue is brought to the model's frame rate before its last frames
are taken; arrays and stills are taken frame for frame."""

import numpy as np
import pytest
from PIL import Image

from core.video_io import read_video
from core.video_probe import video_fps
from core.video_write import write_video
from pipelines.context import context_frames, load_frames, probe_frames, resample_indices


def moving_square(T: int = 33, step: int = 1) -> np.ndarray:
    """(T, 64, 64, 3): a white 8x8 square moving right by ``step`` px a frame on black."""
    frames = np.zeros((T, 64, 64, 3), np.uint8)
    for t in range(T):
        frames[t, 28:36, 4 + t * step : 12 + t * step] = 255
    return frames


def centre_x(frames: np.ndarray) -> np.ndarray:
    """(T,) mean column of the bright pixels of each frame."""
    bright = frames.mean(axis=-1) > 128  # (T, H, W)
    cols = np.arange(frames.shape[2])
    return (bright * cols).sum(axis=(1, 2)) / bright.sum(axis=(1, 2))


def test_resample_indices_count_back_from_the_last_frame_to_the_nearest_source_frame():
    assert resample_indices(17, 8.0, 8.0) == list(range(17))
    assert resample_indices(33, 32.0, 8.0) == list(range(0, 33, 4))
    assert resample_indices(34, 32.0, 8.0) == list(range(1, 34, 4))  # the last frame always stays
    assert resample_indices(10, 30.0, 8.0) == [2, 5, 9]  # 9 - 7.5, 9 - 3.75, 9
    slow = resample_indices(5, 4.0, 8.0)  # a slower source repeats frames
    assert len(slow) == 9 and slow[-1] == 4 and slow == sorted(slow)
    exact = 4 - 0.5 * np.arange(8, -1, -1)  # the times each output frame shows, in source frames
    assert np.abs(np.array(slow) - exact).max() <= 0.5
    # an even cadence: Python's round() (ties to even) gave [0, 0, 1, 2, 2, 2, 3, 4, 4] here
    assert slow == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert np.diff(resample_indices(25, 12.0, 8.0)).tolist() == [2, 1] * 8  # 1.5 source frames a step, alternating
    assert np.diff(resample_indices(121, 60.0, 8.0)).tolist() == [8, 7] * 8  # 7.5 (round() gave 8, 7, 7, 8, 8, ...)
    for bad in ((0.0, 8.0), (30.0, -1.0), (float("nan"), 8.0)):
        with pytest.raises(ValueError, match="frame rates"):
            resample_indices(10, *bad)


def test_a_faster_video_is_continued_at_the_models_frame_rate(tmp_path):
    """A 32 fps file for an 8 fps model: its last 5 frames were taken as they were, 1 px of motion apart, so the
    model saw (and continued) the motion at a quarter of its speed."""
    path = tmp_path / "fast.mp4"
    write_video(path, moving_square(33), fps=32)
    frames = load_frames(path, "video", fps=8.0)
    assert frames.shape[0] == 9
    np.testing.assert_allclose(np.diff(centre_x(frames)), 4.0, atol=0.5)
    np.testing.assert_array_equal(frames[-1], read_video(path)[-1])  # the frame a continuation follows
    context = context_frames(None, path, 5, temporal_compression=4, size=(64, 64), fps=8.0)
    assert context.shape == (1, 5, 64, 64, 3)
    np.testing.assert_allclose(np.diff(centre_x(context[0])), 4.0, atol=0.5)
    np.testing.assert_allclose(np.diff(centre_x(load_frames(path, "video"))), 1.0, atol=0.5)  # no rate: as decoded


def test_same_rate_files_arrays_and_stills_are_taken_frame_for_frame(tmp_path):
    path = tmp_path / "same.mp4"
    write_video(path, moving_square(17), fps=8)
    np.testing.assert_array_equal(load_frames(path, "video", fps=8.0), read_video(path))
    array = moving_square(9)
    np.testing.assert_array_equal(load_frames(array, "video", fps=8.0), array)
    still = tmp_path / "still.png"
    write_video(tmp_path / "one.gif", moving_square(2), fps=2)  # an animated GIF has a rate too
    assert load_frames(tmp_path / "one.gif", "video", fps=8.0).shape[0] == 5  # 2 frames at 2 fps span 4 at 8
    Image.fromarray(array[0]).save(still)
    assert load_frames(still, "image", fps=8.0).shape == (1, 64, 64, 3)


def test_a_gif_without_a_frame_rate_is_still_a_context(tmp_path):
    """A one-frame GIF, and an animated GIF without frame delays (browsers play it), were refused as videos with
    "is a still image and has no frame rate", while the same frame as a PNG was taken."""
    frames = [Image.fromarray(f) for f in moving_square(9)]
    frames[0].save(tmp_path / "one.gif")
    frames[0].save(tmp_path / "nodelay.gif", save_all=True, append_images=frames[1:], duration=0)
    for name, count in (("one.gif", 1), ("nodelay.gif", 9)):
        probe_frames(tmp_path / name, "video")
        assert load_frames(tmp_path / name, "video", fps=8.0).shape[0] == count  # frame for frame
    context = context_frames(None, tmp_path / "nodelay.gif", 5, temporal_compression=4, size=(64, 64), fps=8.0)
    assert context.shape == (1, 5, 64, 64, 3)
    with pytest.raises(ValueError, match="is a still image"):  # asking a one-frame file for its rate is still wrong
        video_fps(tmp_path / "one.gif")


def test_a_video_file_is_read_at_the_models_size_never_at_full_size(tmp_path, monkeypatch):
    """load_frames read the whole file at full size before taking its last frames: a minute of 1080p phone video is
    11 GB of frames. The pipeline reads files scaled in the decoder to its frame size."""
    import pipelines.context as ctx

    path = tmp_path / "big.mp4"
    big = np.zeros((17, 240, 320, 3), np.uint8)
    big[:, 100:140, 140:180] = 200
    write_video(path, big, fps=8)
    sizes = []
    real, real_frames = ctx.read_video, ctx.read_frames
    monkeypatch.setattr(ctx, "read_video", lambda p, **kw: sizes.append(kw.get("size")) or real(p, **kw))
    monkeypatch.setattr(ctx, "read_frames", lambda p, i, **kw: sizes.append(kw.get("size")) or real_frames(p, i, **kw))
    frames = context_frames(None, path, 5, temporal_compression=4, size=(64, 64), fps=8.0)
    assert frames.shape == (1, 5, 64, 64, 3)
    assert sizes and all(s == (64, 64) for s in sizes)
    np.testing.assert_array_equal(frames[0], real(path, size=(64, 64))[-5:])
    image = tmp_path / "big.png"
    Image.fromarray(big[0]).save(image)
    sizes.clear()
    assert context_frames(image, None, None, temporal_compression=4, size=(64, 64), fps=8.0).shape == (1, 1, 64, 64, 3)
    assert sizes == [(64, 64)]


def test_probe_frames_fails_fast_with_one_line_and_passes_what_the_pipeline_can_read(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    for source, what in ((bad, "video"), (tmp_path / "missing.png", "image")):
        with pytest.raises(ValueError, match="bad.mp4|missing.png"):
            probe_frames(source, what)
    write_video(tmp_path / "ok.mp4", moving_square(9), fps=8)
    Image.fromarray(moving_square(1)[0]).save(tmp_path / "ok.png")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(moving_square(3)):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    for source, what in ((tmp_path / "ok.mp4", "video"), (tmp_path / "ok.png", "image"), (folder, "video")):
        probe_frames(source, what)
    probe_frames(moving_square(2), "video")  # arrays pass


def test_continuing_a_long_video_decodes_only_the_context_it_keeps(tmp_path, monkeypatch):
    """The pipeline decoded a whole upload to keep its last N frames: a static 64x64 mp4 of 10^5 frames is a few
    hundred kB on the wire and 1.2 GB of frames in memory. Now the file is counted from its index, and only the
    kept frames are decoded: the same frames, at 8 fps and at another rate."""
    import pipelines.context as ctx

    path = tmp_path / "long.mp4"
    clip = np.zeros((120, 64, 64, 3), np.uint8)
    for t in range(120):
        clip[t, 20:40, t // 4 : t // 4 + 12] = 200  # moves right a pixel every 4 frames
    write_video(path, clip, fps=24)
    asked = []
    real_frames = ctx.read_frames
    monkeypatch.setattr(ctx, "read_frames", lambda p, i, **kw: asked.append(list(i)) or real_frames(p, i, **kw))
    monkeypatch.setattr(ctx, "read_video", lambda *a, **kw: pytest.fail("the whole video was decoded"))
    frames = context_frames(None, path, 5, temporal_compression=4, size=(64, 64), fps=8.0)
    assert frames.shape == (1, 5, 64, 64, 3)
    assert asked == [[107, 110, 113, 116, 119]]  # every third frame of 24 fps, counted back from the last
    whole = read_video(path)
    np.testing.assert_array_equal(frames[0], whole[resample_indices(120, 24.0, 8.0)][-5:])
    asked.clear()
    same_rate = context_frames(None, path, 9, temporal_compression=4, size=(64, 64), fps=24.0)
    assert asked == [list(range(111, 120))]
    np.testing.assert_array_equal(same_rate[0], whole[-9:])
    # 120 frames at 24 fps are 40 at 8: the message said "the video has 40 frames" of a 120-frame file
    with pytest.raises(
        ValueError, match=r"the video gives 40 frames at the model's 8 fps, fewer than context_frames=45"
    ):
        context_frames(None, path, 45, temporal_compression=4, size=(64, 64), fps=8.0)


def test_a_video_given_as_the_image_is_refused_before_its_frames_are_decoded(tmp_path, monkeypatch):
    import pipelines.context as ctx

    path = tmp_path / "clip.mp4"
    write_video(path, np.zeros((30, 64, 64, 3), np.uint8), fps=8)
    monkeypatch.setattr(ctx, "read_video", lambda *a, **kw: pytest.fail("the video was decoded"))
    with pytest.raises(ValueError, match="image must be one frame, got 30"):
        context_frames(path, None, None, temporal_compression=4, size=(64, 64), fps=8.0)


def test_a_gif_with_uneven_delays_is_resampled_at_its_own_frame_times(tmp_path):
    """One average rate was used for every frame: a GIF that holds its first frame 2 s and then plays at 8 fps
    averaged 4.2 fps, so at 8 fps each of its last frames was taken twice and the motion before the end was
    continued at half speed (context 13, 13, 14, 14, 15 instead of 11-15)."""
    from pipelines.context import frame_indices

    path = tmp_path / "hold_first.gif"
    frames = [Image.fromarray(np.full((8, 8, 3), 16 * i, np.uint8)) for i in range(16)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[2000] + [120] * 15, loop=0)
    got = load_frames(path, "video", fps=8, size=(8, 8), last=5)
    assert [round(float(f.mean()) / 16) for f in got] == [11, 12, 13, 14, 15]
    keep = frame_indices(path, 8)  # 3.68 s from the first frame's start to the last's: 30 steps of 1/8 s, not 16
    assert len(keep) == 30 and keep == sorted(keep) and keep.count(0) >= 7


def test_resampling_at_frame_times_equals_resampling_at_one_rate_when_the_rate_is_constant():
    from pipelines.context import resample_times

    for n, src, dst in ((17, 30, 8), (9, 4, 8), (33, 24, 8), (5, 8, 8)):  # at one rate: resample_indices exactly
        assert resample_times([i / src for i in range(n)], dst) == resample_indices(n, src, dst)


@pytest.mark.parametrize("fmt, suffix", [("WEBP", ".webp"), ("PNG", ".png"), ("GIF", ".gif")])
def test_animated_webp_and_apng_are_resampled_like_a_gif(tmp_path, fmt, suffix):
    """Only VIDEO_EXTS (which hold .gif) were resampled: a 40 fps animated WebP or APNG was continued frame for frame,
    its last 5 context frames spanning 1/8 s where a GIF's or an mp4's span 5/8 s (the motion ~5x too slow)."""
    from pipelines.context import frame_indices

    path = tmp_path / f"clip{suffix}"
    frames = [Image.fromarray(np.full((8, 8, 3), 6 * i, np.uint8)) for i in range(40)]
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=[25] * 40, loop=0)
    if fmt == "GIF":  # GIF delays are in 1/100 s: 25 ms is stored as 20 or 30; give it 50 fps
        frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=[20] * 40, loop=0)
    rate = 50.0 if fmt == "GIF" else 40.0
    assert frame_indices(path, 8.0) == resample_indices(40, rate, 8.0)


def _write_timed_mp4(path, starts):
    """An H.264 mp4 whose frame i (grey level 4 * i) starts at ``starts[i]`` seconds (ms timestamps)."""
    from fractions import Fraction

    import av

    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"crf": "0", "bf": "0"}
        stream.time_base = stream.codec_context.time_base = tb
        for i, t in enumerate(starts):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_variable_rate_video_is_resampled_at_its_own_frame_times(tmp_path):
    """A phone video recorded at a variable rate was picked by its average rate (24.5 fps here: a step of 3 frames),
    so 9 context frames at 8 fps reached 0.8 s too far back and moved 1.6x too fast. Its timestamps give each time
    step the frame that starts nearest, as for a GIF's delays."""
    from pipelines.context import frame_indices

    starts = [i / 60 for i in range(20)] + [20 / 60 + i / 15 for i in range(20)]  # 60 fps, then 15 fps
    path = tmp_path / "vfr.mp4"
    _write_timed_mp4(path, starts)
    keep = frame_indices(path, 8.0)
    assert keep[-9:] == [24, 26, 28, 30, 32, 33, 35, 37, 39]  # 0.125 s apart, counted back from the last frame
    frames = load_frames(path, "video", fps=8.0)
    assert [round(float(f.mean()) / 4) for f in frames[-9:]] == keep[-9:]  # the decoded frames are those frames


@pytest.mark.parametrize(("fps", "frames"), [(12, 41), (30, 20), (12, 25), (25, 50)])
def test_a_constant_rate_video_is_picked_by_its_one_rate_whatever_its_timestamps_round_to(tmp_path, fps, frames):
    """decord gives timestamps in float32 (1/30 s is 5e-8 off): a time step halfway between two frames, a tie that
    takes the later one, went either way, so a 12 fps video's 9 context frames stuttered (steps 1, 2, 2, 1) and the
    same file gave other frames through decord than through PyAV."""
    from pipelines.context import frame_indices

    path = tmp_path / "c.mp4"
    _write_timed_mp4(path, [i / fps for i in range(frames)])
    assert frame_indices(path, 8.0) == resample_indices(frames, float(fps), 8.0)


def test_a_span_past_the_limit_is_refused_before_its_indices_are_listed():
    from pipelines.context import MAX_RESAMPLED_FRAMES, resample_times

    hour = [0.0, 3600.0, 7200.0, 10800.0]  # 4 frames an hour apart: 86,401 frames at 8 fps
    with pytest.raises(ValueError, match=r"^the frames span 10800 s, \d+ frames at 8 fps, more than 65536"):
        resample_times(hour, 8.0)
    with pytest.raises(ValueError, match="more than 65536"):
        resample_indices(4, 1 / 3600, 8.0)
    assert 57601 <= len(resample_times(hour[:3], 8.0)) <= MAX_RESAMPLED_FRAMES  # 2 hours still go
