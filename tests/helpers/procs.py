"""Running a command that starts processes of its own (a launcher's ranks, a build script's stages) in tests."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Sequence


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


def run_main(main: Callable[[list[str]], int], args: Sequence[str]) -> subprocess.CompletedProcess:
    """Runs a command-line program's ``main(args)`` in this process and returns what its own process would have:
    the exit code, stdout, and stderr with the log records in the programs' format (``core.cli.setup_logging``).

    A test of what a program does, not of how its process starts or ends, saves the ~5 s that every Python process
    takes to import torch and DeepSpeed. An exception that ``run_cli`` does not turn into an exit code propagates.
    What a training changes for the whole process is put back: the launch variables, torch's deterministic mode and
    thread count, the root logger. Not thread-safe (stdout and stderr are the process's): run one at a time.
    """
    import torch  # noqa: PLC0415 - kept out of the import of this module

    from core.cli import LOG_DATEFMT, LOG_FORMAT  # noqa: PLC0415
    from videotrain.engines import restored_env  # noqa: PLC0415

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
    root = logging.getLogger()
    level, deterministic, threads = root.level, torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with restored_env(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
