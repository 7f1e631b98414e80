"""Guards of a training run: the non-finite policy, the gradient check at an accumulation boundary, and
stop signals."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


# The kinds of non-finite event that do not drop the whole step, and what is dropped for each.
LOSS = "loss"
DISCRIMINATOR_GRADIENT = "discriminator gradient"
SKIPPED = {
    LOSS: "micro-batch dropped, the next one takes its place",
    DISCRIMINATOR_GRADIENT: "the discriminator's update skipped (the tokenizer's was made)",
}


class NonFiniteGuard:
    """The ``run.nonfinite`` policy: what a non-finite loss or gradient does to the run.

    Under "skip" each event is logged and the caller drops the micro-batch (loss) or the step
    (gradient); ``run.max_nonfinite`` events in a row, or any event under "stop", raise
    ``FloatingPointError`` before the optimizer step. A successful step resets the count.
    """

    def __init__(self, policy: str, max_in_a_row: int) -> None:
        self.policy, self.max_in_a_row = policy, max_in_a_row
        self.in_a_row = 0

    def record(self, what: str, step: int) -> None:
        """Counts one non-finite ``what`` ("loss", "gradient" or "discriminator gradient") at ``step``; raises when
        the run must stop."""
        self.in_a_row += 1
        if self.policy == "stop" or self.in_a_row >= self.max_in_a_row:
            why = "run.nonfinite=stop" if self.policy == "stop" else f"{self.in_a_row} non-finite in a row"
            raise FloatingPointError(f"non-finite {what} at step {step}; stopped before the optimizer step ({why})")
        done = SKIPPED.get(what, "step skipped")
        log.warning("non-finite %s at step %d: %s", what, step, done)

    def record_scale_overflow(self, step: int) -> None:
        """Counts an fp16 gradient overflow at ``step``: skipped under either policy, since DeepSpeed's dynamic loss
        scaler doubles its scale after each run of clean steps until one overflows, and then halves it (``stop``
        ended healthy fp16 runs on that probe). ``run.max_nonfinite`` of them in a row still raise: the scale
        cannot bring the gradients back."""
        self.in_a_row += 1
        if self.in_a_row >= self.max_in_a_row:
            raise FloatingPointError(
                f"non-finite gradient at step {step}; stopped before the optimizer step ({self.in_a_row} fp16 "
                "overflows in a row: lowering the loss scale did not help)"
            )
        log.info("fp16 gradient overflow at step %d: step skipped, the loss scale lowered", step)

    def reset(self) -> None:
        self.in_a_row = 0


class GradientCheck:
    """Reads the gradients at an accumulation boundary: their norm before clipping, and whether any is non-finite.

    ZeRO-0 in fp32 leaves every full gradient in ``p.grad`` until ``engine.step()``, so one pass
    reads the norm and the non-finite flag (and gives parameters without a gradient a zero one, as
    DeepSpeed's all-reduce would). Otherwise ZeRO-1+ reduces and partitions gradients during the
    backward, and DeepSpeed's fp16/bf16 wrappers move them, so a hook checks each gradient as it is
    made; the norm is then DeepSpeed's own (None here).
    """

    def __init__(self, model: nn.Module, zero_stage: int, precision: str, device: torch.device) -> None:
        self.model, self.zero_stage = model, zero_stage
        self.in_params = self.reads_params(zero_stage, precision)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        if not self.in_params:
            for p in model.parameters():
                if p.requires_grad:
                    p.register_hook(self._watch)

    @staticmethod
    def reads_params(zero_stage: int, precision: str) -> bool:
        """Whether the gradients can be read from ``p.grad`` at the boundary."""
        return zero_stage == 0 and precision == "fp32"

    def _watch(self, grad: torch.Tensor) -> None:
        self.bad |= ~torch.isfinite(grad).all()

    def read(self) -> tuple[torch.Tensor | None, bool]:
        """(the local gradient norm before clipping or None, whether any gradient element is non-finite)."""
        if not self.in_params:
            norm = None
            if self.zero_stage == 0:  # full local gradients, moved by a mixed-precision wrapper
                grads = [p.grad.detach().float().norm() for p in self.model.parameters() if p.grad is not None]
                norm = torch.stack(grads).norm() if grads else None
            return norm, bool(self.bad)
        grads = []
        for p in self.model.parameters():
            if p.requires_grad and p.grad is None and p.numel():
                p.grad = torch.zeros_like(p)
            if p.grad is not None:
                grads.append(p.grad.detach())
        norm = torch.nn.utils.get_total_norm(grads)  # foreach norms, then the norm of those
        # A non-finite total means a non-finite element, unless the sum of squares overflowed.
        bad = not bool(torch.isfinite(norm)) and not all(bool(torch.isfinite(g).all()) for g in grads)
        return norm, bad

    def clear(self) -> None:
        """Forgets a non-finite gradient once the step that had it was skipped."""
        self.bad.zero_()


class StopSignals:
    """SIGTERM and SIGINT as a request to stop after the current step, not in the middle of it.

    A preempted job (schedulers send SIGTERM first) or a Ctrl-C then ends like a time budget: the
    loop saves a checkpoint of the last finished step and exports, so the same command resumes
    there. Used as a context manager around the loop; the handlers are installed only in the main
    thread (Python delivers signals there). The first signal puts the previous SIGINT handler back, so
    Ctrl-C twice interrupts at once; a repeated SIGTERM is only logged: Slurm and systemd send it to every
    process of a job, so a stage under a launcher that passes it on (``scripts/train_shapes.sh``) gets two, and
    the second killed it before its save in 2 of 7 tries.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:  # a SIGTERM after the first signal: already stopping
            log.info("%s received again: still stopping after this step", signal.Signals(signum).name)
            return
        self.signum = signum
        self._restore(keep=(signal.SIGTERM,))
        log.warning("%s received: stopping after this step (Ctrl-C stops at once)", signal.Signals(signum).name)

    def _restore(self, keep: tuple[int, ...] = ()) -> None:
        for s in [s for s in self._previous if s not in keep]:
            signal.signal(s, self._previous.pop(s))
