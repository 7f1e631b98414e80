"""Shared command-line plumbing: one clear error line and exit code 2 for bad input.

Every CLI builds its parser with :class:`CliParser`, reads ``--device`` with :func:`parse_device`
and runs its ``main`` under :func:`run_cli`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from core.checks import first_line, out_of_memory

if TYPE_CHECKING:
    import torch


def _interrupted_quietly(kind, value, tb, plain=sys.excepthook) -> None:
    """An uncaught Ctrl-C is one line (Python then ends the process by SIGINT, exit status 130); anything else goes
    to the hook that was there. :func:`run_cli` covers a CLI's ``main``; this covers the second or so before it,
    where a CLI imports torch (a 30-40-line traceback ending in KeyboardInterrupt)."""
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return
    plain(kind, value, tb)


sys.excepthook = _interrupted_quietly  # core.cli is imported by command-line programs only (tools/, bench/)


class UsageError(ValueError):
    """Bad command-line input; reported as one line on stderr with exit code 2."""


class CliParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError`: one line and exit 2 under :func:`run_cli`."""

    def error(self, message: str):  # no usage dump, no SystemExit from inside a library call
        raise UsageError(message)

    def add_argument(self, *names, allow_empty: bool = False, **kwargs):
        """As ``ArgumentParser.add_argument``; every text or ``Path`` value also refuses an empty one,
        which an unset shell variable gives (``--out "$OUT"``, ``--data "$DATA"``) and which ``Path("")`` turns into
        the current folder: written into, or scanned and cached. ``allow_empty`` marks an option where "" says
        "none" (``eval_shapes --holdout ""``)."""
        takes_text = kwargs.get("action") in (None, "store", "append") and kwargs.get("type") in (None, str, Path)
        if takes_text and not allow_empty and kwargs.get("default") != "":  # "" as the default: empty means "all"
            # every other text or path value: a plain-str "--data" of "" trained on the current folder
            kwargs["type"] = _nonempty(kwargs.get("type") or str)
        return super().add_argument(*names, **kwargs)


def _nonempty(convert: Callable[[str], object]) -> Callable[[str], object]:
    def parse(text: str) -> object:
        if not text.strip():
            raise argparse.ArgumentTypeError("must not be empty (an unset variable?)")
        return convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in its messages
    return parse


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``; anything else is a usage error that names the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


SEED_MAX = 2**62  # seeds plus an evaluation's offsets fit torch.Generator's signed 64 bits


def seed_value(text: str) -> int:
    """An argparse ``type`` for ``--seed``: an integer in [0, 2**62] (torch failed with "Overflow when unpacking
    long long" past 2**63, and numpy's generators refuse negative seeds)."""
    value = int_at_least(0)(text)
    if value > SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be <= 2**62, got {value}")
    return value


def float_at_least(minimum: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number >= ``minimum``; nan, inf and anything below are usage errors."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {value:g}")
        return value

    return parse


def parse_device(name: str) -> torch.device:
    """``--device`` text (``cpu``, ``cuda``, ``cuda:1``) to a device that exists here.

    Raises:
        ValueError: an unknown device name, or CUDA asked for on a machine without it.
    """
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):  # mps, meta, hpu, xla: torch.device took them, and a traceback came later
        raise ValueError(f"unknown device {name!r}: use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} was asked for, but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


# OSErrors that mean "this path cannot be used": a name too long, a read-only or full disk, a symlink loop
USER_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ELOOP, errno.EACCES})


@contextlib.contextmanager
def frozen_imports() -> Iterator[None]:
    """Runs a CLI's heavy imports with the garbage collector off, then freezes what they made.

    Importing torch and a pipeline makes ~170,000 objects that live as long as the process; with the collector on,
    each full collection on the way walks them again (~0.3 s of a ~4 s ``generate.py`` run on 2 cores,
    bench/README.md). Frozen, later collections skip them. The collector's on/off state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


PEER_GONE = "Connection closed by peer"  # gloo's message when another rank's process has exited


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Runs ``main(argv)``; a ValueError or OSError becomes ``error: ...`` on stderr and exit 2.

    A MemoryError is one line and exit 1; keyboard interrupts exit with 130 and no traceback. Anything else is a
    bug and keeps its traceback. Hugging Face progress bars are turned off first (see :func:`quiet_hub_progress`).
    """
    quiet_hub_progress()
    try:
        return main(argv)
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
    ) as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in USER_PATH_ERRNOS:  # not about the paths the user gave: a bug, with its traceback
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # a training run stopped on a non-finite loss
        print(f"error: {err}", file=sys.stderr)
        return 1
    except MemoryError as err:  # numpy's "Unable to allocate 475. GiB": the sizes asked for, not a bug
        print(f"error: out of memory ({first_line(err)}): ask for smaller frames, fewer frames or a smaller batch",
              file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as err:
        if out_of_memory(err):  # torch's CPU or CUDA allocator
            print(f"error: out of memory ({first_line(err)}): ask for smaller frames, fewer frames or a smaller "
                  "batch", file=sys.stderr)  # fmt: skip
            return 1
        if PEER_GONE not in str(err):
            raise
        # gloo's "Connection closed by peer": another process of the run failed (its own error line says why) while
        # this one waited in a collective; its ~35-line traceback buried that line
        print("error: another process of this run stopped (its error is above); this one ended with it",
              file=sys.stderr)  # fmt: skip
        return 2


def quiet_hub_progress() -> None:
    """Turns off huggingface_hub / transformers progress bars for a command-line run.

    Loading the frozen text encoder draws a "Loading weights" bar on stderr, which would precede
    every result or error line. ``HF_HUB_DISABLE_PROGRESS_BARS`` set by the user wins. Both
    libraries read that variable once, on import, so an already imported one is told directly;
    neither is imported here.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"].strip().lower() not in ("1", "true", "yes", "on"):
        return
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        import transformers.utils.logging as hf_logging

        hf_logging.disable_progress_bar()


def add_config_args(parser: argparse.ArgumentParser, example: str) -> None:
    """``--config`` files, dotted ``overrides`` (``example`` shows one) and the launcher's ``--local_rank``."""
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), merged in order")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    parser.add_argument("overrides", nargs="*", help=f"dotted overrides such as {example}")


LOG_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"
LOG_DATEFMT = "%H:%M:%S"


def setup_logging(verbose: bool = False) -> None:
    """INFO-level logging to stderr in a compact format (DEBUG with ``verbose``).

    Under a launcher, ranks other than 0 log warnings only, so one run prints one progress story.
    """
    main_rank = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(
        level=(logging.DEBUG if verbose else logging.INFO) if main_rank else logging.WARNING,
        format=LOG_FORMAT,
        datefmt=LOG_DATEFMT,
        stream=sys.stderr,
    )
