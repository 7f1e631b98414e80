"""Evaluation inputs that gave a wrong number, a traceback or a lost file.

* ``fvd --real data --fake data/generated``: the real folder, searched whole, held the generated videos too, and
  they sorted first: FVD 0.000, exit 0.
* LPIPS on frames smaller than its network takes (AlexNet: about 31 px) ended in a RuntimeError traceback.
* A tokenizer that returns NaN (a diverged run) was scored "nan", exit 0.
* ``--json`` naming the ``--save-stats`` file replaced the statistics just computed, and reading a non-npz file as
  stats said "it holds pickled objects".
* An adherence summary marked unbalanced without its class count passed the check and failed after all the
  sampling of ``tools/report.py``.
* ``roundtrip --video FRAMES_DIR --out FRAMES_DIR`` wrote an mp4 into the frame folder, which then read as
  another video.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from core.config import build_config
from core.video_write import write_frame_folder, write_video
from tests.unit.test_eval_video import random_clip, save_stand_in
from tokenizer import TokenizerConfig, VideoTokenizer
from tools.eval_video import main as eval_video
from tools.roundtrip import main as roundtrip
from videoeval.fvd import FeatureStats
from videoeval.metrics import LPIPS
from videoeval.reconstruction import evaluate
from videoeval.report import ADHERENCE_KEYS, load_adherence
from videoeval.video_eval import evaluate_fvd

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_tokenizer() -> VideoTokenizer:
    torch.manual_seed(0)
    return VideoTokenizer(build_config(TokenizerConfig, [ROOT / "configs/tiny/tokenizer.yaml"])).eval()


@pytest.mark.parametrize("fake_of", [lambda real: real / "generated", lambda real: real, lambda real: real.parent])
def test_fvd_refuses_real_and_fake_folders_that_overlap(tmp_path, fake_of):
    real = tmp_path / "data"
    for i in range(2):
        write_video(real / f"v{i}.mp4", random_clip(i, T=16, H=32, W=32), fps=8)
        write_video(real / "generated" / f"g{i}.mp4", random_clip(10 + i, T=16, H=32, W=32), fps=8)
    with pytest.raises(ValueError, match="overlap: give two separate folders"):
        evaluate_fvd(real, fake_of(real), "quick", i3d_path=save_stand_in(tmp_path / "i3d.pt"))


class _Alexish(nn.Module):
    """Pools twice by 3 with stride 2 and no padding, as AlexNet does: frames under ~15 px have no output left."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = (a - b).pow(2)
        for _ in range(3):
            d = torch.nn.functional.max_pool2d(d, 3, 2)
        return d.mean(dim=(1, 2, 3))


def test_lpips_on_frames_too_small_for_its_network_is_a_value_error(tmp_path):
    path = tmp_path / "lpips.pt"
    torch.jit.script(_Alexish()).save(str(path))
    metric = LPIPS(path)
    x = torch.rand(1, 3, 2, 32, 32) * 2 - 1
    assert metric(x, x.flip(-1)).shape == (1,)  # 32 px works
    with pytest.raises(ValueError, match="the LPIPS network failed on frames of 8x8 px"):
        metric(x[..., :8, :8], x[..., :8, :8].flip(-1))


def test_a_tokenizer_that_returns_nan_is_refused_not_scored(tiny_tokenizer, tmp_path, monkeypatch):
    video = tmp_path / "v.mp4"
    write_video(video, random_clip(0, T=9, H=32, W=32), fps=8)
    assert len(evaluate(tiny_tokenizer, [video], num_frames=9, size=32)) == 1
    monkeypatch.setattr(tiny_tokenizer, "reconstruct", lambda x: torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="returned non-finite values for .*v.mp4"):
        evaluate(tiny_tokenizer, [video], num_frames=9, size=32)


def test_json_over_the_save_stats_file_is_refused_before_the_work(tmp_path, capsys):
    real = tmp_path / "real"
    for i in range(2):
        write_video(real / f"v{i}.mp4", random_clip(i, T=16, H=32, W=32), fps=8)
    same = tmp_path / "same.npz"
    rc = eval_video(["fvd", "--real", str(real), "--save-stats", str(same), "--json", str(same), "--i3d",
                     str(save_stand_in(tmp_path / "i3d.pt")), "--protocol", "quick"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--save-stats" in err and "Traceback" not in err and not same.exists()


def test_a_file_that_is_no_npz_is_said_to_be_no_npz(tmp_path):
    (tmp_path / "report.npz").write_text(json.dumps({"fvd": 1.0}))
    with pytest.raises(ValueError, match=r"is not a .npz of FVD stats .*\(it is not an .npz archive\)"):
        FeatureStats.load(tmp_path / "report.npz")


def test_an_unbalanced_adherence_row_without_its_class_count_is_refused_at_load(tmp_path):
    row = {**{k: 0.9 for k in ADHERENCE_KEYS}, "n": 36, "balanced": 0.0}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"summary": {"ar/frame/fresh": row}}))
    with pytest.raises(ValueError, match="and 'classes' when not balanced"):
        load_adherence(path)
    path.write_text(json.dumps({"summary": {"ar/frame/fresh": {**row, "classes": 36.0}}}))
    assert load_adherence(path)["summary"]["ar/frame/fresh"]["classes"] == 36.0


def test_roundtrip_refuses_to_write_into_the_frame_folder_it_reads(tiny_tokenizer, tmp_path, capsys):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    frames = tmp_path / "frames"
    write_frame_folder(frames, random_clip(0, T=9, H=32, W=32))
    before = sorted(p.name for p in frames.iterdir())
    for out in (frames, frames / "rt"):
        rc = roundtrip(["--tokenizer", str(tmp_path / "tok"), "--video", str(frames), "--out", str(out),
                        "--num-frames", "5", "--size", "32"])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and "lies inside the frame folder --video" in err
    assert sorted(p.name for p in frames.iterdir()) == before
    assert roundtrip(["--tokenizer", str(tmp_path / "tok"), "--video", str(frames), "--out", str(tmp_path / "rt"),
                      "--num-frames", "5", "--size", "32"]) == 0  # fmt: skip
