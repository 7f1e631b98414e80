"""The training step's guards: non-finite losses and gradients, the gradient check on every ZeRO and
precision path, and stop signals."""

import os
import signal

import pytest
import torch

from videotrain.guards import GradientCheck, NonFiniteGuard, StopSignals


def test_nonfinite_guard_skips_until_the_limit_in_a_row_and_a_good_step_resets_the_count(caplog):
    guard = NonFiniteGuard("skip", max_in_a_row=3)
    guard.record("gradient", 7)
    guard.record("loss", 8)
    assert [r.getMessage() for r in caplog.records] == [
        "non-finite gradient at step 7: step skipped",
        "non-finite loss at step 8: micro-batch dropped, the next one takes its place",
    ]
    guard.reset()  # a good step
    guard.record("gradient", 9)
    guard.record("gradient", 10)
    with pytest.raises(FloatingPointError, match=r"non-finite gradient at step 11.*\(3 non-finite in a row\)"):
        guard.record("gradient", 11)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 2.*\(run.nonfinite=stop\)"):
        NonFiniteGuard("stop", max_in_a_row=100).record("loss", 2)


def _grad_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2), torch.nn.Linear(2, 2))


@pytest.mark.parametrize("zero_stage, precision", [(0, "fp32"), (0, "bf16"), (2, "fp32")])
def test_gradient_check_finds_a_nonfinite_gradient_not_only_a_nonfinite_loss(zero_stage, precision):
    """A finite loss whose gradient is not (sqrt at 0): the step must be flagged, on every path that reads it."""
    assert GradientCheck.reads_params(0, "fp32") and not GradientCheck.reads_params(0, "bf16")
    assert not GradientCheck.reads_params(1, "fp32")
    model = _grad_model()
    check = GradientCheck(model, zero_stage, precision, torch.device("cpu"))
    x = torch.randn(5, 3)
    model[1](model[0](x)).sum().backward()  # model[2] gets no gradient
    norm, bad = check.read()
    assert not bad
    if zero_stage == 0:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert torch.allclose(norm, torch.stack([g.norm() for g in grads]).norm())
    if (zero_stage, precision) == (0, "fp32"):  # parameters without a gradient get a zero one, as an all-reduce gives
        assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model[2].parameters())
    model.zero_grad(set_to_none=True)
    loss = model[0](x).sum() + _nonfinite_grad_loss(model[0].weight)  # finite: sqrt(0) = 0
    assert torch.isfinite(loss)
    loss.backward()  # d sqrt(u)/du at u = 0 is inf
    norm, bad = check.read()
    assert bad
    check.clear()
    model.zero_grad(set_to_none=True)
    model[0](x).sum().backward()
    assert not check.read()[1]


def _nonfinite_grad_loss(p: torch.Tensor) -> torch.Tensor:
    """A finite loss (0) whose gradient for ``p`` is NaN: sqrt at 0 times a zero inner derivative."""
    return p.abs().sub(p.abs()).sqrt().sum()


@pytest.mark.parametrize("bad", [0, 1])
def test_gradient_check_hooks_keep_the_flag_whatever_gradients_come_after(bad):
    """Under ZeRO-1+ each gradient is checked by a hook as it is made: a finite gradient made after a non-finite one
    must not clear the flag, whichever of two parameters (made in either order) is the bad one."""
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))])
    check = GradientCheck(model, 2, "fp32", torch.device("cpu"))
    good = 1 - bad
    loss = (model[good] * 2).sum() + _nonfinite_grad_loss(model[bad])
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(model[good].grad).all() and not torch.isfinite(model[bad].grad).all()
    norm, flagged = check.read()
    assert norm is None and flagged  # ZeRO-1+: the norm is DeepSpeed's own


def test_gradient_check_tells_an_overflowing_norm_from_a_nonfinite_gradient():
    """fp32 ZeRO-0 reads p.grad: finite gradients whose sum of squares overflows are not a non-finite step."""
    model = _grad_model()
    check = GradientCheck(model, 0, "fp32", torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e30)
    norm, flagged = check.read()
    assert torch.isinf(norm) and not flagged
    model[0].weight.grad[0, 0] = float("nan")
    assert check.read()[1]


def test_gradient_check_without_gradients_reads_no_norm():
    """A mixed-precision ZeRO-0 step whose parameters got no gradient: no norm, nothing flagged (no error)."""
    check = GradientCheck(_grad_model(), 0, "bf16", torch.device("cpu"))
    assert check.read() == (None, False)


def test_stop_signals_record_the_first_and_hand_the_second_to_the_previous_handler():
    """The first SIGTERM/SIGINT only sets ``signum`` (the loop stops after its step); SIGINT's handler in force before
    is back at once, so a second Ctrl-C interrupts, while a repeated SIGTERM is ignored (Slurm and systemd send it to
    every process of a job, and train_shapes.sh passes it on too: the second one killed the stage before its save);
    after the block nothing of ours is left installed."""
    # The handler in force before is set here, Python's own (it raises KeyboardInterrupt): what an earlier test or
    # library left installed for SIGINT (once it was SIG_IGN, and the second signal was silently ignored) is not this
    # test's business.
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = {s: signal.getsignal(s) for s in StopSignals.SIGNALS}
        with StopSignals() as stop:
            assert all(signal.getsignal(s) == stop._handle for s in StopSignals.SIGNALS)
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signum == signal.SIGTERM  # Python runs the handler before the next bytecode
            assert signal.getsignal(signal.SIGINT) == before[signal.SIGINT]
            os.kill(os.getpid(), signal.SIGTERM)  # the same signal again, from the launcher: still here
            assert stop.signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) == stop._handle
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # the second one: the previous handler
        assert {s: signal.getsignal(s) for s in StopSignals.SIGNALS} == before
    finally:
        signal.signal(signal.SIGINT, saved)
