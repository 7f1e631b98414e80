"""Running a command that starts processes of its own (a launcher's ranks, a build script's stages) in tests."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence


def run_group(cmd: Sequence[str], *, timeout: float, **popen_kwargs) -> subprocess.CompletedProcess:
    """Like ``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)``, but the command runs in a
    new process group, and past the timeout (or on any interruption) the whole group is killed before the
    exception propagates.

    ``subprocess.run`` kills only the process it started, so a timed-out launcher or shell script would leave
    its ranks or stages running, taking the CPU from every later test.
    """
    proc = subprocess.Popen(
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **popen_kwargs
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:  # the timeout, or a Ctrl-C of pytest (the group no longer gets the terminal's SIGINT)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
