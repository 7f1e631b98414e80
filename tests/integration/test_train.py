"""tools/train.py with DeepSpeed on CPU: the loss goes down and the outputs are written, held-out loss, starting
from exported weights, and the checks of the cache, labels, text encoder and run folder before a run starts.

Resuming: test_train_resume.py; NaN and fp16 safety: test_train_nonfinite.py; several processes:
test_train_distributed.py. ``train_data`` is the tiny cache of tests/integration/conftest.py."""

import json
import shutil

import pytest
import torch

from core.config import build_config
from generator import Generator
from tests.helpers.train_runs import CFG, ROOT, losses, train, train_here
from tokenizer import TokenizerConfig, VideoTokenizer


def test_loss_decreases_and_outputs_exist(train_data, tmp_path):
    out = tmp_path / "run"
    train_here(train_data, out, "run.steps=30", "run.sample_every=30", "run.ema_decay=0.9")
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


def test_the_held_out_loss_is_measured_without_condition_dropout(train_data, tmp_path):
    """The eval loss ran the training objective: with objective.cond_dropout 0.9 most held-out rows were scored
    against the null condition. With lr 0 (identical weights) it must not depend on the dropout setting."""
    common = ["run.steps=2", "run.eval_every=2", "run.checkpoint_every=0", "optim.lr=0", "optim.warmup_steps=0"]
    for name, p in (("none", "0.0"), ("most", "0.9")):
        train_here(
            train_data, tmp_path / name, *common, f"objective.cond_dropout={p}", "objective.context_mask_ratio=0.0"
        )
    assert losses(tmp_path / "none", "eval_loss")[2] == losses(tmp_path / "most", "eval_loss")[2]


def test_mismatched_cache_is_refused(train_data, tmp_path):
    torch.manual_seed(1)
    VideoTokenizer(build_config(TokenizerConfig, [ROOT / "configs/tiny/tokenizer.yaml"])).save_pretrained(
        tmp_path / "other"
    )
    a = train_here(train_data, tmp_path / "a", f"data.tokenizer={tmp_path / 'other'}", check=False)
    b = train_here(train_data, tmp_path / "b", "model.vocab_size=128", check=False)
    c = train_here(train_data, tmp_path / "c", "model.max_grid=[3, 2, 2]", "model.orders=[clip]", check=False)
    assert a.returncode == 2 and "was made by tokenizer" in a.stderr and "Traceback" not in a.stderr
    assert b.returncode == 2 and "codebook size 64" in b.stderr
    assert c.returncode == 2 and "larger than the model's maximum" in c.stderr


def test_labels_are_checked_in_every_clip_and_a_small_cache_still_gives_samples(train_data, tmp_path):
    """A bad label in clip 79 of 80 is refused before training (only the first 64 were checked: the run failed when
    it drew that clip); run.num_samples above the cache size writes one sample per clip instead of failing."""
    from tests.unit.test_token_data import make_cache

    make_cache(tmp_path / "labels", num_clips=80, shard_size=16, codebook_size=64, label=lambda i: 5 if i == 79 else 0)
    bad = train_here(train_data, tmp_path / "a", f"data.cache={tmp_path / 'labels'}", "data.tokenizer=", check=False)
    train_here(train_data, tmp_path / "b", "run.steps=1", "run.sample_every=1", "run.num_samples=40",
               "run.eval_every=0", "run.checkpoint_every=0")  # fmt: skip
    assert bad.returncode == 2 and "cache labels span 0..5" in bad.stderr and "Traceback" not in bad.stderr
    assert len(list((tmp_path / "b" / "samples").rglob("*.mp4"))) == 32  # every clip of the 32-clip cache


