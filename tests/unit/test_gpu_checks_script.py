"""scripts/gpu_checks.sh's arguments, with a stand-in interpreter (PYTHON) that records its calls: no GPU needed."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE = """#!/usr/bin/env bash
printf '%s|' "$@" >> "$FAKE_LOG"; printf '\\nPYTHONPATH=%s\\n' "$PYTHONPATH" >> "$FAKE_LOG"
"""


def _run(tmp_path: Path, *args: str) -> list[str]:
    """Runs a copy of the script in a stand-in checkout (tmp_path/repo), from tmp_path; returns the calls."""
    (tmp_path / "repo" / "scripts").mkdir(parents=True, exist_ok=True)
    (tmp_path / "repo" / "scripts" / "gpu_checks.sh").write_text((ROOT / "scripts/gpu_checks.sh").read_text())
    fake = tmp_path / "python"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    log = tmp_path / "calls.txt"
    log.write_text("")
    env = {**os.environ, "PYTHON": str(fake), "FAKE_LOG": str(log), "PYTHONPATH": ""}
    proc = subprocess.run(["bash", str(tmp_path / "repo/scripts/gpu_checks.sh"), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines()


def test_a_leading_pytest_option_is_passed_to_pytest_not_taken_as_the_output_folder(tmp_path):
    """`gpu_checks.sh -k cuda` made a folder named "-k" and gave pytest a test path "cuda"."""
    calls = _run(tmp_path, "-k", "cuda")
    pytest_call = next(c for c in calls if c.startswith("-m|pytest|"))
    assert pytest_call.endswith("|-k|cuda|") and not (tmp_path / "-k").exists()
    assert (tmp_path / "repo" / "outputs" / "gpu_checks" / "pytest_gpu.log").is_file()  # the default folder
    calls = _run(tmp_path, "mine", "-x")
    assert (tmp_path / "mine" / "pytest_gpu.log").is_file()
    assert next(c for c in calls if c.startswith("-m|pytest|")).endswith("|-x|")


def test_the_benchmark_imports_this_checkouts_packages(tmp_path):
    calls = _run(tmp_path, "out")
    assert all(c == f"PYTHONPATH={tmp_path / 'repo'}" for c in calls if c.startswith("PYTHONPATH="))
