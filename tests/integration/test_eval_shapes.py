"""tools/eval_shapes.py and videoeval.adherence: request planning, scoring with the analyzer, and the report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import videoeval.adherence as adherence
from tests.helpers.tiny_pipeline import make_tiny_pipeline
from tools.eval_shapes import main
from videodata.shapes.render import label_of, render_clip, sample_spec
from videoeval.adherence import evaluate, plan, reconstruction_results, score, summarize


def test_plan_is_balanced_and_skips_holdout():
    rows = plan(140, [("green", "triangle", "up"), ("red", "circle", "left")], seed=0)
    labels = [label_of(r["color"], r["shape"], r["motion"]) for r in rows]
    assert label_of("green", "triangle", "up") not in labels and label_of("red", "circle", "left") not in labels
    assert len(set(labels)) == 70 and np.bincount(labels, minlength=72).max() == 2
    assert all(r["color"] in r["caption"] and r["shape"] in r["caption"] for r in rows)


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
    assert good == {"n": 4, "all": 1.0, "color": 1.0, "shape": 1.0, "motion": 1.0}
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
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["summary"]) == {"maskgit/clip/in-distribution", "maskgit/clip/held-out"}
    assert res["summary"]["maskgit/clip/in-distribution"]["n"] == 4
    assert res["summary"]["maskgit/clip/held-out"]["n"] == 2
    md = (out / "report.md").read_text()
    assert "| maskgit | clip | held-out | 2 |" in md and (out / "sheet_maskgit_clip.png").is_file()


def test_reconstruction_check_scores_a_lossless_tokenizer_perfectly(tmp_path):
    from videodata.shapes.dataset import render_dataset

    render_dataset(tmp_path / "data", 6, seed=1, num_workers=1)

    class Identity:  # encode/decode as a lossless tokenizer would
        def encode(self, video):
            return video

        def decode(self, ids):
            return ids

    results, shown = reconstruction_results(Identity(), str(tmp_path / "data" / "manifest.jsonl"), 4, batch=3)
    assert summarize(results) == {"n": 4, "all": 1.0, "color": 1.0, "shape": 1.0, "motion": 1.0}
    assert len(shown) == 4 and shown[0].shape == (17, 64, 64, 3)

    class Dark(Identity):  # loses everything: nothing can be detected
        def decode(self, ids):
            return ids * 0 - 1

    dark, _ = reconstruction_results(Dark(), str(tmp_path / "data" / "manifest.jsonl"), 4, batch=4)
    assert summarize(dark)["all"] == 0.0


def test_sampling_overrides_reach_the_pipeline_and_skip_fields_a_mode_lacks():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class ArSampling:  # a GPT-style sampler's settings: no 'steps'
        temperature: float = 1.0
        cfg_scale: float = 3.0

    seen = []

    class FakePipe:
        class config:
            sampling = {"ar": ArSampling()}

        def __call__(self, prompts, *, mode, order, sampling, generator):
            seen.append(sampling)
            from types import SimpleNamespace

            return SimpleNamespace(frames=np.zeros((len(prompts), 17, 64, 64, 3), np.uint8))

    rows = [{"caption": "a red circle moving left", "color": "red", "shape": "circle", "motion": "left"}]
    overrides = {"steps": 24, "cfg_scale": 5.0, "temperature": None}
    results, _ = evaluate(FakePipe(), "ar", "frame", rows, 1, 0, overrides)
    assert seen == [ArSampling(temperature=1.0, cfg_scale=5.0)] and results[0]["ok"] is False


def test_cli_passes_every_sampling_flag_as_an_override(tmp_path, monkeypatch):
    model = make_tiny_pipeline(tmp_path / "model")
    seen = []

    def fake_evaluate(pipe, mode, order, rows, batch, seed, overrides=None):
        seen.append(overrides)
        return [], []

    monkeypatch.setattr(adherence, "evaluate", fake_evaluate)
    monkeypatch.setattr(adherence, "summarize", lambda results: {"n": 0, "all": 0, "color": 0, "shape": 0, "motion": 0})
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
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert rc == 0
    assert seen == [{"steps": 7, "cfg_scale": 2.5, "temperature": 0.8, "choice_temperature": 6.0}]


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
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert set(json.loads((out / "results.json").read_text())["summary"]) == {"maskgit/clip/in-distribution"}
    capsys.readouterr()
    assert main(["--model", str(model), "--holdout-videos", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err == "error: --holdout-videos must be >= 0 (0 skips the held-out combinations)\n"


def test_help_and_bad_input_from_any_folder(tmp_path):
    """`python tools/eval_shapes.py` runs as an installed script: --help, and one error line for bad input."""
    script = [sys.executable, str(Path(adherence.__file__).parents[1] / "tools" / "eval_shapes.py")]
    proc = subprocess.run([*script, "--help"], cwd=tmp_path, check=False, capture_output=True, text=True)
    assert proc.returncode == 0 and "--holdout-videos" in proc.stdout
    proc = subprocess.run(
        [*script, "--out", str(tmp_path), "--batch", "x"], cwd=tmp_path, check=False, capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr == "error: argument --batch: invalid int value: 'x'\n"
