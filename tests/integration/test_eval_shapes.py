"""tools/eval_shapes.py and videoeval.adherence: request planning, scoring with the analyzer, and the report."""

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import videoeval.adherence as adherence
from tests.helpers.tiny_pipeline import make_tiny_pipeline
from tools.eval_shapes import main
from videodata.shapes.render import all_captions, label_of, render_clip, sample_spec
from videoeval.adherence import evaluate, plan
from videoeval.phrasings import FRESH_TEMPLATES
from videoeval.shapes_ceiling import ceiling_results
from videoeval.shapes_scoring import score, summarize


def test_plan_covers_all_classes_with_fresh_phrasings():
    rows = plan(216, seed=0)
    labels = [label_of(r["color"], r["shape"], r["motion"]) for r in rows]
    assert np.bincount(labels, minlength=72).tolist() == [3] * 72  # held-out combinations included
    for r in rows:
        assert r["color"] in r["caption"] and r["shape"] in r["caption"]
        assert r["caption"] not in all_captions(r["color"], r["shape"], r["motion"])
    used = {next(i for i, t in enumerate(FRESH_TEMPLATES) if _fits(t, r)) for r in rows}
    assert len(used) == len(FRESH_TEMPLATES)  # every fresh phrasing is used
    training = plan(72, seed=0, phrasing="training")
    assert all(r["caption"] in all_captions(r["color"], r["shape"], r["motion"]) for r in training)
    held = plan(6, seed=0, labels=[label_of("green", "triangle", "up")])
    assert {r["caption"] for r in held} and all(r["motion"] == "up" for r in held)


def _fits(template: str, row: dict) -> bool:
    import re

    pattern = re.escape(template).replace(r"\{color\}", row["color"]).replace(r"\{shape\}", row["shape"])
    pattern = pattern.replace(r"\{dir\}", r"[a-z ]+").replace(r"\{ward\}", r"[a-z]+")
    return re.fullmatch(pattern, row["caption"]) is not None


def test_score_on_rendered_clips():
    rng = np.random.default_rng(0)
    combos = [
        ("red", "circle", "left"),
        ("blue", "square", "up"),
        ("yellow", "triangle", "down"),
        ("cyan", "circle", "right"),
    ]
    frames = np.stack([render_clip(sample_spec(*c, rng)) for c in combos])
    rows = [{"caption": "", "color": c, "shape": s, "motion": m} for c, s, m in combos]
    good = summarize(score(frames, rows))
    assert good == {"n": 4, "all": 1.0, "color": 1.0, "shape": 1.0, "motion": 1.0, "phantom": 0.0, "hue_stable": 1.0}
    wrong = [dict(r, motion="up" if r["motion"] != "up" else "down") for r in rows]
    bad = summarize(score(frames, wrong))
    assert bad["motion"] == 0.0 and bad["all"] == 0.0 and bad["color"] == 1.0


