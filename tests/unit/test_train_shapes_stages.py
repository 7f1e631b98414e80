"""scripts/train_shapes.sh's stage bookkeeping, with a stand-in ``python`` on PATH that records each command and
makes the files the real tool would: which stages run, in what order, and which a rerun skips or resumes.

The real commands at a tiny scale are tests/integration/test_train_shapes_script.py (slow); this checks, in a
second, what a multi-hour build depends on when it is stopped and started again.
"""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_shapes.sh"

# Records "<tool> <--out folder name>", prints one line into the stage's log, makes the tool's finishing files,
# and exits 143 (as a training stopped by SIGTERM does, after exporting its weights) for the stage in FAKE_STOP;
# FAKE_STOP=data stops the render after its dataset.json, before the manifest that marks it complete.
FAKE_PYTHON = r"""#!/usr/bin/env bash
if [ "$1" = "-c" ]; then echo /fake/minilm; exit 0; fi
tool=$(basename "$1"); shift
out=""; prev=""
for a in "$@"; do [ "$prev" = "--out" ] && out=$a; prev=$a; done
stage=$(basename "$out")
echo "$tool $stage" >> "$FAKE_LOG"
echo "ran $tool $stage"
case $tool in
  make_shapes.py)  # dataset.json before the manifests, manifest.jsonl last (videodata/shapes/dataset.py)
    mkdir -p "$out"; echo '{}' > "$out/dataset.json"
    if [ "${FAKE_STOP:-}" = data ]; then exit 143; fi
    printf '{}\n%.0s' 1 2 3 > "$out/manifest.jsonl" ;;
  train_tokenizer.py) mkdir -p "$out/tokenizer"; echo exported > "$out/tokenizer/config.yaml" ;;
  cache_tokens.py) mkdir -p "$out"; echo '{}' > "$out/manifest.json" ;;
  train.py) mkdir -p "$out/export"; echo exported > "$out/export/config.yaml" ;;
  make_pipeline.py) mkdir -p "$out"; echo pipeline > "$out/pipeline.yaml" ;;
  *) mkdir -p "$out" ;;
esac
if [ "$stage" = "${FAKE_STOP:-}" ]; then exit 143; fi
"""

ALL = [
    "make_shapes.py data",
    *(f"train_tokenizer.py {s}" for s in ("tok1", "tok2", "tok3", "tok4", "tok")),
    "cache_tokens.py cache",
    "train.py ar",
    "train.py maskgit",
    "train.py ar_ft",
    "train.py mg_ft",
    "make_pipeline.py model",
    "eval_shapes.py eval",
]


def _run(tmp_path: Path, stop: str = "") -> tuple[int, list[str]]:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    log.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), "FAKE_STOP": stop,
           "RUN": str(tmp_path / "run"), "OUT": str(tmp_path / "run" / "model")}  # fmt: skip
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    return proc.returncode, log.read_text().splitlines()


def test_every_stage_runs_once_in_order_and_a_rerun_skips_the_finished_ones(tmp_path):
    rc, calls = _run(tmp_path)
    assert rc == 0 and calls == ALL
    rc, calls = _run(tmp_path)
    # assembled again (the same inputs); the finished evaluation is kept: eval_shapes refuses a folder that holds a
    # report, and the rerun failed there
    assert rc == 0 and calls == ["make_pipeline.py model"]


def test_an_unfinished_evaluation_is_moved_aside_and_run_again(tmp_path):
    rc, calls = _run(tmp_path, stop="eval")
    assert rc == 143 and calls == ALL and not (tmp_path / "run" / "eval" / "finished").exists()
    rc, calls = _run(tmp_path)
    assert rc == 0 and calls == ["make_pipeline.py model", "eval_shapes.py eval"]
    assert (tmp_path / "run" / "eval" / "finished").is_file()
    assert len(list((tmp_path / "run").glob("eval.unfinished.*"))) == 1  # kept, not deleted


