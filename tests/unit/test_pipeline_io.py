"""pipelines.io: output paths, the up-front writability check, and write errors that name the
user's path (not the temporary file)."""

import errno
from pathlib import Path

import numpy as np
import pytest
import torch

import pipelines.io as pio
from pipelines.video import VideoOutput


def _output(batch: int = 1) -> VideoOutput:
    frames = np.zeros((batch, 5, 16, 16, 3), dtype=np.uint8)
    frames[:, :, 4:8, 4:8, 0] = 255
    return VideoOutput(frames=frames, fps=8.0, ids=torch.zeros(batch, 2, 2, 2, dtype=torch.long), timings={})


def test_output_paths_file_or_directory(tmp_path):
    assert pio.output_paths(tmp_path / "a.mp4", 1) == [tmp_path / "a.mp4"]
    assert pio.output_paths(tmp_path / "many", 2) == [
        tmp_path / "many" / "video_000.mp4",
        tmp_path / "many" / "video_001.mp4",
    ]
    with pytest.raises(ValueError, match="need a directory"):
        pio.output_paths(tmp_path / "a.mp4", 2)
    for name in ("clip.webm", "sheet.png"):  # became a folder of that name holding video_000.mp4
        with pytest.raises(ValueError, match="must be an .mp4 or .gif file, or a directory"):
            pio.output_paths(tmp_path / name, 1)
    (tmp_path / "runs.v2").mkdir()  # an existing folder with a dot in its name is still a folder
    assert pio.output_paths(tmp_path / "runs.v2", 1) == [tmp_path / "runs.v2" / "video_000.mp4"]


def test_a_trailing_separator_makes_out_a_folder_whatever_its_name(tmp_path):
    """Path() drops a trailing "/": --out clips.mp4/ wrote a file clips.mp4, and a new folder 2024.06.01/ was refused
    as a file of an unknown type."""
    for name in ("clips.mp4", "2024.06.01", "run.v2"):
        assert pio.output_paths(f"{tmp_path / name}/", 2 if name == "run.v2" else 1)[0] == (
            tmp_path / name / "video_000.mp4")  # fmt: skip


def test_an_output_never_replaces_an_input_file(tmp_path):
    """``--image first.png --out first.mp4`` wrote the contact sheet over the user's first.png."""
    image, clip = tmp_path / "first.png", tmp_path / "clip.gif"
    with pytest.raises(ValueError, match="would replace an input file"):
        pio.check_writable([tmp_path / "first.mp4"], (image, None))
    with pytest.raises(ValueError, match="would replace an input file"):
        pio.check_writable([tmp_path / "clip.mp4"], (None, clip), gif=True)
    pio.check_writable([tmp_path / "clip.mp4"], (None, clip))  # no gif asked for: clip.gif is not written


