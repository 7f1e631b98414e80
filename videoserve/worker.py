"""One generation at a time per device, behind a bounded queue.

The pipeline runs in a single worker thread (torch releases the GIL, so the web server stays responsive).
Loading and warming it up run on that thread too: every thread that runs torch operations gets its own
OpenMP thread team, and once two teams exist on a 2-core machine, generation in either thread runs at
about half speed (measured: 0.9 s per default video on one thread, 2.0 s after a second thread had
generated, in the second thread and in the first). One thread for all torch work avoids it.
A request that finds ``max_waiting`` requests already waiting is refused at once with :class:`Busy`
rather than queued without bound.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Busy(Exception):
    """The queue is full; the caller should answer 503 and the client retry later."""


class ClientGone(Exception):
    """The client disconnected while its job waited in the queue; the job was cancelled and never runs."""


async def result_unless_gone(future: Future[T], disconnected: Callable[[], Awaitable[bool]], poll: float = 0.25) -> T:
    """The job's result, awaited without blocking the event loop; a client gone while its job still waits (checked
    every ``poll`` seconds with ``disconnected``, Starlette's ``Request.is_disconnected``) cancels the job and raises
    :class:`ClientGone`. Uvicorn does not cancel an endpoint whose client leaves, so a queued job ran anyway, held a
    queue place and wrote a result nobody would fetch. A job that has started runs to its end."""
    waiting = asyncio.wrap_future(future)
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=poll)
        if done:
            return waiting.result()
        if await disconnected() and future.cancel():
            raise ClientGone


class GenerationWorker:
    """Runs submitted jobs one after another in one thread, refusing jobs past ``max_waiting``.

    Args:
        max_waiting: jobs that may wait while one runs (0: only the running one).
    """

    def __init__(self, max_waiting: int) -> None:
        if max_waiting < 0:
            raise ValueError(f"the queue length must be >= 0, got {max_waiting}")
        self.max_waiting = max_waiting
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokvid-generate")
        self._lock = threading.Lock()
        self._pending = 0  # running + waiting

    @property
    def pending(self) -> int:
        """Jobs running or waiting."""
        return self._pending

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Queues ``job``; raises :class:`Busy` when ``max_waiting`` jobs already wait behind a running one."""
        with self._lock:
            if self._pending > self.max_waiting:
                raise Busy(
                    f"the server is busy: {self._pending} generation(s) running or queued (at most "
                    f"{self.max_waiting + 1}); try again in a few seconds"
                )
            self._pending += 1
        future = self._pool.submit(job)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    def shutdown(self) -> None:
        """Waits for the running job; drops the waiting ones."""
        self._pool.shutdown(wait=True, cancel_futures=True)