def test_a_training_stopped_by_a_signal_is_resumed_on_the_rerun_not_taken_as_finished(tmp_path):
    """A SIGTERM or Ctrl-C ends a training like a time budget (checkpoint, export) but with exit code 128 + signal.
    Its export must not mark the stage done: the build stops there, and the rerun resumes that stage."""
    rc, calls = _run(tmp_path, stop="tok3")
    assert rc == 143 and calls == ALL[:4]
    assert (tmp_path / "run" / "tok3" / "tokenizer" / "config.yaml").is_file()  # exported, yet unfinished
    rc, calls = _run(tmp_path)
    assert rc == 0 and calls == ALL[3:]
    # The resumed stage's log keeps the stopped run's lines.
    assert (tmp_path / "run" / "tok3.log").read_text().splitlines() == ["ran train_tokenizer.py tok3"] * 2


def test_a_stopped_generator_training_is_resumed_too(tmp_path):
    rc, calls = _run(tmp_path, stop="maskgit")
    assert rc == 143 and calls == ALL[:9]
    rc, calls = _run(tmp_path)
    assert rc == 0 and calls == ALL[8:]


def test_each_fine_tune_starts_from_its_own_run_and_its_weights_ship(tmp_path):
    """Stage ar_ft fine-tunes the GPT-style export and stage mg_ft the MaskGIT export (each its own, not the other's,
    not a random init) with the fine-tune overlay last, and the pipeline is assembled from their exports:
    assembling from ar/export or maskgit/export shipped the weights before them."""
    bin_dir, log, args = tmp_path / "bin", tmp_path / "calls.txt", tmp_path / "args.txt"
    bin_dir.mkdir()
    recording = FAKE_PYTHON.replace(
        'echo "$tool $stage" >> "$FAKE_LOG"', 'echo "$tool $stage" >> "$FAKE_LOG"\necho "$stage $*" >> "$FAKE_ARGS"'
    )
    (bin_dir / "python").write_text(recording)
    (bin_dir / "python").chmod(0o755)
    run = tmp_path / "run"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), "FAKE_STOP": "",
           "FAKE_ARGS": str(args), "RUN": str(run), "OUT": str(run / "model")}  # fmt: skip
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in args.read_text().splitlines()}
    for stage, style in (("ar_ft", "ar"), ("mg_ft", "maskgit")):
        ft = lines[stage].split()
        configs = [ft[i + 1] for i, a in enumerate(ft) if a == "--config"]
        names = (f"shapes_{style}", "shapes_captions", "shapes_finetune")
        assert configs == [f"configs/generator/{n}.yaml" for n in names]
        assert f"run.init_from='{run}/{style}/export'" in ft and f"data.cache='{run}/cache'" in ft
    pipe = lines["model"].split()
    assert f"ar={run}/ar_ft/export" in pipe and f"maskgit={run}/mg_ft/export" in pipe
    assert f"run.init_from='{run}/ar/export'" in lines["maskgit"].split()  # MaskGIT keeps the pre-fine-tune start


def test_a_render_stopped_before_its_manifest_is_rendered_again(tmp_path):
    """The render writes dataset.json before manifest.jsonl, which marks it complete; a stop in between must not
    pass for a finished render (the next stage reads the manifest)."""
    rc, calls = _run(tmp_path, stop="data")
    assert rc == 143 and calls == ALL[:1]
    rc, calls = _run(tmp_path)
    assert rc == 0 and calls == ALL


def test_a_relative_run_folder_is_read_from_where_the_script_is_started(tmp_path):
    """RUN=myrun from another folder built into <checkout>/myrun (the script changes into the checkout first)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), "FAKE_STOP": "",
           "RUN": "myrun"}  # fmt: skip
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "myrun" / "model").is_dir() and not (ROOT / "myrun").exists()


def test_an_out_that_would_replace_the_run_is_refused_before_any_stage(tmp_path):
    """OUT=RUN (or OUT=RUN/tok) passed every stage and, after about 7.9 hours, make_pipeline --force replaced the run
    folder with the pipeline: the data, the cache and every checkpoint."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    run = tmp_path / "run"
    for out in (run, tmp_path, run / "tok", run / "cache", run / "mg_ft"):
        log.write_text("")
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), "FAKE_STOP": "",
               "RUN": str(run), "OUT": str(out)}  # fmt: skip
        proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 2 and "would replace" in proc.stderr and log.read_text() == "", (out, proc.stderr)
