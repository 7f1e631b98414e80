"""tests/helpers/procs.py: a timed-out command's own children do not outlive it."""

import subprocess
import time
import uuid

import psutil
import pytest

from tests.helpers.procs import run_group


def _alive(tag: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if tag in " ".join(p.info["cmdline"] or [])]


def test_a_timeout_kills_the_commands_children_too():
    tag = f"tokvid-probe-{uuid.uuid4().hex}"
    # A shell that starts a long child and waits for it, as a build script or a launcher does.
    cmd = ["bash", "-c", f"exec -a {tag}-child sleep 60 >/dev/null 2>&1 & wait"]
    with pytest.raises(subprocess.TimeoutExpired):
        run_group(cmd, timeout=1.5)
    deadline = time.monotonic() + 5
    while _alive(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(tag)


def test_a_finished_command_returns_its_code_and_output():
    done = run_group(["bash", "-c", "echo out; echo err >&2; exit 3"], timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
