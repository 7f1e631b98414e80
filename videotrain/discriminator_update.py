"""The discriminator's half of an adversarial tokenizer step, with the same non-finite guard as the tokenizer's."""

from __future__ import annotations

import torch
from torch import nn

from videotrain import distributed
from videotrain.guards import DISCRIMINATOR_GRADIENT, GradientCheck, NonFiniteGuard


class DiscriminatorUpdate:
    """Backward of the discriminator's loss on each micro-batch and its optimizer step at the accumulation boundary.

    Its loss is checked with the tokenizer's; its gradients are checked here. A non-finite gradient on any rank
    (the loss finite, an overflow in its backward) skips the discriminator's update of that step and is counted
    by a guard of its own under ``run.nonfinite``: the tokenizer's update has already been made, and the
    tokenizer's guard, reset by every step it completes, would never reach ``run.max_nonfinite``. Unchecked, one
    infinite gradient turned the discriminator's weights to NaN for good, the step was logged as a success, and
    the run stopped ten micro-batches later on a "non-finite loss". Under fp16 DeepSpeed's loss scaler skips an
    overflowing step itself.
    """

    def __init__(
        self, engine, disc: nn.Module, zero_stage: int, precision: str, device: torch.device, guard: NonFiniteGuard
    ) -> None:
        self.engine, self.guard = engine, guard
        self.grads = GradientCheck(disc, zero_stage, precision, device) if precision != "fp16" else None
        self.device = device

    def backward(self, loss: torch.Tensor, boundary: bool, step: int) -> bool:
        """Backward of ``loss``; at the boundary the update. False when the update was skipped."""
        self.engine.set_gradient_accumulation_boundary(boundary)
        self.engine.backward(loss)
        if boundary and self.grads is not None:
            _, bad = self.grads.read()
            if distributed.all_reduce_max(float(bad), self.device) > 0:
                self.discard()
                self.guard.record(DISCRIMINATOR_GRADIENT, step)  # raises under "stop" or at run.max_nonfinite in a row
                return False
        self.engine.step()
        if boundary:
            self.guard.reset()
        return True

    def discard(self) -> None:
        """Drops the gradients accumulated for this step (the step is skipped, or this update is)."""
        distributed.discard_gradients(self.engine)
        if self.grads is not None:
            self.grads.clear()
