"""tools/eval_video.py in frame-prediction form, end to end: a model's own continuations of 5 real context
frames, scored by FVD against the true clips (quick preset with 5 context frames and a stand-in I3D; the k600
preset fixes 5 context frames itself and runs the same code)."""

import json

import numpy as np
import pytest

from core.frames import resize_center_crop
from core.video_io import read_video
from core.video_write import write_video
from tests.helpers.tiny_pipeline import make_tiny_pipeline
from tests.unit.test_eval_video import save_stand_in
from tools.eval_video import main
from videoeval.conditioning import fresh_clips
from videoeval.prediction import predict_continuations
from videoeval.sources import find_videos


def test_predict_then_fvd(tmp_path, capsys):
    model = make_tiny_pipeline(tmp_path / "model")  # 32x32 frames, ct = 4
    real = tmp_path / "real"
    for i, (_, frames) in enumerate(fresh_clips(5)):
        write_video(real / f"clip_{i}.mp4", frames, fps=8)
    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(model), "--real", str(real), "--protocol", "quick", "--num-videos", "4",
                 "--context-frames", "5", "--out", str(pred), "--batch-size", "3"]) == 0  # fmt: skip
    assert "4 predicted clips (5 context + 11 predicted frames)" in capsys.readouterr().out
    assert sorted(p.name for p in pred.glob("*.mp4")) == [f"clip_{i}.mp4" for i in range(4)]  # not the 2nd batch's 5th
    for i in range(4):
        got, truth = read_video(pred / f"clip_{i}.mp4"), read_video(real / f"clip_{i}.mp4")
        assert got.shape == (16, 32, 32, 3)  # the protocol's 16 frames, at the model's size
        context = resize_center_crop(truth[:5], (32, 32)).astype(int)
        assert np.abs(got[:5].astype(int) - context).mean() < 6  # the real context frames, through mp4
    i3d = save_stand_in(tmp_path / "i3d.pt")
    report = tmp_path / "fvd.json"
    assert main(["fvd", "--real", str(real), "--fake", str(pred), "--protocol", "quick", "--num-videos", "4",
                 "--i3d", str(i3d), "--json", str(report)]) == 0  # fmt: skip
    data = json.loads(report.read_text())
    assert data["protocol"]["name"].startswith("quick") and data["fvd"] >= 0 and data["fake"]
    assert main(["predict", "--model", str(model), "--real", str(tmp_path / "none"), "--protocol", "quick",
                 "--out", str(pred)]) == 2  # fmt: skip
    assert "error:" in capsys.readouterr().err
    assert main(["predict", "--model", str(model), "--real", str(real), "--protocol", "quick", "--context-frames", "5",
                 "--out", str(tmp_path / "none_written"), "--batch-size", "0"]) == 2  # fmt: skip
    assert "--batch-size must be >= 1" in capsys.readouterr().err and not (tmp_path / "none_written").exists()
    common = [
        "predict",
        "--model",
        str(model),
        "--real",
        str(real),
        "--protocol",
        "quick",
        "--out",
        str(tmp_path / "z"),
    ]
    for extra, message in [
        (["--context-frames", "5", "--num-videos", "0"], "--num-videos must be >= 1, got 0"),  # was: the preset's count
        (["--context-frames", "5", "--num-videos", "-1"], "--num-videos must be >= 1, got -1"),  # was: "no videos"
        (["--context-frames", "0"], "--context-frames must be >= 1, got 0"),  # was: "give --context-frames"
    ]:
        assert main([*common, *extra]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "z").exists()
    single = tmp_path / "single"  # one video file as --real: predicted into single/clip_0.mp4 (the key was ".")
    assert main(["predict", "--model", str(model), "--real", str(real / "clip_0.mp4"), "--protocol", "quick",
                 "--context-frames", "5", "--out", str(single)]) == 0  # fmt: skip
    assert [p.name for p in single.iterdir()] == ["clip_0.mp4"]
    with pytest.raises(ValueError, match="unknown protocol 'nope'"):
        predict_continuations(model, real, tmp_path / "p", "nope", context_frames=5)
    before = {p.name: p.read_bytes() for p in real.iterdir()}
    for out in (real, real / "pred", tmp_path):  # --out == --real replaced the real clips with predictions
        with pytest.raises(ValueError, match="overlap"):
            predict_continuations(model, real, out, "quick", context_frames=5)
    assert {p.name: p.read_bytes() for p in real.iterdir()} == before


def test_k600_predictions_are_lossless_frame_folders(tmp_path, caplog):
    """k600 stores generated videos as frames (compression raises FVD), but predict wrote H.264 mp4 files, which
    that protocol's own fvd then warned about."""
    model = make_tiny_pipeline(tmp_path / "model")
    real = tmp_path / "real"
    for i, (_, frames) in enumerate(fresh_clips(2)):
        write_video(real / f"clip_{i}.mp4", frames, fps=8)
    pred = tmp_path / "pred"
    predict_continuations(model, real, pred, "k600", num_videos=2)
    assert sorted(p.name for p in pred.iterdir()) == ["clip_0", "clip_1"]
    got = read_video(pred / "clip_0")
    assert got.shape == (16, 32, 32, 3)
    predict_continuations(model, real, pred, "k600", num_videos=1)  # a rerun replaces the folder whole
    assert sorted(p.name for p in pred.iterdir()) == ["clip_0", "clip_1"]
    assert len(list((pred / "clip_0").iterdir())) == 16
    assert [s.kind for s in find_videos(pred)] == ["frames", "frames"]  # what fvd reads without its warning


def test_two_real_videos_with_one_key_are_refused_before_any_prediction(tmp_path):
    """predict named each prediction by the real video's relative path without suffix: a/b.mp4 and the frame
    folder a/b/ both became a/b, so one prediction replaced the other and fvd then scored fewer videos than asked."""
    from core.video_write import write_frame_folder

    real = tmp_path / "real"
    clip = fresh_clips(1)[0][1]
    write_video(real / "a" / "b.mp4", clip, fps=8)
    write_frame_folder(real / "a" / "b", clip)
    out = tmp_path / "pred"
    with pytest.raises(ValueError, match="both pair as 'a/b'"):
        predict_continuations(tmp_path / "no_model_needed", real, out, "quick", context_frames=5)
    assert not out.exists()


def test_predictions_are_of_the_videos_fvd_takes_as_real(tmp_path):
    """predict continued a video long enough for its 5 context frames but too short for the protocol's 16-frame
    clip, which fvd's real side skips: the two sets were different videos (with --num-videos, shifted by one)."""
    from videoeval.fvd import PROTOCOLS, iter_clips

    model = make_tiny_pipeline(tmp_path / "model")
    real = tmp_path / "real"
    clips = fresh_clips(3)
    write_video(real / "a_short.mp4", clips[0][1][:8], fps=8)  # 8 frames: context yes, a 16-frame clip no
    for i, (_, frames) in enumerate(clips[1:]):
        write_video(real / f"clip_{i}.mp4", frames, fps=8)
    protocol = PROTOCOLS["k600"].with_num_videos(2)
    summary = predict_continuations(model, real, tmp_path / "pred", protocol)
    assert summary["videos"] == 2 and summary["skipped"] == 1
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["clip_0", "clip_1"]
    real_keys = [name.rsplit("/", 1)[1].split(".")[0] for name, _ in iter_clips(find_videos(real), protocol)]
    assert real_keys == ["clip_0", "clip_1"]
    with pytest.raises(ValueError, match="holds a 16-frame clip"):
        predict_continuations(model, real / "a_short.mp4", tmp_path / "none", protocol)