def test_relative_outputs_and_inputs_are_compared_as_the_files_they_name(tmp_path, monkeypatch):
    """generate.py passes paths as typed: ``--video in.mp4 --out in.mp4`` and ``--video clip --out clip/next.mp4``
    name the same files as their absolute forms, and must be refused the same way."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip").mkdir()
    with pytest.raises(ValueError, match="would replace an input file"):
        pio.check_writable([Path("in.mp4")], (None, "in.mp4"))
    with pytest.raises(ValueError, match="would replace an input file"):
        pio.check_writable([Path("sub/../in.mp4")], (None, str(tmp_path / "in.mp4")))
    with pytest.raises(ValueError, match="would put a file into the input folder"):
        pio.check_writable([Path("clip/next.mp4")], (None, "clip"))
    with pytest.raises(ValueError, match="would put a file into the input folder"):
        pio.check_writable([tmp_path / "clip" / "next.mp4"], (None, "./clip"))


def test_no_output_goes_into_an_input_frame_folder(tmp_path):
    """``--video clip/ --out clip/next.mp4`` wrote next.png into the frame folder, which then failed to read ("the
    frames differ in size")."""
    frames = tmp_path / "clip"
    frames.mkdir()
    with pytest.raises(ValueError, match="would put a file into the input folder"):
        pio.check_writable([frames / "next.mp4"], (None, frames))
    pio.check_writable([tmp_path / "next.mp4"], (None, frames))  # beside it is fine


def test_an_output_folder_behind_a_dangling_link_is_refused_up_front(tmp_path):
    """``outputs`` linked to a disk that is not mounted passed the check; after sampling the write failed as
    "cannot write 'None': File exists"."""
    (tmp_path / "outputs").symlink_to(tmp_path / "unmounted" / "disk")
    with pytest.raises(ValueError, match="is a link to nothing"):
        pio.check_writable([tmp_path / "outputs" / "v.mp4"])
    with pytest.raises(pio.OutputWriteError) as err:  # and a write that fails there names the video
        pio.save_output(_output(), [tmp_path / "outputs" / "v.mp4"])
    assert "v.mp4" in str(err.value) and "None" not in str(err.value)


@pytest.mark.parametrize("side", ["v.png", "v.gif"])
def test_a_file_beside_the_video_is_replaced_only_when_tokvid_wrote_it(tmp_path, side):
    """``--out v.mp4`` wrote its contact sheet (and, with ``--gif``, its gif) over the user's own v.png / v.gif."""
    from PIL import Image

    theirs = tmp_path / side
    Image.fromarray(np.full((8, 8, 3), 7, dtype=np.uint8)).save(theirs)
    before = theirs.read_bytes()
    with pytest.raises(ValueError, match=f"writing '{theirs}' beside 'v.mp4' would replace a file that tokvid did not"):
        pio.check_writable([tmp_path / "v.mp4"], gif=True)
    assert theirs.read_bytes() == before
    theirs.unlink()
    pio.save_output(_output(), [tmp_path / "v.mp4"], gif=True)  # a rerun over tokvid's own files is fine
    pio.check_writable([tmp_path / "v.mp4"], gif=True)
    pio.check_writable([tmp_path / "v.gif"])  # the named video itself is the user's choice to replace
    (tmp_path / "w.gif").write_bytes(before)
    pio.check_writable([tmp_path / "w.mp4"])  # no gif asked for: w.gif is not written


def test_check_writable_leaves_no_probe_file(tmp_path):
    pio.check_writable([tmp_path / "new" / "v.mp4"])
    assert list(tmp_path.iterdir()) == []  # nothing created, the probe file is gone


def test_save_writes_video_and_sheet(tmp_path):
    written = pio.save_output(_output(), [tmp_path / "out" / "v.mp4"], gif=True)
    assert written == [tmp_path / "out" / "v.mp4", tmp_path / "out" / "v.gif", tmp_path / "out" / "v.png"]
    assert all(p.stat().st_size > 0 for p in written)


def test_a_failing_write_names_the_users_path(tmp_path, monkeypatch):
    def full_disk(path, frames):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(path).parent / ".v.tmp123.png"))

    monkeypatch.setattr(pio, "write_contact_sheet", full_disk)
    with pytest.raises(ValueError, match=r"cannot write '.*v\.png': No space left on device"):
        pio.save_output(_output(), [tmp_path / "v.mp4"])
    assert list(tmp_path.iterdir()) == []  # a video and its sheet are written together or not at all


def test_an_interrupted_save_keeps_each_video_beside_its_own_sheet(tmp_path, monkeypatch):
    """A Ctrl-C while video_001's sheet was written over an earlier run left the new video_001.mp4 beside the old
    video_001.png, without a word. Earlier videos of the run are kept; the interrupted one keeps its old pair."""
    paths = [tmp_path / f"video_{i:03d}.mp4" for i in range(3)]
    pio.save_output(_output(3), paths)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    sheets, real = [], pio.write_contact_sheet

    def interrupted_at_the_second(path, frames):
        sheets.append(path)
        if len(sheets) == 2:
            raise KeyboardInterrupt
        real(path, frames)

    monkeypatch.setattr(pio, "write_contact_sheet", interrupted_at_the_second)
    new = _output(3)
    new.frames[:, :, 8:12, 8:12, 1] = 255  # another picture than the first run's
    with pytest.raises(KeyboardInterrupt):
        pio.save_output(new, paths)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(after) == sorted(before)  # no temp file left
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"video_000.mp4", "video_000.png"}  # video_001 keeps its old pair, video_002 is untouched


def test_two_writers_of_one_video_leave_its_files_from_one_of_them(tmp_path, monkeypatch):
    """Two generate.py runs on one --out: their renames interleaved (A's sheet, B's sheet, B's video, A's video),
    which left run A's mp4 beside run B's contact sheet, both tokvid's, without a word. They now take turns."""
    import threading
    import time

    from PIL import Image

    import core.files as files
    from core.video_io import read_video

    target = tmp_path / "clip.mp4"
    real_replace = files.os.replace

    def slow_for_a(src, dst):  # run A pauses before it renames its video into place
        if threading.current_thread().name == "A" and Path(dst) == target:
            time.sleep(1.5)
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", slow_for_a)

    def output(value: int) -> VideoOutput:
        return VideoOutput(frames=np.full((1, 5, 16, 16, 3), value, np.uint8), fps=8.0, ids=None, timings={})

    a = threading.Thread(target=pio.save_output, args=(output(20), [target]), name="A")
    a.start()
    time.sleep(0.5)  # A is in its pause
    pio.save_output(output(230), [target])
    a.join()
    video = float(read_video(target).mean())
    sheet = float(np.asarray(Image.open(target.with_suffix(".png")).convert("RGB")).mean())
    assert (video < 125) == (sheet < 125), (video, sheet)  # both from run A, or both from run B
