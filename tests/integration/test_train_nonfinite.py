"""tools/train.py and non-finite numbers: a NaN loss or gradient skips its step without a trace (also inside
gradient accumulation), the stop policy exits with one line, and fp16 loss-scale overflows lower the scale."""

import subprocess
import sys

import pytest
import torch

from core.config import build_config
from generator import Generator
from tests.helpers.train_runs import CFG, ENV, ROOT, parallel, train

PROBE = r"""
import os, sys, torch
from pathlib import Path
from core.config import build_config
from tests.helpers.faults import install
from videotrain.generator_task import GeneratorTrainConfig, GeneratorTrainer
out, mode = Path(sys.argv[2]), sys.argv[3]
cfg = build_config(GeneratorTrainConfig, [sys.argv[1]], sys.argv[4:])
t = GeneratorTrainer(cfg, out)
calls = []  # "b" per engine.backward, "s" per optimizer step
backward, opt_step = t.engine.backward, t.engine.optimizer.step
t.engine.backward = lambda *a, **k: (calls.append("b"), backward(*a, **k))[1]
t.engine.optimizer.step = lambda *a, **k: (calls.append("s"), opt_step(*a, **k))[1]
if mode == "reference":  # the poisoned run's first batch, forward only: the same random draws
    ids, cond = t.batch(t.stream.take(cfg.run.micro_batch))
    t.engine(ids, cond, t.rng)
else:
    install({"nan_at": mode})
for step in range(3):
    logs = t.train_step()
    assert logs is not None and t.step == step + 1, (step, logs)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in logs.items()), logs
print("CALLS", "".join(calls))
torch.save(t.model.state_dict(), out / "params.pt")
t.export()
ids, cond = t.batch([0, 1])
t.model.eval()
from generator.units import make_layout
lay = make_layout(t.cache.grid, "clip")
with torch.no_grad():
    logits = t.model(lay.to_sequence(ids), cond, coords=lay.coords, mask=torch.ones(48, 48, dtype=torch.bool))
torch.save({"ids": ids, "labels": cond.labels, "logits": logits}, out / "probe.pt")
print("PROBE OK")
"""


def probe(train_data, out, mode, *overrides):
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            CFG,
            str(out),
            mode,
            f"data.cache={train_data / 'cache'}",
            f"data.tokenizer={train_data / 'tok'}",
            "run.deterministic=true",
            *overrides,
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert "PROBE OK" in proc.stdout, proc.stderr[-3000:]
    return proc