def test_init_from_starts_from_exported_weights_across_styles(train_data, tmp_path):
    from safetensors.torch import load_file

    train_here(train_data, tmp_path / "a", "run.steps=1", "run.eval_every=0")
    src = tmp_path / "a" / "export"
    # lr 0: the run changes nothing, so its export must equal the weights it started from,
    # even as the other style.
    # A GPT-style model with target-position tables starts from weights without them (fresh tables), and a
    # MaskGIT-style model starts from it (the tables are left out).
    lr0 = ("run.steps=1", "run.eval_every=0", "optim.lr=0")
    train_here(train_data, tmp_path / "b", *lr0, "model.style=ar", "model.orders=[frame]", f"run.init_from={src}")
    proc = train_here(train_data, tmp_path / "c", "run.steps=1", "model.depth=1", f"run.init_from={src}", check=False)
    train_here(train_data, tmp_path / "d", *lr0, "model.style=ar", "model.orders=[frame,cube]",
               "model.cube_size=[1,2,2]", "model.target_positions=true", f"run.init_from={src}")  # fmt: skip
    a, b = load_file(src / "model.safetensors"), load_file(tmp_path / "b" / "export" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert Generator.from_pretrained(tmp_path / "b" / "export").config.style == "ar"
    assert proc.returncode == 2 and "has another architecture (depth" in proc.stderr and "Traceback" not in proc.stderr
    d = load_file(tmp_path / "d" / "export" / "model.safetensors")
    assert {k for k in d if not k.startswith("target_emb.")} == a.keys() and all(torch.equal(a[k], d[k]) for k in a)
    assert any(k.startswith("target_emb.") for k in d)
    # a run that resumes from its own checkpoint ignores run.init_from: it resumed only while that folder existed
    shutil.rmtree(src)
    train_here(train_data, tmp_path / "e", *lr0, f"run.init_from={tmp_path / 'd' / 'export'}")
    train_here(train_data, tmp_path / "b", "run.steps=2", "run.eval_every=0", "optim.lr=0", "model.style=ar",
               "model.orders=[frame]", f"run.init_from={src}")  # fmt: skip
    e = load_file(tmp_path / "e" / "export" / "model.safetensors")
    assert e.keys() == a.keys() and all(torch.equal(a[k], e[k]) for k in a)


@pytest.mark.slow
def test_compiled_training_follows_eager(train_data, tmp_path):
    """run.compile: the inductor-compiled forward trains the same run as eager, loss for loss, within float
    tolerance (compiled kernels reorder sums: about 1e-6 relative per step, growing slowly over steps)."""
    common = ["run.steps=6", "run.checkpoint_every=0", "run.eval_every=0", "run.sample_every=0", "run.log_every=1"]
    train(train_data, tmp_path / "eager", *common)
    train(train_data, tmp_path / "compiled", *common, "run.compile=true")
    a, b = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert all(abs(a[s] - b[s]) <= 1e-3 * abs(a[s]) for s in a), (a, b)
    assert (
        train(train_data, tmp_path / "z3", *common, "run.compile=true", "run.zero_stage=3", check=False).returncode == 2
    )


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


def test_a_run_folder_without_a_checkpoint_is_not_reused(train_data, tmp_path):
    """A run with run.checkpoint_every=0 leaves only its export and metrics: a second run into the same --out (even
    one that loaded that export as run.init_from) overwrote the export and dropped the metrics, with exit 0."""
    out = tmp_path / "run"
    train_here(train_data, out, "run.steps=1", "run.checkpoint_every=0", "run.eval_every=0")
    exported = (out / "export" / "model.safetensors").read_bytes()
    again = train_here(train_data, out, "run.steps=1", f"run.init_from={out / 'export'}", check=False)
    assert again.returncode == 2 and "overlaps run.init_from" in again.stderr
    again = train_here(train_data, out, "run.steps=1", "model.depth=1", check=False)
    assert again.returncode == 2 and "holds an earlier run's export, metrics.jsonl and no checkpoint" in again.stderr
    assert (out / "export" / "model.safetensors").read_bytes() == exported


def test_samples_use_an_order_the_run_trains_and_cannot_be_asked_without_a_tokenizer(train_data, tmp_path):
    """With objective.orders=[clip] of model.orders=[frame, clip], the samples were drawn in frame order, which no
    batch trained; without data.tokenizer, run.sample_every was skipped in silence."""
    proc = train_here(train_data, tmp_path / "a", "run.steps=1", "objective.orders=[clip]", "run.sample_every=1",
                      "run.eval_every=0", "run.checkpoint_every=0")  # fmt: skip
    assert "(clip order)" in proc.stderr and "model.orders ['frame'] are not in objective.orders" in proc.stderr
    proc = train_here(train_data, tmp_path / "b", "run.steps=1", "run.sample_every=1", "data.tokenizer=", check=False)
    assert proc.returncode == 2 and "run.sample_every > 0 needs data.tokenizer" in proc.stderr


def test_the_tokenizer_is_read_once_for_the_probe_and_the_samples(train_data, tmp_path, monkeypatch):
    """``data.tokenizer`` was read twice: once for the export's probe ids, once more at the first sample."""
    import videotrain.generator_task as gt
    from videotrain.engines import restored_env

    reads, real = [], gt.VideoTokenizer.from_pretrained
    monkeypatch.setattr(gt.VideoTokenizer, "from_pretrained", lambda path: reads.append(path) or real(path))
    cfg = build_config(gt.GeneratorTrainConfig, [CFG], [
        f"data.cache={train_data / 'cache'}", f"data.tokenizer={train_data / 'tok'}", "run.steps=1",
        "run.sample_every=1", "run.checkpoint_every=0", "run.eval_every=0"])  # fmt: skip
    with restored_env():
        trainer = gt.GeneratorTrainer(cfg, tmp_path / "run")
        trainer.write_samples()
    assert reads == [str(train_data / "tok")]
    assert (tmp_path / "run" / "samples" / "step_00000000" / "contact_sheet.png").is_file()
