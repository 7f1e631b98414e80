"""tools/train.py resumes exactly: a kill, a kill during a save or before the first checkpoint, SIGTERM, bf16 and
ZeRO-3 runs, and a second run on a folder in training."""

import json
import shutil

import numpy as np
import pytest
import torch

from core.files import hold_lock, release_lock
from generator import Generator
from tests.helpers.train_runs import ROOT, losses, parallel, train, train_here

RESUMABLE = ["run.steps=8", "run.checkpoint_every=4", "run.deterministic=true", "run.eval_every=0"]


@pytest.fixture(scope="module")
def uninterrupted(train_data, tmp_path_factory):
    """step -> loss of an 8-step deterministic run that nothing interrupts."""
    out = tmp_path_factory.mktemp("uninterrupted") / "a"
    train(train_data, out, *RESUMABLE)
    return losses(out)


def test_kill_and_resume_equals_uninterrupted(train_data, tmp_path, uninterrupted):
    common = RESUMABLE
    proc = train(train_data, tmp_path / "b", *common, faults=["exit_at_step=6"], check=False)
    assert proc.returncode == 17
    assert max(losses(tmp_path / "b")) == 6
    train(train_data, tmp_path / "b", *common)  # resumes from step 4
    a, b = uninterrupted, losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert [a[s] for s in range(1, 9)] == [b[s] for s in range(1, 9)]  # bit-identical
    # steps 5 and 6, logged before the kill, are logged once: the resumed run's records replace them
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), steps
    # another seed draws another held-out split: clips the run trained on would become eval clips
    proc = train_here(train_data, tmp_path / "b", *common[1:], "run.steps=9", "run.seed=5", check=False)
    assert proc.returncode == 2 and "run.seed: 0 -> 5" in proc.stderr and "Traceback" not in proc.stderr
    # the held-out split and the data position index the cache's clips: another cache was resumed silently; a
    # copy of the same one (a moved folder) still resumes
    moved, other = tmp_path / "moved", tmp_path / "other"
    shutil.copytree(train_data / "cache", moved)
    shutil.copytree(train_data / "cache", other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:-1]
    manifest["num_shards"], manifest["num_clips"] = len(manifest["shards"]), 16
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert train_here(train_data, tmp_path / "b", *common, f"data.cache={moved}").returncode == 0
    proc = train_here(train_data, tmp_path / "b", *common, f"data.cache={other}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "was written on another token cache (32 clips" in proc.stderr and "(16 clips" in proc.stderr


def test_a_run_killed_before_its_first_checkpoint_starts_over(train_data, tmp_path, uninterrupted):
    """A run killed in its first checkpoint save (SIGKILL, a lost node) leaves metrics.jsonl and an incomplete
    checkpoint: rerunning the same command was refused ("holds an earlier run's metrics.jsonl"), so a rerun of
    scripts/train_shapes.sh stopped there. It now starts over and keeps the killed run's records aside."""
    out = tmp_path / "b"
    sampled = ["run.sample_every=2", "run.num_samples=1"]
    proc = train(train_data, out, *RESUMABLE, *sampled, faults=["exit_in_save=4"], check=False)
    assert proc.returncode == 17 and not (out / "export").exists()
    killed = (out / "metrics.jsonl").read_text()
    assert killed and (out / "checkpoints").is_dir() and (out / "samples" / "step_00000002").is_dir()
    train(train_data, out, *RESUMABLE)  # without samples this time
    assert losses(out) == uninterrupted  # started over: bit-identical to a run that nothing interrupted
    assert (out / "interrupted-1" / "metrics.jsonl").read_text() == killed
    assert (out / "interrupted-1" / "train_config.yaml").is_file()
    # its samples go with its records: left in place, they looked like the new run's
    assert not (out / "samples").exists() and (out / "interrupted-1" / "samples" / "step_00000002").is_dir()
    # a finished run's export is still never overwritten by a run with nothing to resume
    shutil.rmtree(out / "checkpoints")
    proc = train(train_data, out, *RESUMABLE, check=False)
    assert proc.returncode == 2 and "holds an earlier run's export, metrics.jsonl and no checkpoint" in proc.stderr


def test_a_second_run_on_a_folder_in_training_is_refused(train_data, tmp_path):
    """The same command started twice (a requeued job whose first copy still runs): the second took the first run,
    with metrics and no checkpoint yet, for one killed before its first checkpoint, moved its records into
    interrupted-1/ and exported over its weights; both exited 0. The first run holds the folder now."""
    out = tmp_path / "b"
    out.mkdir()
    held = hold_lock(out / ".train-rank-000.lock", "held")  # a run in training (rank 0), before its first checkpoint
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    try:
        proc = train(train_data, out, *RESUMABLE, check=False)
    finally:
        release_lock(held)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "another run is training in --out" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]  # nothing moved aside, nothing written
    train(train_data, out, "run.steps=2", "run.eval_every=0")  # let go: the folder can be trained in again
    assert (out / "export").is_dir() and not list(out.glob(".train-rank-*"))


def test_a_refused_run_leaves_no_folder_behind(train_data, tmp_path):
    out = tmp_path / "new"
    proc = train_here(train_data, out, "run.steps=2", "run.sample_every=2", "data.tokenizer=", check=False)
    assert proc.returncode == 2 and "run.sample_every > 0 needs data.tokenizer" in proc.stderr
    assert not out.exists()  # the folder made to hold the run's lock is gone again


def test_sigterm_saves_the_step_reached_and_resumes_exactly(train_data, tmp_path, uninterrupted):
    """A preempted run (SIGTERM between checkpoints) finishes its step, saves it, exits 143 with one line
    saying so, and resumes there; without the handler it would die and lose the steps after the last save."""
    common = RESUMABLE
    proc = train(train_data, tmp_path / "b", *common, faults=["sigterm_at_step=5"], check=False)
    assert proc.returncode == 128 + 15, proc.stderr[-3000:]
    assert "stopped by SIGTERM at step 6; checkpoint saved" in proc.stdout
    assert (tmp_path / "b" / "checkpoints" / "step_00000006" / "COMPLETE").is_file()
    assert "resumed from step_00000006 at step 6" in train(train_data, tmp_path / "b", *common).stderr
    a, b = uninterrupted, losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 9)) and all(a[s] == b[s] for s in a)


