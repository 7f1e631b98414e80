"""scripts/train_shapes.sh, every command at a tiny scale: it must build a pipeline with the shipped model's
architecture and settings, evaluate it, and skip finished stages when run again.

The full build takes about 7.9 hours on 2 cores (models/shapes/MODEL_CARD.md); this run takes minutes and checks
what can break in the script itself: a wrong path, config or flag, stages that do not chain, a config that no
longer matches what ships.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from core.config import from_dict, load_yaml
from core.weights import load_config
from generator import GeneratorConfig
from pipelines import DEFAULT_MODEL_DIR, VideoPipeline
from pipelines.config import PipelineConfig
from tests.helpers.procs import run_group
from tokenizer import TokenizerConfig

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_shapes.sh"
TOKENIZER_STAGES = ("tok1", "tok2", "tok3", "tok4", "tok")
TRAININGS = (*TOKENIZER_STAGES, "ar", "maskgit", "ar_ft", "mg_ft")
TINY = {
    "NUM_CLIPS": "144",  # two per class; three classes are held out
    "TOKENIZER_CLIPS": "64",
    "TRAIN_OVERRIDES": "run.steps=2 run.micro_batch=2 run.checkpoint_every=0 run.eval_every=0 run.sample_every=0",
    "EVAL_ARGS": "--num-videos 2 --holdout-videos 1 --recon-videos 2 --conditioning-videos 1 --batch 2",
}


def _script(run: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUN": str(run), "OUT": str(out), "PYTHONPATH": str(ROOT), **TINY}
    env.pop("OMP_NUM_THREADS", None)
    return run_group(["bash", str(SCRIPT)], timeout=2400, env=env, cwd=ROOT)  # 13 min alone on the slower machine


def _log_tails(run: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(run.glob("*.log")))


@pytest.mark.slow
def test_train_shapes_script_builds_the_shipped_architecture_and_resumes(tmp_path):
    run, out = tmp_path / "run", tmp_path / "model"
    first = _script(run, out)
    assert first.returncode == 0, first.stderr[-3000:] + _log_tails(run)

    for stage in TOKENIZER_STAGES:
        assert (run / stage / "tokenizer" / "config.yaml").is_file(), stage
    assert (run / "cache" / "manifest.json").is_file()
    for stage in ("ar", "maskgit", "ar_ft", "mg_ft"):
        assert (run / stage / "export" / "config.yaml").is_file(), stage

    # The script builds what ships: the same architectures and the same pipeline settings.
    parts = {"tokenizer": TokenizerConfig, "generator_ar": GeneratorConfig, "generator_maskgit": GeneratorConfig}
    for sub, cls in parts.items():
        assert load_config(cls, out / sub) == load_config(cls, DEFAULT_MODEL_DIR / sub), sub
    built = from_dict(PipelineConfig, load_yaml(out / "pipeline.yaml"))
    shipped = from_dict(PipelineConfig, load_yaml(DEFAULT_MODEL_DIR / "pipeline.yaml"))
    assert built == shipped
    holdout = [json.loads((d / "holdout.json").read_text()) for d in (out, DEFAULT_MODEL_DIR)]
    assert holdout[0] == holdout[1]

    # The evaluation ran on the built model, and the model generates.
    assert (run / "eval" / "report.md").is_file() and (run / "eval" / "results.json").is_file()
    video = VideoPipeline.from_pretrained(out)("a red circle moving left", num_frames=17)
    assert video.frames.shape == (1, 17, 64, 64, 3)

    # Run again: every finished stage is skipped (its log and outputs are not rewritten).
    stamps = {stage: (run / f"{stage}.log").stat().st_mtime_ns for stage in TRAININGS}
    cache_stamp = (run / "cache" / "manifest.json").stat().st_mtime_ns
    again = _script(run, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {stage: (run / f"{stage}.log").stat().st_mtime_ns for stage in TRAININGS} == stamps
    assert (run / "cache" / "manifest.json").stat().st_mtime_ns == cache_stamp


def test_a_run_folder_keeps_its_settings_and_a_failing_stage_says_so(tmp_path):
    """A full run in the folder of a smoke run skipped the render and every finished 2-step training and shipped
    those models as the default model; and a failing stage ended the 7-hour script with nothing on the terminal."""
    run = tmp_path / "run"
    env = {**os.environ, "RUN": str(run), "OUT": str(tmp_path / "model"), "PYTHONPATH": str(ROOT),
           "NUM_CLIPS": "72", "TOKENIZER_CLIPS": "32", "TRAIN_OVERRIDES": "run.stepz=2"}  # fmt: skip
    failed = run_group(["bash", str(SCRIPT)], timeout=600, env=env, cwd=ROOT)
    assert failed.returncode == 2 and "error: stage tok1 stopped with exit code 2" in failed.stderr, failed.stderr
    assert "unknown key(s) ['stepz']" in failed.stderr  # the end of the stage's log, on the terminal
    assert not (run / "tok1" / "finished").exists()
    full = {**env, "NUM_CLIPS": "34560", "TRAIN_OVERRIDES": ""}  # the full run, in the smoke run's folder
    refused = run_group(["bash", str(SCRIPT)], timeout=120, env=full, cwd=ROOT)
    assert refused.returncode == 2 and "was made with other settings (NUM_CLIPS=72" in refused.stderr
    assert len((run / "data" / "manifest.jsonl").read_text().splitlines()) < 72  # nothing was rendered again
