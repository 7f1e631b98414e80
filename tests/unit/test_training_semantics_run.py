"""A training run's setup and outputs: config checks, weight decay groups, the DeepSpeed config, resume
checks, the run folder lock and the metrics log."""

import re

import pytest


def test_a_resumed_metrics_log_drops_the_killed_runs_unfinished_record(tmp_path):
    """A kill mid-write leaves a record without its newline; the resumed run's first record was glued onto it and the
    loss-curve plot at the end of every later run raised JSONDecodeError before the export."""
    import json

    from videotrain.outputs import MetricsLog

    first = MetricsLog(tmp_path, enabled=True)
    for step in (1, 2, 3):
        first.write(step, {"loss": 1.0 / step})
    first.file.write('{"step": 4, "lo')  # killed here
    first.file.close()
    resumed = MetricsLog(tmp_path, enabled=True, start_step=2)  # from the checkpoint of step 2
    for step in (3, 4):
        resumed.write(step, {"loss": 1.0 / step})
    resumed.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # step 3 of the killed run is logged again, not twice
    assert (tmp_path / "loss_curve.png").stat().st_size > 0


def test_a_non_finite_logged_value_is_a_warning_not_only_a_nan_in_the_file(tmp_path, caplog):
    """The training loss has its guard, but a held-out loss that overflowed went to metrics.jsonl as NaN and was left
    out of loss_curve.png, with nothing in the log."""
    from videotrain.outputs import MetricsLog

    metrics = MetricsLog(tmp_path, enabled=True)
    with caplog.at_level("WARNING", logger="videotrain.outputs"):
        metrics.write(10, {"eval_loss": 0.5})
        assert not caplog.records
        metrics.write(20, {"eval_loss": float("nan"), "other": float("inf"), "fine": 1.0})
    metrics.close()
    [record] = caplog.records
    assert record.getMessage().startswith("step 20: eval_loss, other not finite (written to metrics.jsonl as NaN")


def test_weight_decay_applies_to_linear_and_convolution_weights_only():
    """ "emb" in a parameter's path kept the linear text projections inside `cond_emb` from being decayed."""
    from generator import Generator, GeneratorConfig
    from videotrain.optim import OptimConfig, build_adamw

    m = Generator(GeneratorConfig(cond="text", text_pooled=True, dim=32, depth=1, num_heads=2, target_positions=True))
    opt = build_adamw(m, OptimConfig(weight_decay=0.05))
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    decayed = sorted(n for n, p in m.named_parameters() if decay[id(p)] > 0)
    assert "cond_emb.text_proj.0.weight" in decayed and "head.weight" in decayed
    assert not [n for n in decayed if "null" in n or "pos" in n or "tok_emb" in n or "target_emb" in n]
    assert not [n for n in decayed if n.endswith("bias") or "norm" in n] and len(decay) == len(list(m.parameters()))


@pytest.mark.parametrize(
    ("override", "message"),
    [("objective.cond_dropout=1.5", "objective.cond_dropout must be in [0, 1]"),
     ("objective.label_smoothing=-2", "objective.label_smoothing must be in [0, 1)"),
     ("objective.context_mask_ratio=4", "objective.context_mask_ratio must be in [0, 1)"),
     ("objective.mask_schedule=bogus", "objective.mask_schedule must be one of"),
     ("objective.orders=[nope]", "objective.orders: unknown order(s) ['nope']"),
     ("data.eval_fraction=7", "data.eval_fraction must be in [0, 1)")],
)  # fmt: skip
def test_generator_objective_and_data_settings_are_checked(override, message):
    """Each was accepted: label_smoothing -2 trained to exit 0 on a nonsense loss, eval_fraction 7 left one clip."""
    from core.config import build_config
    from videotrain.generator_task import GeneratorTrainConfig

    with pytest.raises(ValueError, match=re.escape(message)):
        build_config(GeneratorTrainConfig, [], [override])


def test_objective_orders_the_model_lacks_are_refused_before_the_engine(tmp_path):
    from core.config import build_config
    from videotrain.generator_task import GeneratorTrainConfig, GeneratorTrainer

    cfg = build_config(GeneratorTrainConfig, [], ["data.cache=x", "model.orders=[token]", "objective.orders=[cube]"])
    with pytest.raises(ValueError, match=re.escape("objective.orders ['cube'] are not among model.orders ['token']")):
        GeneratorTrainer(cfg, tmp_path / "run")


@pytest.mark.parametrize("text", ['{"zero_optimization": 2}', "[1, 2]"])
def test_a_deepspeed_json_that_is_not_an_engine_config_is_one_line(tmp_path, text):
    """An AttributeError / TypeError traceback inside the trainer before."""
    from videotrain.distributed import deepspeed_config

    (tmp_path / "ds.json").write_text(text)
    with pytest.raises(ValueError, match="must be a JSON object whose 'zero_optimization' is an object"):
        deepspeed_config(
            str(tmp_path / "ds.json"), micro_batch=1, grad_accum=1, grad_clip=0.0, precision="fp32", zero_stage=None
        )


def test_a_resumed_run_may_change_runtime_settings_but_not_the_model_or_the_split(tmp_path):
    from core.config import build_config, save_config
    from videotrain.checkpoint import check_resumable
    from videotrain.generator_task import GeneratorTrainConfig

    save_config(build_config(GeneratorTrainConfig, [], []), tmp_path / "train_config.yaml")
    keys = ("run.seed", "data.eval_fraction")
    for runtime in ("model.attention_backend=xformers", "model.activation_checkpointing=true", "run.steps=5000"):
        check_resumable(tmp_path, build_config(GeneratorTrainConfig, [], [runtime]), keys)  # another machine: fine
    for changed, shown in (("model.depth=2", "model.depth: 8 -> 2"), ("run.seed=3", "run.seed: 0 -> 3"),
                           ("data.eval_fraction=0.1", "data.eval_fraction: 0.02 -> 0.1")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(shown)):
            check_resumable(tmp_path, build_config(GeneratorTrainConfig, [], [changed]), keys)


@pytest.mark.parametrize("rank", ["-1", "one", "1.0"])
def test_a_run_folder_lock_refuses_a_rank_that_is_no_non_negative_integer_before_making_the_folder(
    tmp_path, rank, monkeypatch
):
    """RANK=-1 was taken as rank -1 (a '.train-rank--01.lock' file in a folder made for it) before the launch
    check refused it; the lock now reads RANK as init_distributed does, naming the variable."""
    from videotrain.outputs import RunFolderLock

    monkeypatch.setenv("RANK", rank)
    with pytest.raises(ValueError, match=f"RANK={rank!r} must be a non-negative integer"):
        RunFolderLock(tmp_path / "run")
    assert not (tmp_path / "run").exists()