def test_cli_writes_report(tmp_path):
    model = make_tiny_pipeline(tmp_path / "model")
    out = tmp_path / "report"
    rc = main(
        [
            "--model",
            str(model),
            "--num-videos",
            "4",
            "--holdout-videos",
            "2",
            "--holdout",
            "green triangle down",
            "--batch",
            "2",
            "--modes",
            "maskgit",
            "--steps",
            "2",
            "--recon-videos",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["summary"]) == {
        "tokenizer/reconstruction/all-classes", "maskgit/clip/all-classes", "maskgit/clip/held-out"
    }  # fmt: skip
    assert res["phrasing"] == "fresh" and len(list((out / "videos" / "maskgit_clip").glob("*.mp4"))) == 4
    assert res["summary"]["maskgit/clip/all-classes"]["n"] == 4
    assert res["summary"]["maskgit/clip/held-out"]["n"] == 2
    md = (out / "report.md").read_text()
    assert "| maskgit | clip | held-out | 2 |" in md and (out / "sheet_maskgit_clip.png").is_file()
    # the same --out again: the report was replaced and its videos stayed among the new run's, unlisted
    before = (out / "results.json").read_bytes()
    assert main(["--model", str(model), "--num-videos", "2", "--recon-videos", "0", "--out", str(out)]) == 2
    assert (out / "results.json").read_bytes() == before


def test_ceiling_scores_a_lossless_tokenizer_perfectly_and_a_blind_one_at_zero(tmp_path):
    class Identity(torch.nn.Module):  # encode/decode as a lossless tokenizer would
        device = torch.device("cpu")

        def encode(self, video):
            return video

        def decode(self, ids):
            return ids

    rows, extra, shown = ceiling_results(Identity(), tmp_path / "id", num_videos=12, seed=1, batch=5)
    s = summarize(rows)
    assert (s["n"], s["all"], s["phantom"], s["hue_stable"]) == (12, 1.0, 0.0, 1.0)
    assert extra["psnr"] == float("inf") and extra["hue_error"] < 3.0 and extra["square_corner"] > 0.8
    assert 30 < extra["psnr_mp4"] < 60  # the mp4 a user receives: H.264's own loss, the decoder's none
    assert len(list((tmp_path / "id").glob("*.mp4"))) == 12 and shown[0].shape == (17, 64, 64, 3)

    class Dark(Identity):  # loses everything: nothing can be detected
        def decode(self, ids):
            return ids * 0 - 1

    dark, extra, _ = ceiling_results(Dark(), tmp_path / "dark", num_videos=4, seed=1, batch=4)
    assert summarize(dark)["all"] == 0.0 and extra["psnr"] < 20
    assert math.isnan(extra["hue_error"])  # no colour read back: no worst-case hue error to report

    class LosesYellow(Identity):  # batch 1 holds the 12 red classes, batch 2 the 12 yellow ones: those go black
        batches = 0

        def decode(self, ids):
            self.batches += 1
            return ids if self.batches == 1 else ids * 0 - 1

    class Diverged(Identity):  # NaN was clamped, kept, and cast to black frames scored as the ceiling
        def decode(self, ids):
            return ids * float("nan")

    with pytest.raises(ValueError, match="NaN"):
        ceiling_results(Diverged(), tmp_path / "nan", num_videos=2, seed=1, batch=2)

    rows, extra, _ = ceiling_results(LosesYellow(), tmp_path / "y", num_videos=24, seed=1, batch=12)
    assert {r["color"] for r in rows} == {"red", "yellow"}
    assert math.isnan(extra["hue_error_yellow"]) and math.isnan(extra["hue_error"])  # max() kept red's 1-2 degrees
    with pytest.raises(ValueError, match="2 videos for 3 requests"):
        score(np.zeros((2, 17, 64, 64, 3), np.uint8), [{"color": "red", "shape": "circle", "motion": "up"}] * 3)


def test_phantoms_and_hue_drift_are_counted():
    rng = np.random.default_rng(3)
    clip = render_clip(sample_spec("red", "circle", "left", rng))
    row = [{"caption": "", "color": "red", "shape": "circle", "motion": "left"}]
    phantom = clip.copy()
    phantom[5, 2:6, 2:6] = (0, 0, 255)  # a blue speck of 16 px in one frame
    assert summarize(score(phantom[None], row))["phantom"] == 1.0
    drift = clip.copy()
    drift[9:, :, :, 2] = drift[9:, :, :, 0]  # the last 8 frames turn magenta (blue = red); gray stays gray
    assert summarize(score(clip[None], row))["hue_stable"] == 1.0
    assert summarize(score(drift[None], row))["hue_stable"] <= 9 / 17 + 1e-9


def test_evaluate_passes_its_sampling_settings_to_every_pipeline_call():
    from types import SimpleNamespace

    from generator.sampling import SamplingConfig

    seen = []

    class FakePipe:
        device = torch.device("cpu")

        def __call__(self, prompts, *, mode, order, sampling, generator):
            seen.append(sampling)
            return SimpleNamespace(frames=np.zeros((len(prompts), 17, 64, 64, 3), np.uint8))

    rows = [{"caption": "a red circle moving left", "color": "red", "shape": "circle", "motion": "left"}] * 3
    settings = SamplingConfig(temperature=0.5, cfg_scale=5.0)
    results, _ = evaluate(FakePipe(), "ar", "frame", rows, 2, 0, settings)
    assert seen == [settings, settings] and len(results) == 3 and results[0]["ok"] is False


def test_cli_passes_every_sampling_flag_as_an_override(tmp_path, monkeypatch):
    model = make_tiny_pipeline(tmp_path / "model")
    seen = []

    def fake_evaluate(pipe, mode, order, rows, batch, seed, sampling=None, folder=None):
        seen.append(sampling)
        return [], []

    monkeypatch.setattr(adherence, "evaluate", fake_evaluate)
    zero = {"n": 0, "all": 0, "color": 0, "shape": 0, "motion": 0, "phantom": 0, "hue_stable": 0}
    monkeypatch.setattr(adherence, "summarize", lambda results: zero)
    monkeypatch.setattr(adherence, "write_contact_sheet", lambda path, frames: None)
    rc = main(
        [
            "--model",
            str(model),
            "--num-videos",
            "2",
            "--holdout-videos",
            "0",
            "--holdout",
            "",
            "--modes",
            "maskgit",
            "--steps",
            "7",
            "--cfg",
            "2.5",
            "--temperature",
            "0.8",
            "--choice-temperature",
            "6",
            "--context-temperature",
            "0.4",
            "--top-k",
            "50",
            "--top-p",
            "0.9",
            "--mask-schedule",
            "linear",
            "--corrector-rounds",
            "3",
            "--corrector-fraction",
            "0.1",
            "--recon-videos",
            "0",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert rc == 0
    model_settings = adherence.VideoPipeline.from_pretrained(model).config.sampling["maskgit"]
    expected = replace(
        model_settings, steps=7, cfg_scale=2.5, temperature=0.8, choice_temperature=6.0, context_temperature=0.4,
        top_k=50, top_p=0.9, mask_schedule="linear", corrector_rounds=3, corrector_fraction=0.1,
    )  # fmt: skip
    assert expected != model_settings and seen == [expected]


def test_bad_sampling_or_order_fails_before_any_report_folder_is_made(tmp_path, capsys):
    """One error line, exit 2, and no half-made report folder, for the prompts and for the conditioning tasks."""
    model = make_tiny_pipeline(tmp_path / "model")
    capsys.readouterr()  # the tiny text encoder's save may draw progress bars (run alone, this test failed on them)
    base = ["--model", str(model), "--modes", "maskgit", "--recon-videos", "0", "--holdout-videos", "0"]
    cases = [
        (["--cfg", "-1"], "cfg_scale must be in [0, 100], got -1.0"),
        (["--top-p", "0"], "top_p must be in (0, 1], got 0.0"),
        (["--mask-schedule", "cosin"], "mask_schedule must be one of"),
        (["--tasks", "continuation", "--steps", "0"], "steps must be >= 1, got 0"),
        (["--orders", "clip,token"], "token"),  # the first order is valid: nothing is run before the check
        (["--tasks", "image", "--orders", "token"], "token"),
        (["--tasks", "prompts,image", "--conditioning-videos", "0"], "--conditioning-videos must be >= 1"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--device", "cuda:99"], "cuda:99"),  # no CUDA here, or no 100th GPU
        (["--seed", str(2**64)], "--seed must be in [0, 2**62]"),  # torch.Generator overflowed after files were written
    ]
    for i, (extra, message) in enumerate(cases):
        out = tmp_path / f"r{i}"
        assert main([*base, *extra, "--out", str(out)]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (extra, err)
        assert not out.exists(), extra


def test_zero_holdout_videos_leaves_the_held_out_row_out(tmp_path, capsys):
    model = make_tiny_pipeline(tmp_path / "model")
    out = tmp_path / "report"
    rc = main(
        [
            "--model",
            str(model),
            "--num-videos",
            "2",
            "--holdout-videos",
            "0",
            "--holdout",
            "green triangle down",
            "--batch",
            "2",
            "--modes",
            "maskgit",
            "--steps",
            "1",
            "--recon-videos",
            "0",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert set(json.loads((out / "results.json").read_text())["summary"]) == {"maskgit/clip/all-classes"}
    capsys.readouterr()
    assert main(["--model", str(model), "--holdout-videos", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err == (
        "error: --num-videos, --holdout-videos and --recon-videos must be >= 0 (0 skips them)\n"
    )
    nothing = ["--num-videos", "0", "--holdout-videos", "0", "--recon-videos", "0"]
    assert main(["--model", str(model), *nothing, "--out", str(tmp_path / "none")]) == 2
    assert "all 0: nothing to evaluate" in capsys.readouterr().err and not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [("[1, 2]", "must be a JSON list"), ("null", "must be a JSON list"), ('"green triangle up"', "must be a JSON list"),
     ('{"green triangle up": true}', "must be a JSON list"), ("not json", "is not valid JSON")],
)  # fmt: skip
def test_a_bad_holdout_file_is_one_error_naming_it(tmp_path, capsys, content, message):
    """``[1, 2]`` or ``null`` were TypeError tracebacks, a string was read letter by letter ("unknown holdout
    combination 'g'"), and a mapping was accepted as its keys."""
    model = make_tiny_pipeline(tmp_path / "model")
    (model / "holdout.json").write_text(content)
    assert main(["--model", str(model), "--num-videos", "2", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and "holdout.json" in err and "Traceback" not in err and not (tmp_path / "r").exists()


def test_held_out_videos_without_held_out_combinations_are_refused(tmp_path, capsys):
    """The row was dropped without a word: asked alone, the run wrote an empty report and exited 0."""
    model = make_tiny_pipeline(tmp_path / "model")
    args = ["--model", str(model), "--num-videos", "0", "--holdout-videos", "2", "--recon-videos", "0"]
    assert main([*args, "--holdout", "", "--out", str(tmp_path / "r")]) == 2
    assert "has no held-out combinations" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_zero_videos_leaves_the_all_classes_rows_out(tmp_path):
    """The held-out rows alone (re-measuring them need not redo the 216 videos of every order)."""
    model = make_tiny_pipeline(tmp_path / "model")
    out = tmp_path / "report"
    args = ["--model", str(model), "--num-videos", "0", "--holdout-videos", "2", "--holdout", "green triangle down",
            "--batch", "2", "--modes", "maskgit", "--steps", "1", "--recon-videos", "0", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert set(json.loads((out / "results.json").read_text())["summary"]) == {"maskgit/clip/held-out"}


def test_help_and_bad_input_from_any_folder(tmp_path):
    """`python tools/eval_shapes.py` runs as an installed script: --help, and one error line for bad input."""
    script = [sys.executable, str(Path(adherence.__file__).parents[1] / "tools" / "eval_shapes.py")]
    proc = subprocess.run([*script, "--help"], cwd=tmp_path, check=False, capture_output=True, text=True)
    assert proc.returncode == 0 and "--holdout-videos" in proc.stdout
    proc = subprocess.run(
        [*script, "--out", str(tmp_path), "--batch", "x"], cwd=tmp_path, check=False, capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr == "error: argument --batch: invalid int value: 'x'\n"


def test_cli_seed_and_sampling_flags_reach_the_visual_conditioning_tasks(tmp_path, monkeypatch):
    """--seed and --cfg/--temperature/... drive the conditioning tasks too, not only the prompts."""
    import videoeval.conditioning_report as conditioning

    model = make_tiny_pipeline(tmp_path / "model")
    seen = []

    def fake_conditioning(pipe, mode, order, *, tasks, num_videos, batch, seed, sampling):
        seen.append((mode, seed, sampling))
        return {"image": {"n": 0}}, {"image": []}

    monkeypatch.setattr(conditioning, "evaluate_conditioning", fake_conditioning)
    args = ["--model", str(model), "--modes", "maskgit", "--tasks", "image", "--conditioning-videos", "1"]
    assert main([*args, "--seed", "5", "--cfg", "2.5", "--steps", "3", "--out", str(tmp_path / "r")]) == 0
    (mode, seed, sampling), defaults = seen[0], conditioning.VideoPipeline.from_pretrained(model).config.sampling
    assert (mode, seed) == ("maskgit", 5)
    assert (sampling.cfg_scale, sampling.steps) == (2.5, 3)
    assert sampling.temperature == defaults["maskgit"].temperature  # a flag not given keeps the model's setting
    assert "sampled with seed 5" in (tmp_path / "r" / "conditioning.md").read_text()
    assert main([*args, "--out", str(tmp_path / "d")]) == 0  # no --seed: the report seed, as for the prompts
    assert seen[1][1] == adherence.DEFAULT_SEED and seen[1][2] == defaults["maskgit"]


def test_prompts_and_conditioning_tasks_load_the_model_once(tmp_path, monkeypatch):
    """--tasks prompts,image: one VideoPipeline.from_pretrained for both (it loaded twice before)."""
    import videoeval.conditioning_report as conditioning

    model = make_tiny_pipeline(tmp_path / "model")
    loads, used = [], []
    real = adherence.VideoPipeline.from_pretrained.__func__

    def counting(cls, directory):
        loads.append(directory)
        return real(cls, directory)

    def fake_conditioning(pipe, mode, order, *, tasks, num_videos, batch, seed, sampling):
        used.append(pipe)
        return {"image": {"n": 0}}, {"image": []}

    monkeypatch.setattr(adherence.VideoPipeline, "from_pretrained", classmethod(counting))
    monkeypatch.setattr(conditioning, "evaluate_conditioning", fake_conditioning)
    real_evaluate = adherence.evaluate
    monkeypatch.setattr(
        adherence, "evaluate", lambda pipe, *a, **k: (used.append(pipe), real_evaluate(pipe, *a, **k))[1]
    )
    args = ["--model", str(model), "--modes", "maskgit", "--tasks", "prompts,image", "--conditioning-videos", "1"]
    args += ["--num-videos", "1", "--holdout-videos", "0", "--recon-videos", "0", "--steps", "2", "--batch", "1"]
    assert main([*args, "--out", str(tmp_path / "r")]) == 0
    assert len(loads) == 1 and len(used) == 2 and used[0] is used[1]
