"""Running one training to its end in this process: the trainer's lifetime and the process group's."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from videotrain import distributed
from videotrain.engines import restored_env
from videotrain.trainer import Trainer

T = TypeVar("T", bound=Trainer)


def run_training(make_trainer: Callable[[], T]) -> T:
    """Builds a trainer, runs :meth:`Trainer.fit` and returns the trainer.

    An in-process call leaves no RANK / MASTER_PORT behind. A process started by a launcher
    (torchrun, deepspeed) shuts its process group down at the end; a bare process keeps its
    one-rank group, because DeepSpeed caches groups and a second in-process run (tests,
    notebooks) could not initialise after a teardown.
    """
    launched = "RANK" in os.environ
    with restored_env():
        try:
            trainer = make_trainer()
            trainer.fit()
        finally:
            if launched:
                distributed.shutdown()
    return trainer
