"""Fault injection for the token-cache tests: a hanging or crashing decoder, a kill after N writes.

Production code has no test hooks; these wrap the real functions instead.

- :func:`faulty_decode` replaces ``videodata.cache.build.decode_source`` (the function the build
  hands to its decode pool): it hangs on files named ``hang_*``, dies of SIGSEGV on ``crash_*``
  and decodes every other file normally. Decode workers start from a forkserver, which pickles
  the function by reference, so it lives here at module level where workers can import it
  (``tests`` must be importable: the repo root on ``sys.path`` or ``PYTHONPATH``).
- :func:`exit_after_writes` wraps ``RankWriter._write`` (every file a rank writes goes through
  it) to ``os._exit(3)`` right after the N-th file: a kill at a chosen moment.
- :func:`main` is the cache CLI with these faults, for subprocess tests::

      python -c "import sys; from tests.helpers.cache_faults import main; sys.exit(main())" [--exit-after-writes N] ARGS
- Decode-pool helpers (:func:`slow_start`, :func:`echo`, :func:`sleep_for`) are tasks and
  initializers for the pool's own tests.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Decode workers import this module to unpickle faulty_decode: keep its imports light.
from videodata.cache.decode import DecodedSource, DecodeTask, decode_source

if TYPE_CHECKING:
    import pytest

HANG_PREFIX, CRASH_PREFIX = "hang_", "crash_"


def faulty_decode(task: DecodeTask) -> DecodedSource:
    """``decode_source``, except that ``hang_*`` files never return and ``crash_*`` files segfault."""
    name = Path(task.file).name
    if name.startswith(HANG_PREFIX):
        while True:
            time.sleep(3600)
    if name.startswith(CRASH_PREFIX):
        os.kill(os.getpid(), signal.SIGSEGV)
    return decode_source(task)


def inject_decode_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes the cache build decode with :func:`faulty_decode` (for in-process runs)."""
    monkeypatch.setattr("videodata.cache.build.decode_source", faulty_decode)


def exit_after_writes(num_writes: int) -> None:
    """Makes this process ``os._exit(3)`` right after its ``num_writes``-th cache file write."""
    from videodata.cache.writer import RankWriter

    write = RankWriter._write
    count = 0

    def counted(self: RankWriter, name: str, data: bytes) -> dict[str, Any]:
        nonlocal count
        record = write(self, name, data)
        count += 1
        if count >= num_writes:
            os._exit(3)
        return record

    RankWriter._write = counted


def main(argv: Sequence[str] | None = None) -> int:
    """``tools/cache_tokens.py`` with a faulty decoder, and ``--exit-after-writes N`` first to kill it mid-run."""
    from tools.cache_tokens import main as cache_main
    from videodata.cache import build

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--exit-after-writes"]:
        exit_after_writes(int(argv[1]))
        argv = argv[2:]
    build.decode_source = faulty_decode
    return cache_main(argv)


# ----------------------------------------------------------------------------- decode-pool tests
def slow_start() -> None:
    """A worker initializer that takes 2 s, like a worker starting on a loaded machine."""
    time.sleep(2.0)


def echo(x: Any) -> Any:
    return x


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
