"""Runs a command in a child process and measures its wall time and the peak memory of its
whole process tree (the child plus its worker processes), sampled with psutil.

``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` is not used: it is the maximum over every
child this process ever waited for, so an earlier, larger child (a renderer, another
benchmark) would be reported instead of the command being measured. The sum of RSS counts pages
that forked workers still share with their parent once per process, so it errs high.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass

import psutil


@dataclass
class Measured:
    """What :func:`run_measured` returns: the finished process, wall seconds, peak tree RSS in MiB (2**20 bytes),
    and every (seconds since start, tree RSS MiB) sample."""

    proc: subprocess.CompletedProcess
    seconds: float
    peak_rss_mib: float
    samples: list[tuple[float, float]]

    def peak_between(self, start: float, stop: float) -> float:
        """Peak RSS (MiB) among samples taken in [start, stop) fractions of the run."""
        picked = [mb for t, mb in self.samples if start * self.seconds <= t < stop * self.seconds]
        return max(picked, default=0.0)


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its descendants (processes that vanish are skipped)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def failure_line(proc: subprocess.CompletedProcess) -> str:
    """The last line a failed child wrote to stderr, or its exit status when it wrote none (killed by a signal,
    or by the OOM killer): ``splitlines()[-1]`` of an empty stderr was an IndexError that ended the whole run."""
    lines = (proc.stderr or "").strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def run_measured(cmd: list[str], env: dict | None = None, cwd: str | None = None, interval: float = 0.05) -> Measured:
    """Runs ``cmd`` to completion, sampling the tree's RSS every ``interval`` seconds."""
    # Output goes to temp files, not pipes: a child that writes more than a pipe holds (e.g.
    # ``-X importtime``) would block on a full pipe while this loop only polls.
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        t0 = time.perf_counter()
        popen = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True, env=env, cwd=cwd)
        samples: list[tuple[float, float]] = []
        try:
            ps = psutil.Process(popen.pid)
            while True:
                try:
                    samples.append((time.perf_counter() - t0, tree_rss(ps) / 2**20))
                except psutil.Error:
                    break
                try:  # returns as the child exits: a sleep here added up to one interval to every wall time
                    popen.wait(timeout=interval)
                    break
                except subprocess.TimeoutExpired:
                    pass
        finally:
            popen.wait()
        seconds = time.perf_counter() - t0
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    proc = subprocess.CompletedProcess(cmd, popen.returncode, out, err)
    return Measured(proc, seconds, max((mb for _, mb in samples), default=0.0), samples)
