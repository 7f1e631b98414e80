"""A process pool for decoding that survives hung and crashing decoders.

``concurrent.futures.ProcessPoolExecutor`` breaks as a whole when one worker segfaults and
cannot stop a single hung task, so this pool keeps one pipe per worker and hands out one task
at a time. While waiting it watches every busy worker's pipe and process sentinel:

- a result (or a ValueError raised by the task) comes back through the pipe;
- a worker that dies mid-task (segfault, ``os._exit``, OOM kill) gives ``Failure("crashed")``
  and is replaced;
- a task running longer than ``timeout_s`` has its worker killed (SIGKILL) and replaced, and
  gives ``Failure("timeout")``.

The ``timeout_s`` clock of a task starts when its worker reports that it has begun the task,
not when the task was sent: a new worker first has to start (a fork of the server, unpickling
the task function, the initializer), which on a loaded machine can take longer than a decode.
A worker that has not begun its task within ``startup_timeout_s`` of receiving it is treated
as hung (``Failure("timeout")``), so a worker stuck while starting cannot stall the run forever.

:meth:`DecodePool.imap` streams results in task order with at most ``window`` tasks in flight,
so memory stays bounded however long the task list is. Workers start from the ``forkserver``
context when the platform has it (fast replacement: the server has already imported the
decode modules), else ``spawn``; never ``fork``, which is unsafe after torch has started threads.
The task function is pickled by reference, so it must be a module-level function that the
workers can import.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


@dataclass(frozen=True)
class Failure:
    """A task that gave no result. ``kind``: ``error`` (it raised), ``timeout`` or ``crashed``."""

    kind: str
    detail: str
    error_kind: str | None = None  # for ``error``: the task exception's ``kind`` attribute, if any


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when the run dies.

    A killed run must not leave a hung decoder behind: an idle worker sees EOF on its pipe
    and exits, but one stuck inside a decoder never reads its pipe again. The worker's parent
    is the forkserver, which exits once no process holds its "alive" pipe; forkserver children
    inherit that pipe (so they could start processes themselves), which would keep the server,
    and so the hung worker, alive forever. Workers start no processes, so they close it.
    """
    server = getattr(forkserver, "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        os.close(alive_fd)
        server._forkserver_alive_fd = None
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


# Messages from a worker: (_STARTED, idx) when it begins task idx, then (_DONE, idx, result_or_Failure).
_STARTED, _DONE = "started", "done"


def _worker_main(conn: Connection, fn: Callable[[Any], Any], initializer: Callable[[], None] | None) -> None:
    _die_with_parent()
    if initializer is not None:
        initializer()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        idx, task = msg
        conn.send((_STARTED, idx))  # starts the task's timeout clock in the parent
        try:
            result = fn(task)
        except ValueError as err:  # a bad input file: the expected failure
            result = Failure("error", getattr(err, "detail", str(err)), getattr(err, "kind", None))
        except Exception as err:  # noqa: BLE001 - any decoder bug must not end the run
            result = Failure("error", f"{type(err).__name__}: {err}", "undecodable")
        conn.send((_DONE, idx, result))


def _exit_description(code: int | None) -> str:
    if code is None:
        return "the decoder process stopped responding"
    if code < 0:
        try:
            return f"the decoder process died of {signal.Signals(-code).name}"
        except ValueError:
            return f"the decoder process died of signal {-code}"
    return f"the decoder process exited with code {code}"


class _Worker:
    def __init__(self, ctx: Any, fn: Callable, initializer: Callable | None) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, fn, initializer), daemon=True)
        self.proc.start()
        child.close()
        self.idx: int | None = None  # the task in progress, or None when idle
        self.sent = 0.0  # when that task was sent (monotonic seconds)
        self.started: float | None = None  # when the worker reported beginning it

    def assign(self, idx: int, task: Any) -> None:
        self.conn.send((idx, task))
        self.idx, self.sent, self.started = idx, time.monotonic(), None

    def deadline(self, timeout_s: float, startup_timeout_s: float) -> float:
        """When the busy worker's task times out: ``timeout_s`` after it began, or a start-up limit."""
        return self.started + timeout_s if self.started is not None else self.sent + startup_timeout_s

    def stop(self, kill: bool) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():  # pragma: no cover - a worker ignoring the stop message
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class DecodePool:
    """Runs ``fn(task)`` in worker processes with a hard per-task timeout.

    Args:
        fn: a picklable top-level function. Its ValueError becomes ``Failure("error", str(err))``.
        num_workers: worker processes; 0 runs ``fn`` in this process (no timeout, no crash
            protection; for debugging).
        timeout_s: seconds one task may run, counted from when its worker begins it, before
            the worker is killed.
        startup_timeout_s: seconds a worker may take to begin a task it was sent (its own
            start-up included) before it is treated as hung.
        initializer: run once in every new worker.
        preload: modules the forkserver imports once, so replacement workers start fast.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        num_workers: int,
        timeout_s: float,
        startup_timeout_s: float = 300.0,
        initializer: Callable[[], None] | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0 < timeout_s < math.inf:
            raise ValueError(f"the decode timeout must be a finite number > 0 seconds, got {timeout_s}")
        if not 0 < startup_timeout_s < math.inf:
            raise ValueError(f"the worker start-up timeout must be > 0 seconds, got {startup_timeout_s}")
        self.fn, self.initializer = fn, initializer
        self.timeout_s, self.startup_timeout_s = float(timeout_s), float(startup_timeout_s)
        self.num_replaced = 0
        self._workers: list[_Worker] = []
        if num_workers:
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            self._ctx = mp.get_context(method)
            if method == "forkserver" and preload:
                self._ctx.set_forkserver_preload(list(preload))
            self._workers = [_Worker(self._ctx, fn, initializer) for _ in range(num_workers)]

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.close(kill=exc_type is not None)

    def close(self, kill: bool = False) -> None:
        """Stops every worker (kills busy ones, or all with ``kill``)."""
        for w in self._workers:
            w.stop(kill=kill or w.idx is not None)
        self._workers = []

    def imap(self, tasks: Iterable[Any], window: int) -> Iterator[tuple[Any, Any]]:
        """Yields ``(task, result_or_Failure)`` in task order, at most ``window`` tasks in flight.

        Args:
            tasks: any iterable; it is consumed lazily.
            window: tasks submitted but not yet yielded (bounds memory); >= 1.
        """
        if not self._workers:
            yield from self._imap_inline(tasks)
            return
        it, exhausted = iter(tasks), False
        submitted = next_out = 0
        queued: deque[tuple[int, Any]] = deque()
        by_idx: dict[int, Any] = {}
        results: dict[int, Any] = {}
        try:
            while True:
                while not exhausted and submitted - next_out < max(1, window):
                    try:
                        task = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    queued.append((submitted, task))
                    by_idx[submitted] = task
                    submitted += 1
                for i, w in enumerate(self._workers):
                    if w.idx is None and queued:
                        self._assign(i, *queued.popleft())
                if next_out in results:
                    yield by_idx.pop(next_out), results.pop(next_out)
                    next_out += 1
                    continue
                if exhausted and next_out == submitted:
                    return
                self._collect(results)
        finally:
            # Left early (the consumer stopped or raised): a busy worker's result would reach the next imap, which
            # numbers its tasks from 0 again, as the answer to its own task. Stop those workers; the next task
            # given to one finds it dead and replaces it (see _assign).
            for w in self._workers:
                if w.idx is not None:
                    w.idx = None
                    w.stop(kill=True)

    def _assign(self, i: int, idx: int, task: Any) -> None:
        """Sends a task to idle worker ``i``, first replacing it if it has died since its last task."""
        if not self._workers[i].proc.is_alive():
            self._replace(i, kill=True)
        try:
            self._workers[i].assign(idx, task)
        except OSError:  # it died between the check and the send
            self._replace(i, kill=True)
            self._workers[i].assign(idx, task)

    def _imap_inline(self, tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        for task in tasks:
            try:
                result = self.fn(task)
            except ValueError as err:
                result = Failure("error", getattr(err, "detail", str(err)), getattr(err, "kind", None))
            yield task, result

    def _collect(self, results: dict[int, Any]) -> None:
        """Waits for a message, a dead worker or the next deadline; records what happened."""
        busy = [w for w in self._workers if w.idx is not None]
        deadline = min(w.deadline(self.timeout_s, self.startup_timeout_s) for w in busy)
        wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=max(0.0, deadline - time.monotonic()))
        for i, w in enumerate(self._workers):
            if w.idx is None:
                continue
            idx = w.idx
            try:
                while w.idx is not None and w.conn.poll():  # a message, or EOF from a dead worker
                    msg = w.conn.recv()
                    if msg[0] == _STARTED:
                        w.started = time.monotonic()
                    else:
                        _, got_idx, value = msg
                        results[got_idx] = value
                        w.idx = None
            except Exception:  # noqa: BLE001 - EOF or a torn message: the worker died
                w.proc.join(timeout=5)
                results[idx] = Failure("crashed", _exit_description(w.proc.exitcode))
                self._replace(i, kill=True)
                continue
            if w.idx is None:
                continue
            if not w.proc.is_alive():
                results[idx] = Failure("crashed", _exit_description(w.proc.exitcode))
                self._replace(i, kill=True)
            elif w.started is not None and time.monotonic() - w.started > self.timeout_s:
                detail = f"decoding took longer than {self.timeout_s:g} s; the worker was killed"
                results[idx] = Failure("timeout", detail)
                self._replace(i, kill=True)
            elif w.started is None and time.monotonic() - w.sent > self.startup_timeout_s:
                detail = f"the decode worker did not begin the task within {self.startup_timeout_s:g} s; it was killed"
                results[idx] = Failure("timeout", detail)
                self._replace(i, kill=True)

    def _replace(self, i: int, kill: bool) -> None:
        old = self._workers[i]
        old.idx = None
        old.stop(kill=kill)
        self.num_replaced += 1
        log.debug("replacing decode worker %d (pid %s, exit code %s)", i, old.proc.pid, old.proc.exitcode)
        self._workers[i] = _Worker(self._ctx, self.fn, self.initializer)