def test_bf16_trains_through_autocast_on_cpu_and_resumes_exactly(train_data, tmp_path):
    """precision bf16 on CPU: the loss falls, the weights stay fp32 (autocast computes in bf16), and a run
    killed after step 9 and resumed from step 8 equals the uninterrupted one."""
    common = ["run.precision=bf16", "run.steps=12", "run.checkpoint_every=4", "run.deterministic=true",
              "run.eval_every=0"]  # fmt: skip
    kill = ["exit_at_step=9"]
    _, killed = parallel(lambda: train(train_data, tmp_path / "a", *common),
                         lambda: train(train_data, tmp_path / "b", *common, faults=kill, check=False))  # fmt: skip
    assert killed.returncode == 17
    assert "resumed from step_00000008 at step 8" in train(train_data, tmp_path / "b", *common).stderr
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 13)) and all(a[s] == b[s] for s in a)
    assert np.mean([a[s] for s in (10, 11, 12)]) < np.mean([a[s] for s in (1, 2, 3)])
    from safetensors.torch import load_file

    exported = load_file(tmp_path / "a" / "export" / "model.safetensors")
    assert {t.dtype for t in exported.values()} == {torch.float32}  # DeepSpeed's bf16 mode would export bf16


def test_killed_during_save_resumes_from_previous_checkpoint(train_data, tmp_path):
    out = tmp_path / "run"
    common = ["run.steps=8", "run.checkpoint_every=4", "run.eval_every=0"]
    proc = train(train_data, out, *common, faults=["exit_in_save=8"], check=False)
    assert proc.returncode == 17
    assert not (out / "checkpoints" / "step_00000008" / "COMPLETE").exists()
    assert (out / "checkpoints" / "step_00000004" / "COMPLETE").is_file()
    proc = train(train_data, out, *common)
    assert "resumed from step_00000004 at step 4" in proc.stderr
    assert (out / "checkpoints" / "step_00000008" / "COMPLETE").is_file()


@pytest.mark.slow
def test_zero3_trains_and_resumes_exactly(train_data, tmp_path):
    """ZeRO-3 with the optimizer offloaded to the CPU (configs/deepspeed/zero3_offload.json): killed after step 3,
    the resumed run equals the uninterrupted one. Slow (~30 s); the default run builds and steps that JSON in
    tests/integration/test_deepspeed_configs.py."""
    common = ["run.steps=6", "run.checkpoint_every=2", "run.deterministic=true", "run.eval_every=0",
              f"run.deepspeed={ROOT / 'configs/deepspeed/zero3_offload.json'}"]  # fmt: skip
    kill = ["exit_at_step=3"]
    _, killed = parallel(lambda: train(train_data, tmp_path / "a", *common),
                         lambda: train(train_data, tmp_path / "b", *common, faults=kill, check=False))  # fmt: skip
    assert killed.returncode == 17
    proc = train(train_data, tmp_path / "b", *common)
    assert "resumed from step_00000002 at step 2" in proc.stderr
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 7)) and all(a[s] == b[s] for s in a)
    assert Generator.from_pretrained(tmp_path / "b" / "export").num_params() > 0  # ZeRO-3 shards gathered
