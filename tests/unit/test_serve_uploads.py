"""The demo server's uploads and errors: an animated image of 10^4 tiny frames is refused after a bounded count, the
upload reply tells a one-frame file from a short clip, and a full disk, a relative output folder or a malformed
Range header never give a plain-text or path-naming answer."""

import errno
import os
import struct

import numpy as np
import pytest

pytest.importorskip("fastapi")
import imageio.v2 as imageio  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import core.video_probe  # noqa: E402
import pipelines.context  # noqa: E402
import pipelines.io  # noqa: E402
import videoserve.app  # noqa: E402
from core.video_write import write_video  # noqa: E402
from tests.helpers.serving import LOCAL, pipe  # noqa: E402, F401 - the shipped model, loaded once per module
from videoserve.app import MAX_IMAGE_FRAMES, create_app  # noqa: E402
from videoserve.store import OutputStore  # noqa: E402

REQUEST = {"prompt": "a red circle moving left", "num_frames": 5}


def tiny_gif(num_frames: int, delay_cs: int, canvas: tuple[int, int] = (1, 1)) -> bytes:
    """A GIF of ``num_frames`` 1x1 frames on a ``canvas`` (width, height), each ``delay_cs`` centiseconds (Pillow's
    writer merges equal frames)."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", *canvas, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for i in range(num_frames):
        out += b"\x21\xf9\x04\x00" + struct.pack("<H", delay_cs) + b"\x00\x00"  # graphic control: the delay
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)  # image descriptor
        codes, bits, nbits, data = [4, i % 2, 5], 0, 0, bytearray()  # LZW: clear, one pixel, end (3-bit codes)
        for code in codes:
            bits |= code << nbits
            nbits += 3
            while nbits >= 8:
                data.append(bits & 0xFF)
                bits, nbits = bits >> 8, nbits - 8
        data.append(bits & 0xFF)
        out += b"\x02" + bytes([len(data)]) + data + b"\x00"
    return bytes(out + b"\x3b")


@pytest.fixture()
def client(pipe, tmp_path):
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    with TestClient(create_app(pipe, store, model_name="shapes"), base_url=LOCAL) as c:
        yield c


def test_an_animated_image_of_too_many_frames_is_refused_before_it_is_walked(client, monkeypatch):
    """A 230 KB GIF of 10^4 frames held the one worker 24 s (Pillow walked it five times) while generations
    waited; the limit counted bytes only."""
    walked = []
    monkeypatch.setattr(core.video_probe, "image_durations", lambda path: walked.append(path) or [0])
    r = client.post("/api/uploads?name=many.gif", content=tiny_gif(MAX_IMAGE_FRAMES + 1, 1))
    assert r.status_code == 400 and r.json() == {
        "error": f"an animated image of more than {MAX_IMAGE_FRAMES} frames on a 1x1 canvas: upload it as an mp4"
    }
    assert walked == []  # refused on the bounded count alone, before any full walk
    monkeypatch.undo()
    r = client.post("/api/uploads?name=some.gif", content=tiny_gif(40, 25))  # 40 frames at 4 fps: 10 s
    assert r.status_code == 200, r.text
    assert r.json()["file_frames"] == 40 and r.json()["frames"] == 79  # at 8 fps, up to the last frame's start (9.75 s)


def test_an_accepted_animated_image_is_walked_once(client, monkeypatch):
    """The check walked an animated upload's frames up to six times (a bounded count, the count and delays for the
    rate, again inside the decode of its last frame, and the count once more for the reply): 4,096 tiny frames
    take about 1.2 s a walk, which the one worker spent while generations waited."""
    walked, real = [], core.video_probe.image_durations
    monkeypatch.setattr(core.video_probe, "image_durations", lambda path: walked.append(path) or real(path))
    monkeypatch.setattr(pipelines.context, "image_durations", core.video_probe.image_durations)
    r = client.post("/api/uploads?name=some.gif", content=tiny_gif(40, 25))
    assert r.status_code == 200 and (r.json()["file_frames"], r.json()["frames"]) == (40, 79), r.text
    assert len(walked) == 1


def test_the_reply_tells_a_still_from_a_short_clip(client, tmp_path):
    """The reply gave only the frames at the model's rate: a 3-frame GIF of 20 ms frames gives 1, and the page sent
    it as an image, which the API then refused ("image must be one frame, got 3")."""
    r = client.post("/api/uploads?name=sticker.gif", content=tiny_gif(3, 2))
    assert r.status_code == 200 and (r.json()["file_frames"], r.json()["frames"]) == (3, 1)
    write_video(tmp_path / "clip.mp4", np.zeros((3, 64, 64, 3), np.uint8), fps=30)
    r = client.post("/api/uploads?name=clip.mp4", content=(tmp_path / "clip.mp4").read_bytes())
    assert r.status_code == 200 and (r.json()["file_frames"], r.json()["frames"]) == (3, 1)
    page = client.get("/").text
    assert "if (file_frames > 1)" in page and "if (frames < want)" in page  # the page decides by the file's count


def test_a_decode_error_with_a_relative_output_folder_does_not_name_the_servers_folder(pipe, tmp_path, monkeypatch):
    """Decoders get absolute paths; the message was cleaned of the relative ``outputs/serve/uploads/`` only, so the
    working folder (and a mangled path) reached the client."""
    monkeypatch.chdir(tmp_path)
    store = OutputStore("outputs/serve", max_bytes=10**9)
    with TestClient(create_app(pipe, store, model_name="shapes"), base_url=LOCAL) as c:
        r = c.post("/api/uploads?name=broken.mp4", content=b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    assert r.status_code == 400 and "cannot decode" in r.json()["error"]
    assert str(tmp_path) not in r.json()["error"] and "outputs" not in r.json()["error"]


@pytest.mark.parametrize(
    ("said", "reason"),
    [("No space left on device", os.strerror(errno.ENOSPC)), ("Broken encoder", "ffmpeg failed: Error writing .")],
)
def test_a_full_disk_is_a_500_that_names_no_folder(client, monkeypatch, tmp_path, said, reason):
    """It came back as a 400 (bad input) naming the server's absolute output path; then, through the real
    write_video, as a 500 whose reason still named it (ffmpeg's message carried the target's path)."""
    import imageio_ffmpeg

    ffmpeg = tmp_path / "ffmpeg"  # says what ffmpeg says, naming the file it writes (its last argument)
    ffmpeg.write_text(f'#!/bin/sh\nfor a; do last=$a; done\necho "Error writing $last: {said}" >&2\nexit 1\n')
    ffmpeg.chmod(0o755)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(ffmpeg))
    r = client.post("/api/generate", json=REQUEST)
    assert r.status_code == 500
    error = r.json()["error"]
    assert error.startswith(f"the server could not write the result: {reason}") and str(tmp_path) not in error
    monkeypatch.undo()
    assert client.post("/api/generate", json=REQUEST).status_code == 200  # nothing is left wedged


def test_a_range_header_the_file_cannot_answer_gets_the_json_error_shape(client):
    """Starlette answered these with a plain-text 400 ("Range header: range must be requested")."""
    video = client.post("/api/generate", json=REQUEST).json()["video"]
    size = len(client.get(video).content)
    huge = "9" * 5000  # over int()'s 4,300 digits: a plain-text 500, and the result held from the cap for good
    for bad in ("bytes=abc", "bytes=5-2", "bytes=", "bytes=-", f"bytes=0-{huge}", f"bytes=-{huge}", f"bytes={huge}-"):
        for method in (client.get, client.head):
            r = method(video, headers={"Range": bad})
            assert r.status_code == 400, (bad[:20], method)
            if method == client.get:
                assert "the Range header must be bytes=first-last" in r.json()["error"], bad[:20]
    assert not +client.app.state.store._held  # every refused request released the result it claimed
    r = client.get(video, headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and "starts past" in r.json()["error"]
    assert r.headers["content-range"] == f"bytes */{size}"  # a 416 says the file's length (RFC 9110)
    r = client.get(video, headers={"Range": "bytes=-0"})  # Starlette's empty plain-text 416
    assert r.status_code == 416 and "the last 0 bytes" in r.json()["error"]
    assert r.headers["content-range"] == f"bytes */{size}"
    for good, length in (("bytes=0-3", 4), ("bytes=-5", 5), ("bytes=2-", size - 2), ("bytes=3-3", 1)):
        r = client.get(video, headers={"Range": good})
        assert r.status_code == 206 and len(r.content) == length, good
    r = client.get(video, headers={"Range": "items=0-5"})  # another unit is ignored (RFC 9110 14.2): the whole file
    assert r.status_code == 200 and len(r.content) == size
    r = client.head(video)  # players and link checkers ask HEAD first: it was a 405
    assert r.status_code == 200 and int(r.headers["content-length"]) == size and r.content == b""


def test_an_upload_whose_frames_span_hours_is_refused_before_its_frames_are_listed(client):
    """Only the frame count was limited: 20 frames of 655 s each (a 0.4 KB GIF) listed 104,800 frame indices at 8 fps
    in Python, and a few hundred such frames took minutes and gigabytes of the one worker."""
    r = client.post("/api/uploads?name=slow.gif", content=tiny_gif(20, 65535))
    assert r.status_code == 400 and "more than 65536" in r.json()["error"] and "frame delays" in r.json()["error"]
    r = client.post("/api/uploads?name=ok.gif", content=tiny_gif(8, 65535))  # 7 delays of 655 s: 4,587 s at 8 fps
    assert r.status_code == 200 and 36_000 < r.json()["frames"] <= 65_536


def test_an_animated_image_on_a_large_canvas_is_refused_after_the_frames_its_canvas_allows(client, monkeypatch):
    """Pillow composes each frame of a GIF on its whole canvas: a 4.6 KB GIF of 200 1x1 frames on a 9000 x 9000 canvas
    held the one worker about 2 minutes, under the frame limit; 4,096 of them would have held it ~50 minutes."""
    walked = []
    monkeypatch.setattr(core.video_probe, "image_durations", lambda path: walked.append(path) or [0])
    monkeypatch.setattr(videoserve.app, "MAX_DECODE_PIXELS", 100 * 80 * 30)  # 30 frames of a 100 x 80 canvas
    r = client.post("/api/uploads?name=wide.gif", content=tiny_gif(31, 10, canvas=(100, 80)))
    assert r.status_code == 400 and r.json() == {
        "error": "an animated image of more than 30 frames on a 100x80 canvas: upload it as an mp4"
    }
    assert walked == []  # refused on the bounded count alone
    monkeypatch.undo()
    monkeypatch.setattr(videoserve.app, "MAX_DECODE_PIXELS", 100 * 80 * 30)
    r = client.post("/api/uploads?name=wide.gif", content=tiny_gif(30, 10, canvas=(100, 80)))
    assert r.status_code == 200 and r.json()["file_frames"] == 30, r.text


def _clip(path, frames: int, keyframe_every: int) -> None:
    """An H.264 clip of slowly brightening 64x48 frames with a keyframe every ``keyframe_every`` frames exactly (no
    scene-cut keyframes, no B-frames, so decode order is display order)."""
    params = ["-g", str(keyframe_every), "-sc_threshold", "0", "-bf", "0"]
    with imageio.get_writer(path, fps=8, codec="libx264", ffmpeg_params=params, macro_block_size=1) as writer:
        for i in range(frames):
            writer.append_data(np.full((48, 64, 3), 40 + i, dtype=np.uint8))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_the_pixels_to_decode_run_from_the_keyframe_before_the_frame(tmp_path, monkeypatch, backend):
    if backend == "pyav":
        monkeypatch.setattr(core.video_probe, "decord", None)
    _clip(tmp_path / "gop8.mp4", 40, 8)  # keyframes 0, 8, ..., 32
    for index, decoded in ((39, 8), (32, 1), (31, 8), (5, 6)):
        assert core.video_probe.video_pixels_to_decode(tmp_path / "gop8.mp4", index) == decoded * 64 * 48, index
    _clip(tmp_path / "gop100.mp4", 40, 100)  # one keyframe
    assert core.video_probe.video_pixels_to_decode(tmp_path / "gop100.mp4", 39) == 40 * 64 * 48


def test_a_video_whose_last_frame_lies_far_after_its_keyframe_is_refused_from_its_index(client, tmp_path, monkeypatch):
    """A 0.7 MB mp4 of 20,000 still 1080p frames after one keyframe held the one worker 35 s to decode its last frame
    (the reply's check); at the 32 MB upload limit, about half an hour."""
    _clip(tmp_path / "one_key.mp4", 40, 100)
    _clip(tmp_path / "keys.mp4", 40, 8)
    monkeypatch.setattr(videoserve.app, "MAX_DECODE_PIXELS", 20 * 64 * 48)
    decoded = []
    monkeypatch.setattr(pipelines.context, "read_frames", lambda *a, **k: decoded.append(a) or [])
    r = client.post("/api/uploads?name=one_key.mp4", content=(tmp_path / "one_key.mp4").read_bytes())
    assert r.status_code == 400 and r.json() == {
        "error": "the video's last frame lies too far after its keyframe to decode on this server: re-encode it with "
        "more keyframes (ffmpeg -g 30) or trim it"
    }
    assert decoded == []  # nothing decoded
    monkeypatch.undo()
    monkeypatch.setattr(videoserve.app, "MAX_DECODE_PIXELS", 20 * 64 * 48)
    r = client.post("/api/uploads?name=keys.mp4", content=(tmp_path / "keys.mp4").read_bytes())
    assert r.status_code == 200 and r.json()["file_frames"] == 40, r.text
