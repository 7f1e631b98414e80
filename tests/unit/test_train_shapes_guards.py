"""scripts/train_shapes.sh before and around its stages, with a stand-in ``python``: settings refused before they
are recorded, an OUT that is not a pipeline folder, RUN paths that YAML would misread, the checkout's own packages,
and a signal passed on to the running stage, which the script waits for."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.unit.test_train_shapes_stages import FAKE_PYTHON, ROOT, SCRIPT

# Also appends "<tool> <--out name> PYTHONPATH=<...>" and every argument to $FAKE_ARGS; a stage named in
# $FAKE_HANG waits for SIGTERM/SIGINT, then "exports" for a second and exits 143.
RECORDING = FAKE_PYTHON.replace(
    'echo "$tool $stage" >> "$FAKE_LOG"',
    'echo "$tool $stage" >> "$FAKE_LOG"\n'
    'printf "%s\\n" "$tool $stage PYTHONPATH=$PYTHONPATH" "$@" >> "${FAKE_ARGS:-/dev/null}"\n'
    'if [ "$stage" = "${FAKE_HANG:-}" ]; then\n'
    '  trap \'echo "got signal" >> "$FAKE_LOG"; sleep 1; echo exported >> "$FAKE_LOG"; exit 143\' TERM INT\n'
    '  echo started >> "$FAKE_LOG"; while :; do sleep 0.05; done\n'
    "fi",
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(RECORDING)
    (bin_dir / "python").chmod(0o755)
    (tmp_path / "calls.txt").write_text("")
    (tmp_path / "args.txt").write_text("")
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "calls.txt"),
            "FAKE_ARGS": str(tmp_path / "args.txt"), "FAKE_STOP": "", "RUN": str(tmp_path / "run"),
            "OUT": str(tmp_path / "run" / "model"), **extra}  # fmt: skip


def _script(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("value", ["-3", "4,140", "0", "0100"])
def test_a_clip_count_that_is_not_a_positive_integer_is_refused_before_it_is_recorded(tmp_path, value):
    """TOKENIZER_CLIPS=-3 kept all but the last 3 lines (head -n -3); 4,140 failed inside a group that set -e lets
    pass, and the tokenizer then failed on a missing manifest; either value was written to RUN/settings first, so
    the corrected rerun was refused as "made with other settings"."""
    env = _env(tmp_path, TOKENIZER_CLIPS=value)
    proc = _script(env)
    assert proc.returncode == 2 and f"TOKENIZER_CLIPS must be a positive integer, got '{value}'" in proc.stderr
    assert (tmp_path / "calls.txt").read_text() == "" and not (tmp_path / "run" / "settings").exists()
    assert _script(_env(tmp_path)).returncode == 0


def test_an_out_that_is_not_a_pipeline_folder_is_refused_before_any_stage(tmp_path):
    """OUT=. or OUT=models passed the guard, and after ~7.9 hours make_pipeline --force replaced the folder whole."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (tmp_path / "file.txt").write_text("keep me too")
    for out in (mine, tmp_path / "file.txt"):
        proc = _script(_env(tmp_path, OUT=str(out)))
        assert proc.returncode == 2 and "is not a pipeline folder" in proc.stderr, proc.stderr
        assert (tmp_path / "calls.txt").read_text() == ""
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert _script(_env(tmp_path, OUT=str(tmp_path / "empty"))).returncode == 0  # an empty folder is fine
    assert _script(_env(tmp_path, OUT=str(tmp_path / "empty"))).returncode == 0  # and so is the pipeline it became
    shipped = tmp_path / "shipped"  # OUT=models/shapes: make_pipeline --force deleted its card and failure sheets
    shipped.mkdir()
    for name in ("pipeline.yaml", "holdout.json", "MODEL_CARD.md", "failures.png"):
        (shipped / name).write_text("x")
    (tmp_path / "calls.txt").write_text("")
    proc = _script(_env(tmp_path, OUT=str(shipped)))
    assert proc.returncode == 2 and "which a pipeline does not write" in proc.stderr, proc.stderr
    assert "MODEL_CARD.md" in proc.stderr and "failures.png" in proc.stderr and "holdout.json" not in proc.stderr
    assert (tmp_path / "calls.txt").read_text() == "" and (shipped / "MODEL_CARD.md").is_file()


