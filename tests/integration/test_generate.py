"""generate.py (tools/generate.py, pipelines.generate) and VideoPipeline end to end on a tiny random pipeline."""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from core.video_io import read_video
from generator.sampling import SamplingConfig
from pipelines import VideoPipeline
from pipelines.generate import generate_to_files, parse_label
from tools.generate import main

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, cwd=None):
    """``python generate.py ARGS`` in a fresh process, as a user runs it (the package is installed, no PYTHONPATH).
    With one OpenMP thread: the tests run two at a time on 2 cores."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "generate.py"), *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


@pytest.mark.parametrize("mode,order", [("maskgit", "clip"), ("maskgit", "frame"), ("ar", "cube")])
def test_cli_writes_a_readable_mp4(model_dir, tmp_path, mode, order):
    out = tmp_path / "v.mp4"
    rc = main(
        [
            "--model",
            str(model_dir),
            "--prompt",
            "a red circle moving left",
            "--mode",
            mode,
            "--order",
            order,
            "--out",
            str(out),
            "--quiet",
            *(["--steps", "3"] if mode == "maskgit" else []),
        ]
    )
    assert rc == 0
    frames = read_video(out)
    assert frames.shape == (9, 32, 32, 3)
    assert (tmp_path / "v.png").is_file()


@pytest.mark.parametrize("mode", ["maskgit", "ar"])
def test_bfloat16_runs_and_stays_close_to_float32(model_dir, tmp_path, mode):
    """--dtype bfloat16 runs the whole pipeline in bf16; its generator logits and decoded pixels stay within
    bf16's precision of fp32's on the same input (sampled tokens may differ: a random model's logits are flat)."""
    common = ["--model", str(model_dir), "--prompt", "a red circle moving left", "--mode", mode, "--quiet",
              *(["--steps", "3"] if mode == "maskgit" else [])]  # fmt: skip
    assert main([*common, "--dtype", "bfloat16", "--out", str(tmp_path / "b.mp4")]) == 0
    assert read_video(tmp_path / "b.mp4").shape == (9, 32, 32, 3)
    pipe = VideoPipeline.from_pretrained(model_dir)
    ids = torch.randint(0, pipe.tokenizer.quantizer.codebook_size, (1, 3, 4, 4))
    cond = pipe.condition(pipe.generators[mode], "a red circle moving left", None, 1)
    gen = pipe.generators[mode]
    coords = torch.stack(torch.meshgrid(*[torch.arange(n) for n in (3, 4, 4)], indexing="ij"), -1).reshape(-1, 3)
    kw = dict(coords=coords, mask=torch.ones(48, 48, dtype=torch.bool))
    if gen.config.target_positions:
        kw["targets"] = coords
    logits32, pixels32 = gen(ids.flatten(1), cond, **kw).float(), pipe.tokenizer.decode(ids)
    pipe.to("cpu", torch.bfloat16)
    logits16, pixels16 = gen(ids.flatten(1), cond, **kw).float(), pipe.tokenizer.decode(ids)
    assert next(gen.parameters()).dtype == torch.bfloat16 and pixels16.dtype == torch.float32
    assert (logits16 - logits32).abs().max() < 0.05 * logits32.abs().max() + 0.05
    assert (pixels16 - pixels32).abs().mean() < 0.02


def test_same_seed_same_frames_and_labels_work(model_dir):
    pipe = VideoPipeline.from_pretrained(model_dir)
    run = lambda seed: pipe("a blue square moving up", generator=torch.Generator().manual_seed(seed))
    a, b, c = run(3), run(3), run(4)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (1, 9, 32, 32, 3) and a.fps == 8
    assert np.array_equal(a.frames, b.frames) and torch.equal(a.ids, b.ids)
    assert not torch.equal(a.ids, c.ids)
    out = pipe(labels=[0, 2], mode="ar", order="frame", generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (2, 9, 32, 32, 3) and out.ids.shape == (2, 3, 4, 4)
    assert set(out.timings) == {"sampling", "decoding", "encoding"} and out.timings["encoding"] == 0


def test_long_video_window_by_window(model_dir, tmp_path):
    out = tmp_path / "long.mp4"
    assert (
        main(
            [
                "--model",
                str(model_dir),
                "--num-frames",
                "21",
                "--mode",
                "maskgit",
                "--order",
                "frame",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert read_video(out).shape[0] == 21


def test_several_videos_go_to_a_directory(model_dir, tmp_path):
    many = tmp_path / "many"
    proc = run_cli("--model", str(model_dir), "--label", "1", "--num-videos", "2", "--out", str(many), "--quiet")
    assert proc.returncode == 0, proc.stderr
    names = ["video_000.mp4", "video_000.png", "video_001.mp4", "video_001.png"]
    assert sorted(p.name for p in many.iterdir()) == names
    assert "sampling" in proc.stdout and "decoding" in proc.stdout


def _one_error_line(proc, needle):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in proc.stderr, proc.stderr


def _refused(capsys, args, needle):
    """``main(args)`` in process: exit 2 with one error line containing ``needle``."""
    rc = main(list(args))
    _one_error_line(subprocess.CompletedProcess(args, rc, "", capsys.readouterr().err), needle)


def test_bad_inputs_exit_2_with_one_line_and_no_file(model_dir, tmp_path, capsys):
    """Each refused input: exit 2, one "error:" line, no traceback, no file. The CLI function runs in process
    for most cases (the same ``run_cli`` wrapper); real processes cover the exit code and a missing model."""
    out = tmp_path / "x.mp4"
    base = ["--model", str(model_dir), "--out", str(out), "--quiet"]
    cases = [
        ((*base, "--prompt", ""), "prompt is empty"),
        ((*base, "--prompt", " ".join(["red circle"] * 40)), "more than max_length=48"),
        ((*base, "--label", "7"), "unknown class 7"),
        ((*base, "--label", "purple star"), "unknown class 'purple star'"),
        ((*base, "--num-frames", "8"), "num_frames=8 is not reachable"),
        ((*base, "--prompt", "a", "--prompt", "b"), "give --segment-frames"),
        ((*base, "--mode", "ar", "--order", "clip"), "supports orders"),
        ((*base, "--context-temperature", "-1"), "context_temperature must be >= 0, got -1.0"),
        ((*base, "--context-choice-temperature", "-1"), "context_choice_temperature must be >= 0, got -1.0"),
        # GPT-style decoding would take these and ignore them: videos that no setting changed
        ((*base, "--mode", "ar", "--steps", "4"), "steps: only MaskGIT-style decoding reads it, and mode 'ar'"),
        ((*base, "--mode", "ar", "--choice-temperature", "1"), "choice_temperature: only MaskGIT-style decoding"),
        (
            (*base, "--mode", "maskgit", "--first-frame-candidates", "4"),
            "first_frame_candidates: only GPT-style decoding reads it, and mode 'maskgit' is MaskGIT-style",
        ),
        ((*base, "--first-frame-candidates", "0"), "first_frame_candidates must be in [1, 16], got 0"),
    ]
    for args, needle in cases:
        _refused(capsys, args, needle)
    processes = [
        ((*base, "--prompt", "   "), "prompt is empty"),
        (("--model", str(tmp_path / "missing"), "--out", str(out)), "does not exist"),
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:  # independent processes: two at a time on two cores
        procs = list(pool.map(lambda case: run_cli(*case[0]), processes))
    for proc, (_, needle) in zip(procs, processes):
        _one_error_line(proc, needle)
    assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    _refused(capsys, ["--model", str(model_dir), "--out", str(blocker / "v.mp4")], "is not a directory")
    assert list(tmp_path.iterdir()) == [blocker]
    if Path("/proc/self").is_dir():  # writable by permission bits (as root), yet no file can be made there
        assert main(["--model", str(model_dir), "--out", "/proc/v.mp4"]) == 2
        err = capsys.readouterr().err
        _one_error_line(subprocess.CompletedProcess([], 2, "", err), "cannot write to '/proc'")
        assert "sampling" not in err  # refused before any work


def test_corrupt_model_directory(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in model_dir.rglob("*"):
        if p.is_file():
            dst = bad / p.relative_to(model_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(p.read_bytes())
    (bad / "generator_maskgit" / "model.safetensors").write_bytes(b"\x00" * 100)
    _refused(capsys, ["--model", str(bad), "--out", str(tmp_path / "v.mp4")], "not a readable safetensors")
    cfg = yaml.safe_load((bad / "generator_ar" / "config.yaml").read_text())
    cfg["depth"] = 3
    (bad / "generator_ar" / "config.yaml").write_text(yaml.safe_dump(cfg))
    weights = "generator_maskgit/model.safetensors"
    (bad / weights).write_bytes((model_dir / weights).read_bytes())
    _refused(capsys, ["--model", str(bad), "--out", str(tmp_path / "v.mp4")], "missing keys")
    (bad / "pipeline.yaml").write_text("generators: {ar: generator_ar}\nbogus_key: 1\n")
    _refused(capsys, ["--model", str(bad), "--out", str(tmp_path / "v.mp4")], "unknown key")
    assert not (tmp_path / "v.mp4").exists()


def test_a_text_length_the_generator_was_not_trained_on_is_refused_at_load(model_dir, tmp_path, capsys):
    """Raising the pipeline's text_encoder.max_length (as the too-long-prompt error advised) loaded fine, and then
    every prompt failed on a feature shape. The pipeline now refuses it when it loads, naming the trained length."""
    import shutil

    bad = tmp_path / "longer"
    shutil.copytree(model_dir, bad)
    cfg = yaml.safe_load((bad / "pipeline.yaml").read_text())
    cfg["text_encoder"]["max_length"] = 64
    (bad / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="trained on 48 of width 32: set text_encoder.max_length to 48"):
        VideoPipeline.from_pretrained(bad)
    _refused(capsys, ["--model", str(bad), "--out", str(tmp_path / "v.mp4")], "set text_encoder.max_length to 48")
    assert not (tmp_path / "v.mp4").exists()


def test_an_unconditional_generator_refuses_prompts_and_labels_saying_so(model_dir):
    """A generator with cond "none" given labels=0 was told it "takes labels, not prompts"."""
    from dataclasses import replace

    from generator import Generator

    pipe = VideoPipeline.from_pretrained(model_dir)
    gen = Generator(replace(pipe.generators["maskgit"].config, cond="none")).eval()
    config = replace(pipe.config, generators={"maskgit": "generator_maskgit"}, default_mode="maskgit", sampling={})
    bare = VideoPipeline(pipe.tokenizer, {"maskgit": gen}, None, replace(config, text_encoder=None))
    for kw in ({"labels": 0}, {"prompt": "a red circle moving left"}):
        with pytest.raises(ValueError, match="is unconditional: it takes neither prompts nor labels"):
            bare(num_frames=5, **kw)
    assert bare(num_frames=5, generator=torch.Generator().manual_seed(0)).frames.shape[1] == 5


def test_pipeline_defaults_that_cannot_work_are_refused_when_it_is_built(model_dir):
    """A default mode the pipeline lacks, a default order under a mistyped mode, fps 0 and a default length the
    tokenizer cannot make were all accepted: every call without --mode failed, the server did not start (a
    KeyError), the typo was ignored, and fps 0 failed only when the video was written, after sampling."""
    from dataclasses import replace

    from pipelines import PipelineConfig

    pipe = VideoPipeline.from_pretrained(model_dir)
    ar_only = {"ar": pipe.generators["ar"]}
    config = replace(pipe.config, generators={"ar": "generator_ar"}, default_mode="ar", sampling={})
    VideoPipeline(pipe.tokenizer, ar_only, pipe.text_encoder, config)  # the consistent one is fine
    for change, message in [
        ({"default_mode": "maskgit"}, "default_mode 'maskgit' is not one of this pipeline's modes"),
        ({"default_orders": {"a_r": "frame"}}, "default_orders a_r: frame names no mode/order"),
        ({"default_orders": {"ar": "clip"}}, "default_orders ar: clip names no mode/order"),
        ({"num_frames": 4}, "num_frames=4 is not reachable"),
    ]:
        with pytest.raises(ValueError, match=message):
            VideoPipeline(pipe.tokenizer, ar_only, pipe.text_encoder, replace(config, **change))
    for change, message in [({"fps": 0.0}, r"fps must be a number in \[0.01, 1000\]"), ({"num_frames": 0}, ">= 1")]:
        with pytest.raises(ValueError, match=message):
            PipelineConfig(**{**{"generators": {"ar": "generator_ar"}}, **change})


def test_library_call_writes_files_and_names_labels(model_dir, tmp_path):
    made = generate_to_files(
        label="1", out=tmp_path / "v.gif", model=model_dir, sampling={"steps": 2, "top_k": None}, progress=False
    )
    assert made.label == 1 and made.written == [tmp_path / "v.gif", tmp_path / "v.png"]
    assert read_video(tmp_path / "v.gif").shape == made.output.frames.shape[1:]
    assert parse_label("Blue Square", ["red circle", "blue square"]) == 1
    with pytest.raises(ValueError, match="unknown sampling setting"):
        generate_to_files(out=tmp_path / "w.mp4", model=model_dir, sampling={"stepz": 2})


def test_a_given_temperature_applies_after_context_too_unless_a_context_temperature_is_given(model_dir):
    """--temperature alone must not be overridden after --image/--video by the model's context_temperature."""
    pipe = VideoPipeline.from_pretrained(model_dir)
    pipe.config.sampling["ar"] = SamplingConfig(temperature=0.7, context_temperature=0.3)
    assert pipe.spec.sampling_for("ar", "frame").for_context().temperature == 0.3  # the model's setting after context
    assert pipe.spec.sampling_for("ar", "frame", {"temperature": 0.9}).for_context().temperature == 0.9
    both = pipe.spec.sampling_for("ar", "frame", {"temperature": 0.9, "context_temperature": 0.1})
    assert (both.temperature, both.for_context().temperature) == (0.9, 0.1)
    assert pipe.spec.sampling_for("ar", "frame", {"cfg_scale": 3.0, "temperature": None}).context_temperature == 0.3


def test_a_given_choice_temperature_applies_after_context_too_unless_a_context_one_is_given(model_dir):
    """An evaluation's --choice-temperature alone must not be overridden after context by the model's
    context_choice_temperature (a selection run would then measure the model's setting, not the one given)."""
    pipe = VideoPipeline.from_pretrained(model_dir)
    pipe.config.sampling["ar"] = SamplingConfig(choice_temperature=4.5, context_choice_temperature=1.0)
    assert pipe.spec.sampling_for("ar", "frame").for_context().choice_temperature == 1.0
    assert pipe.spec.sampling_for("ar", "frame", {"choice_temperature": 2.0}).for_context().choice_temperature == 2.0
    both = pipe.spec.sampling_for("ar", "frame", {"choice_temperature": 2.0, "context_choice_temperature": 0.0})
    assert (both.choice_temperature, both.for_context().choice_temperature) == (2.0, 0.0)
    kept = pipe.spec.sampling_for("ar", "frame", {"temperature": 0.9}).for_context()
    assert (kept.temperature, kept.choice_temperature) == (0.9, 1.0)  # a temperature leaves the choice setting


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((), (4.5, 1.0)),  # the model's: 1.0 after given frames
        (("--choice-temperature", "2"), (2.0, 2.0)),  # given alone: after context too
        (("--choice-temperature", "2", "--context-choice-temperature", "0.5"), (2.0, 0.5)),
        (("--context-choice-temperature", "0"), (4.5, 0.0)),
    ],
)
def test_the_choice_temperature_flags_are_what_maskgit_samples_with(model_dir, tmp_path, monkeypatch, flags, expected):
    """generate.py had no option for MaskGIT's choice noise (the evaluation and pipeline.yaml set it): expected is
    (the choice temperature, the one after given frames) of the settings the video was sampled with."""
    import shutil

    import tools.generate as cli

    model = shutil.copytree(model_dir, tmp_path / "model")
    config = yaml.safe_load((model / "pipeline.yaml").read_text())
    config["sampling"]["maskgit"]["context_choice_temperature"] = 1.0
    (model / "pipeline.yaml").write_text(yaml.safe_dump(config))
    used = []
    real = cli.generate_to_files
    monkeypatch.setattr(cli, "generate_to_files", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    args = ["--model", str(model), "--mode", "maskgit", "--order", "frame", "--steps", "2", "--quiet", "--out",
            str(tmp_path / "v.mp4"), *flags]  # fmt: skip
    assert main(args) == 0
    sampling = used[0].sampling
    assert (sampling.choice_temperature, sampling.for_context().choice_temperature) == expected


def test_an_order_with_its_own_settings_samples_with_them_and_other_orders_keep_the_modes(model_dir, monkeypatch):
    """A "maskgit/clip" entry is what clip order samples with; frame order keeps the "maskgit" entry."""
    import pipelines.video as video

    pipe = VideoPipeline.from_pretrained(model_dir)
    config = pipe.config
    pipe.config = replace_sampling(config, {"maskgit/clip": SamplingConfig(steps=7, cfg_scale=2.0)})
    assert pipe.spec.sampling_for("maskgit", "clip").steps == 7
    assert pipe.spec.sampling_for("maskgit", "frame").steps == 4  # the mode's own
    assert pipe.spec.sampling_for("maskgit", "clip", {"steps": 2}).steps == 2  # an override still wins
    used = []
    real = video.sample_maskgit
    monkeypatch.setattr(video, "sample_maskgit", lambda *a, **k: used.append(k["sampling"].steps) or real(*a, **k))
    for order in ("clip", "frame"):
        pipe(labels=1, mode="maskgit", order=order, num_frames=1, generator=torch.Generator().manual_seed(0))
    assert used == [7, 4]
    for bad in ("maskgit/diagonal", "video", "ar/clip"):  # ar has no clip order
        with pytest.raises(ValueError, match="name no mode or mode/order"):
            VideoPipeline(pipe.tokenizer, pipe.generators, pipe.text_encoder,
                          replace_sampling(config, {bad: SamplingConfig()}))  # fmt: skip


def test_first_frame_candidates_act_on_a_drawn_first_frame_of_a_gpt_style_mode_only(model_dir):
    """A pipeline.yaml entry with candidates changes what a prompt gives, not what continues given frames (the
    first frame is given), and a MaskGIT-style entry with them is refused at load, as the CLI refuses the flag."""
    pipe = VideoPipeline.from_pretrained(model_dir)
    base = pipe.config.sampling_for("ar", "frame")
    frame = {"mode": "ar", "order": "frame"}
    clip = pipe("a red circle moving left", **frame, generator=torch.Generator().manual_seed(0))
    runs = {}
    for k in (1, 3):
        pipe.config = replace_sampling(pipe.config, {"ar/frame": replace(base, first_frame_candidates=k)})
        prompt = pipe("a red circle moving left", **frame, generator=torch.Generator().manual_seed(1))
        video = pipe(video=clip.frames[0], context_frames=5, **frame, generator=torch.Generator().manual_seed(2))
        runs[k] = (prompt, video)
    assert not np.array_equal(runs[1][0].frames, runs[3][0].frames)
    assert np.array_equal(runs[1][1].frames, runs[3][1].frames)
    with pytest.raises(ValueError, match="'maskgit': first_frame_candidates is GPT-style only"):
        VideoPipeline(pipe.tokenizer, pipe.generators, pipe.text_encoder,
                      replace_sampling(pipe.config, {"maskgit": SamplingConfig(first_frame_candidates=2)}))  # fmt: skip


def replace_sampling(config, extra):
    from dataclasses import replace

    return replace(config, sampling={**config.sampling, **extra})


def test_help_and_bad_flags_from_any_folder(tmp_path, capsys):
    with ThreadPoolExecutor(max_workers=2) as pool:  # two real processes started in another folder
        helped, bad = pool.map(lambda args: run_cli(*args, cwd=tmp_path), [("--help",), ("--steps", "many")])
    assert helped.returncode == 0 and "--prompt" in helped.stdout
    _one_error_line(bad, "invalid int value")
    _refused(capsys, ["--num-videos", "0"], "--num-videos must be >= 1")
    _refused(capsys, ["--device", "tpu9"], "unknown device 'tpu9'")
    _refused(capsys, ["--device", "mps"], "unknown device 'mps'")  # a traceback after the model loaded
    _refused(capsys, ["--seed", str(10**20)], "--seed must be an integer in [0, 2**63)")  # an overflow, unnamed


@pytest.mark.parametrize("entry", ["tools.generate", "generate"])
def test_the_cli_imports_with_the_gc_frozen(entry, tmp_path):
    """generate.py imported torch and the pipeline with the collector off and then froze them (~0.3 s of a run on
    2 cores), but the installed tokvid-generate imports tools.generate directly and skipped that."""
    root = Path(__file__).resolve().parents[2]
    # the [project.scripts] line, read without tomllib (Python 3.11+; the project supports 3.10)
    assert re.search(r'^tokvid-generate = "tools\.generate:main"$', (root / "pyproject.toml").read_text(), re.M)
    code = f"import gc, {entry}; print(gc.isenabled(), gc.get_freeze_count())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    enabled, frozen = proc.stdout.split()
    assert enabled == "True" and int(frozen) > 50_000, proc.stdout