def test_nan_loss_batch_is_dropped_without_a_trace_and_export_matches_engine(train_data, tmp_path):
    """A NaN loss drops its micro-batch before backward: the run equals one that never trained
    on that batch (same random draws), and the export reproduces the engine's logits."""
    poisoned, reference = parallel(lambda: probe(train_data, tmp_path / "poisoned", "0"),
                                   lambda: probe(train_data, tmp_path / "reference", "reference"))  # fmt: skip
    assert "non-finite loss at step 0: micro-batch dropped" in poisoned.stderr
    assert "non-finite" not in reference.stderr
    a = torch.load(tmp_path / "poisoned" / "params.pt", weights_only=True)  # our own test artefacts
    b = torch.load(tmp_path / "reference" / "params.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    probe_out = torch.load(tmp_path / "poisoned" / "probe.pt", weights_only=True)
    from generator import Condition
    from generator.units import make_layout

    model = Generator.from_pretrained(tmp_path / "poisoned" / "export")
    lay = make_layout(tuple(probe_out["ids"].shape[1:]), "clip")
    with torch.no_grad():
        logits = model(
            lay.to_sequence(probe_out["ids"]),
            Condition(labels=probe_out["labels"]),
            coords=lay.coords,
            mask=torch.ones(48, 48, dtype=torch.bool),
        )
    assert torch.allclose(logits, probe_out["logits"], atol=1e-6)


def test_nan_loss_inside_gradient_accumulation_keeps_the_window(train_data, tmp_path):
    """grad_accum=2 with a NaN on the second micro-batch of step 0: every step still makes one
    optimizer step after exactly two backward passes, and nothing non-finite reaches the weights."""
    proc = probe(train_data, tmp_path / "run", "0.1", "optim.grad_accum=2")
    assert "non-finite loss at step 0: micro-batch dropped" in proc.stderr
    assert "CALLS bbsbbsbbs" in proc.stdout, proc.stdout[-500:]
    params = torch.load(tmp_path / "run" / "params.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in params.values() if v.is_floating_point())


GRAD_PROBE = r"""
import sys, torch
from pathlib import Path
from core.config import build_config
from tests.helpers.faults import install
from videotrain.generator_task import GeneratorTrainConfig, GeneratorTrainer
cfg = build_config(GeneratorTrainConfig, [sys.argv[1]], sys.argv[3:])
t = GeneratorTrainer(cfg, Path(sys.argv[2]))
install({"inf_grad_at": "0"})
before = {k: v.clone() for k, v in t.model.state_dict().items()}
assert t.train_step() is None and t.step == 0  # the step is skipped
assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())  # nothing changed
assert not t.engine.optimizer.state or all(not s for s in t.engine.optimizer.state.values())  # no AdamW moments
logs = t.train_step()
assert logs is not None and t.step == 1 and all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
assert any(not torch.equal(before[k], v) for k, v in t.model.state_dict().items())
print("GRAD OK")
"""


@pytest.mark.parametrize("stage", [0, 1])
def test_a_non_finite_gradient_skips_the_step(train_data, tmp_path, stage):
    """A finite loss with an infinite gradient: no weight, no AdamW moment changes, and the next step trains."""
    proc = subprocess.run([sys.executable, "-c", GRAD_PROBE, CFG, str(tmp_path / "run"),
                           f"data.cache={train_data / 'cache'}", f"data.tokenizer={train_data / 'tok'}",
                           f"run.zero_stage={stage}"],
                          env=ENV, capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert "GRAD OK" in proc.stdout, proc.stderr[-3000:]
    assert "non-finite gradient at step 0: step skipped" in proc.stderr


def test_nan_stop_policy_exits_with_one_line(train_data, tmp_path):
    proc = train(train_data, tmp_path / "run", "run.steps=4", "run.nonfinite=stop", faults=["nan_at=2"], check=False)
    assert proc.returncode == 1
    assert "error: non-finite loss at step 2" in proc.stderr and "Traceback" not in proc.stderr


def test_fp16_overflows_lower_the_loss_scale_and_training_goes_on(tmp_path, monkeypatch):
    """The gradient check skipped an overflowed fp16 step before DeepSpeed's scaler saw it: the scale never fell,
    every later step overflowed again and the run stopped after run.max_nonfinite steps (ZeRO-1 here).

    DeepSpeed's CPU accelerator accepts fp16 only where oneDNN has fp16 kernels (Intel CPUs with AMX or
    AVX512-FP16; not an AMD EPYC) and elsewhere refuses to build the engine. torch computes fp16 on any CPU and
    the loss scaler is what this test is about, so it answers that check yes and runs on every CPU."""
    from deepspeed.accelerator import get_accelerator

    import videotrain.generator_task as gt
    from tests.unit.test_token_data import make_cache
    from videotrain.engines import restored_env
    from videotrain.generator_task import GeneratorTrainConfig, GeneratorTrainer

    make_cache(tmp_path / "cache", num_clips=16, shard_size=8)
    real_forward = gt.GeneratorTask.forward

    def huge_loss(self, ids, cond, rng, objective=None):  # fp16 gradients overflow at the first scales
        loss, stats = real_forward(self, ids, cond, rng, objective)
        return loss * 300.0, stats

    monkeypatch.setattr(gt.GeneratorTask, "forward", huge_loss)
    monkeypatch.setattr(type(get_accelerator()), "is_fp16_supported", lambda self: True)
    cfg = build_config(GeneratorTrainConfig, [], [
        "model.style=maskgit", "model.orders=[frame]", "model.vocab_size=100", "model.max_grid=[2,3,3]",
        "model.dim=16", "model.depth=1", "model.num_heads=2", "model.num_classes=3", "optim.warmup_steps=0",
        "run.micro_batch=2", "run.steps=20", "run.checkpoint_every=0", "run.precision=fp16", "run.zero_stage=1",
        "run.max_nonfinite=8", f"data.cache={tmp_path / 'cache'}"])  # fmt: skip
    with restored_env():  # as run_training does: no RANK left behind to make a later in-process run "launched"
        trainer = GeneratorTrainer(cfg, tmp_path / "run")
        first = trainer.engine.optimizer.loss_scale
        results = [trainer.train_step() for _ in range(10)]
    assert results[0] is None and trainer.engine.optimizer.loss_scale < first  # skipped, and the scale fell
    assert trainer.step >= 3 and results[-1] is not None  # then steps succeed


@pytest.mark.parametrize("zero_stage", [0, 1])
def test_an_fp16_run_exports_its_fp32_master_weights(tmp_path, monkeypatch, zero_stage):
    """The export widened the module's fp16 copy (``.float()``) instead of reading the optimizer's fp32 masters,
    so a run without EMA (and every run.init_from stage after it) started from weights rounded by up to ~5e-4.
    fp16 on this CPU as in the loss-scale test above; DeepSpeed's bf16 on GPUs keeps its masters the same way."""
    from deepspeed.accelerator import get_accelerator
    from deepspeed.utils import safe_get_full_fp32_param

    from tests.unit.test_token_data import make_cache
    from videotrain.engines import restored_env
    from videotrain.generator_task import GeneratorTrainConfig, GeneratorTrainer

    make_cache(tmp_path / "cache", num_clips=16, shard_size=8)
    monkeypatch.setattr(type(get_accelerator()), "is_fp16_supported", lambda self: True)
    cfg = build_config(GeneratorTrainConfig, [], [
        "model.style=maskgit", "model.orders=[frame]", "model.vocab_size=100", "model.max_grid=[2,3,3]",
        "model.dim=16", "model.depth=1", "model.num_heads=2", "model.num_classes=3", "optim.warmup_steps=0",
        "optim.lr=0.01", "run.micro_batch=2", "run.steps=6", "run.checkpoint_every=0", "run.precision=fp16",
        f"run.zero_stage={zero_stage}", f"data.cache={tmp_path / 'cache'}"])  # fmt: skip
    with restored_env():
        trainer = GeneratorTrainer(cfg, tmp_path / "run")
        while trainer.step < 4:
            trainer.train_step()
        exported = trainer.export_state()
        opt = trainer.engine.optimizer
        rounded = 0
        for name, p in trainer.model.named_parameters():
            master = safe_get_full_fp32_param(p)
            if master is None:  # ZeRO-0: the fp16 optimizer's fp32 groups, beside its fp16 ones
                pairs = [dict(zip(map(id, h), f)) for h, f in zip(opt.fp16_groups, opt.fp32_groups)]
                master = next(d[id(p)] for d in pairs if id(p) in d)
            assert torch.equal(exported[name], master.float().cpu()), name
            rounded += int(not torch.equal(master.float().cpu(), p.detach().float().cpu()))
        assert rounded > 0  # the masters differ from the fp16 copies, so the test can tell them apart


TINY_GEN = ["model.style=maskgit", "model.orders=[frame]", "model.vocab_size=100", "model.max_grid=[2,3,3]",
            "model.dim=16", "model.depth=1", "model.num_heads=2", "model.num_classes=3", "optim.warmup_steps=0",
            "run.micro_batch=2", "run.steps=6", "run.checkpoint_every=0"]  # fmt: skip


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_the_step_after_a_skipped_one_trains_as_if_the_bad_one_never_happened(tmp_path, monkeypatch, zero_stage):
    """ZeRO-3 kept the skipped step's inf gradients in its optimizer (engine.zero_grad() clears p.grad only): the
    next, finite step was applied as inf, dropped by DeepSpeed, and still counted, so one bad batch cost two steps
    and the run went its own way (weights 3e-3 off a fresh trainer's after one step). Compared here with a fresh
    trainer that starts at the same data position."""
    from tests.helpers.faults import install
    from tests.unit.test_token_data import make_cache
    from videotrain.distributed import full_state_dict
    from videotrain.engines import restored_env
    from videotrain.generator_task import GeneratorTrainConfig, GeneratorTrainer

    make_cache(tmp_path / "cache", num_clips=16, shard_size=8)
    cfg = build_config(GeneratorTrainConfig, [], [*TINY_GEN, f"run.zero_stage={zero_stage}",
                                                  f"data.cache={tmp_path / 'cache'}"])  # fmt: skip
    with restored_env():
        skipped = GeneratorTrainer(cfg, tmp_path / "a")
        install({"inf_grad_at": "0"}, monkeypatch.setattr)
        assert skipped.train_step() is None and skipped.step == 0
        fresh = GeneratorTrainer(cfg, tmp_path / "b")
        fresh.stream.load_state_dict(dict(skipped.stream.state_dict()))
        fresh.rng.set_state(skipped.rng.get_state())
        for _ in range(2):
            got, want = skipped.train_step(), fresh.train_step()
            assert got is not None and abs(got["grad_norm"] - want["grad_norm"]) < 1e-6 * want["grad_norm"]
        a, b = (full_state_dict(t.engine, t.model, t.zero_stage) for t in (skipped, fresh))
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_fp16_loss_scale_overflows_are_skipped_even_under_the_stop_policy(tmp_path, monkeypatch):
    """DeepSpeed's scaler doubles the loss scale after each 1,000 clean steps until a gradient overflows, then
    halves it: with run.nonfinite=stop that routine probe ended a healthy fp16 run as a "non-finite gradient".
    The scale is set where that growth leads (2^17); fp16 on any CPU as in the loss-scale test above."""
    from deepspeed.accelerator import get_accelerator

    from tests.unit.test_token_data import make_cache
    from videotrain.engines import restored_env
    from videotrain.generator_task import GeneratorTrainConfig, GeneratorTrainer

    make_cache(tmp_path / "cache", num_clips=16, shard_size=8)
    monkeypatch.setattr(type(get_accelerator()), "is_fp16_supported", lambda self: True)
    cfg = build_config(GeneratorTrainConfig, [], [*TINY_GEN, "run.precision=fp16", "run.zero_stage=1",
                       "run.nonfinite=stop", "run.max_nonfinite=30", f"data.cache={tmp_path / 'cache'}"])  # fmt: skip
    with restored_env():
        trainer = GeneratorTrainer(cfg, tmp_path / "run")
        trainer.engine.optimizer.loss_scaler.cur_scale = 2.0**40  # every gradient overflows fp16 at this scale
        results = [trainer.train_step() for _ in range(30)]
    assert results[0] is None and trainer.step >= 1 and results[-1] is not None  # skipped, scaled down, trained