@pytest.mark.parametrize("name", ["exp: v2", "run #2", "it's"])
def test_run_paths_reach_the_trainers_as_the_same_strings(tmp_path, name):
    """RUN=/data/exp: v2 made run.init_from a YAML mapping and RUN='run #2' a YAML comment: the build failed at
    tokenizer stage 2, after about 1 h 45 min (the generators' data.cache after about 4 h)."""
    run = tmp_path / name
    env = _env(tmp_path, RUN=str(run), OUT=str(run / "model"))
    assert _script(env).returncode == 0
    values = {}
    for line in (tmp_path / "args.txt").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("run.init_from", "data.cache", "data.tokenizer"):
            values.setdefault(key, []).append(yaml.safe_load(value))
    assert values["data.cache"] == [str(run / "cache")] * 4  # ar, maskgit, ar_ft, mg_ft
    assert (
        values["run.init_from"][0] == str(run / "tok1" / "tokenizer")
        and str(run / "ar" / "export") in values["run.init_from"]
    )


def test_the_tools_import_this_checkouts_packages(tmp_path):
    """`python tools/X.py` puts only tools/ on the path: the library came from whichever clone was installed."""
    assert _script(_env(tmp_path, PYTHONPATH="/elsewhere")).returncode == 0
    lines = [line for line in (tmp_path / "args.txt").read_text().splitlines() if " PYTHONPATH=" in line]
    assert lines and all(line.split("PYTHONPATH=")[1] == f"{ROOT}:/elsewhere" for line in lines)


@pytest.mark.parametrize("to_group", [False, True])
def test_a_sigterm_is_passed_on_and_the_script_waits_for_the_stage(tmp_path, to_group):
    """A SIGTERM to the script left the trainer running with no parent (a rerun then started a second one on the
    same folder); one to its process group (timeout, systemd) ended the script before the trainer had exported,
    without the "stopped" line."""
    env = _env(tmp_path, FAKE_HANG="tok2")
    proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    calls = tmp_path / "calls.txt"
    try:
        for _ in range(600):
            if "started" in calls.read_text():
                break
            time.sleep(0.05)
        assert "started" in calls.read_text()
        (os.killpg if to_group else os.kill)(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        stray = subprocess.run(["pgrep", "-f", str(tmp_path / "bin")], capture_output=True, text=True).stdout
    finally:
        proc.kill()
        subprocess.run(["pkill", "-f", str(tmp_path / "bin")], check=False)  # an orphaned stage, on failure
    assert proc.returncode == 143 and "error: stage tok2 stopped with exit code 143" in err, err
    assert calls.read_text().splitlines()[-3:] == ["started", "got signal", "exported"]  # once, and waited for
    assert not (tmp_path / "run" / "tok2" / "finished").exists()
    assert stray == "", stray


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_stopped_stage_does_not_make_the_script_spin(tmp_path):
    """With job control on, wait returns as soon as the stage is stopped (SIGSTOP, Ctrl-Z), and returned again at
    once on every turn of the loop that waits for it: the script took a whole core for as long as the stage was
    paused (a paused rebuild's script used 7 CPU-minutes in 11 minutes)."""
    env = _env(tmp_path, FAKE_HANG="tok2")
    proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    calls = tmp_path / "calls.txt"
    stage = None
    try:
        for _ in range(600):
            if "started" in calls.read_text():
                break
            time.sleep(0.05)
        found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(found) == 1, found
        stage = int(found[0])
        os.kill(stage, signal.SIGSTOP)
        time.sleep(0.5)
        before = _cpu_seconds(proc.pid)
        time.sleep(2.0)
        used = _cpu_seconds(proc.pid) - before
        os.kill(stage, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
        subprocess.run(["pkill", "-f", str(tmp_path / "bin")], check=False)
    assert used < 0.2, f"the script used {used:.2f} CPU seconds in 2 s while its stage was stopped"
    assert proc.returncode == 143  # and the stage, continued, was still waited for
