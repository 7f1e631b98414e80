"""tools/train.py says what its settings do to the held-out loss and the EMA: a split that holds no clip out wrote
``"eval_loss": NaN`` rows (not JSON) with no word why; resuming with EMA turned on was refused as if the checkpoint were
damaged; and a run too short for its EMA decay exported mostly the weights it started from, unsaid."""

import json

from tests.helpers.train_runs import losses, train_here


def _rows(out) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line, parse_constant=lambda name: 1 / 0) for line in lines]  # a bare NaN raises


def test_a_split_that_holds_no_clip_out_says_so_and_writes_no_eval_rows(train_data, tmp_path):
    out = tmp_path / "run"
    proc = train_here(
        train_data, out, "run.steps=2", "run.eval_every=1", "run.checkpoint_every=0", "data.eval_fraction=0.0"
    )
    assert "no held-out clips (data.eval_fraction=0 of 32 clips holds none out)" in proc.stderr
    rows = _rows(out)  # strict JSON: a bare NaN raises
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and not [r for r in rows if "loss" not in r]


def test_a_split_that_holds_out_far_more_than_asked_says_so(train_data, tmp_path):
    """Whole source videos are held out: 4% of 4 videos x 8 clips asks for 1 clip and gets a whole video, 8 of 32
    clips (25%), which the run must say (the training set shrank by a quarter)."""
    proc = train_here(train_data, tmp_path / "run", "run.steps=1", "run.eval_every=0", "run.checkpoint_every=0",
                      "data.eval_fraction=0.04")  # fmt: skip
    assert "data.eval_fraction=0.04 holds out 8 of 32 clips (25%): whole source videos are held out" in proc.stderr


def test_ema_turned_on_at_a_resume_starts_there_and_a_short_ema_is_named(train_data, tmp_path):
    out = tmp_path / "run"
    common = ("run.checkpoint_every=2", "run.eval_every=0")
    first = train_here(train_data, out, "run.steps=2", *common)
    assert "ema_decay" not in first.stderr and "EMA" not in first.stderr
    again = train_here(train_data, out, "run.steps=3", "run.ema_decay=0.5", *common)
    assert "holds no EMA weights: the average starts from its weights" in again.stderr
    assert "run.ema_decay: 0.0 -> 0.5" in again.stderr
    assert "run.ema_decay=0.5 over run.steps=3: the exported average keeps 12% of the weights" in again.stderr
    assert sorted(losses(out)) == [1, 2, 3] and (out / "export" / "model.safetensors").is_file()


def test_a_time_budget_that_ends_the_run_early_is_a_warning_naming_the_step(train_data, tmp_path):
    """The quickstart stopped on its 3-minute budget at step 12 of 3,000 on a busy machine, inside the warm-up, with
    only an info line: its tokenizer reconstructed colour blobs, and the run still looked finished."""
    proc = train_here(train_data, tmp_path / "run", "run.steps=50", "run.max_minutes=0.0001", "run.eval_every=0",
                      "run.checkpoint_every=0", "optim.warmup_steps=20")  # fmt: skip
    said = [line for line in proc.stderr.splitlines() if "time budget" in line]
    assert len(said) == 1 and " W " in said[0], proc.stderr[-2000:]
    assert "time budget of 0.0001 min reached at step 1 of 50 (run.steps)" in said[0]
    assert "inside its warm-up" in said[0]
