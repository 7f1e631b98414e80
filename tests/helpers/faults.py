"""Fault injection for training tests: a hard kill at a step or mid-save, and a NaN loss at a chosen micro-batch.

Production loops carry no test hooks; these faults wrap library functions from the outside. Run a
training CLI with faults as

    python tests/helpers/faults.py exit_at_step=6 -- tools.train --config ... --out ...

(also as the script that ``torchrun`` launches), or call :func:`install` in-process.

Faults (``key=value`` before ``--``):
    exit_at_step=N      ``os._exit(17)`` when the loop is about to run step N.
    sigterm_at_step=N   the process sends itself SIGTERM when the loop is about to run step N (once).
    sigterm_rank=R      ... on rank R only (default: every rank).
    exit_in_save=N      ``os._exit(17)`` in the checkpoint save of step N, after this rank's state
                        file is written and before the ``COMPLETE`` marker.
    nan_at=S[.M]        the loss of micro-batch M (default 0) of step S is NaN, once.
    nan_rank=R          ... on rank R only (default: every rank); -1 = the last rank.
    inf_grad_at=S[.M]   the loss of micro-batch M of step S is finite but its gradient is inf, once.
    d_inf_grad_at=S     the discriminator's loss at step S is finite but its gradient is inf, once.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import sys
from pathlib import Path

import torch

EXIT_CODE = 17


class InfGrad(torch.autograd.Function):
    """The identity forward; an infinite gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def _rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def install(faults: dict[str, str], patch=setattr) -> None:
    """Wraps the trainers, their tasks' forwards and the checkpoint writer with the given faults.

    ``patch(obj, name, value)`` sets each wrapper: ``setattr`` in a child process, pytest's
    ``monkeypatch.setattr`` in-process so that the wrappers are undone after the test.
    """
    from videotrain import checkpoint
    from videotrain.generator_task import GeneratorTask, GeneratorTrainer
    from videotrain.tokenizer_task import TokenizerTask, TokenizerTrainer

    state = {"step": -1, "micro": 0, "poisoned": False}
    exit_at = int(faults["exit_at_step"]) if "exit_at_step" in faults else None
    sigterm_at = int(faults["sigterm_at_step"]) if "sigterm_at_step" in faults else None
    sigterm_rank = int(faults.get("sigterm_rank", "-1"))

    for cls in (GeneratorTrainer, TokenizerTrainer):

        def step_wrapper(self, _orig=cls.train_step):
            if exit_at is not None and self.step == exit_at:
                os._exit(EXIT_CODE)
            on_rank = sigterm_rank in (-1, _rank()[0])
            if sigterm_at is not None and self.step == sigterm_at and on_rank and not state.get("signalled"):
                state["signalled"] = True
                os.kill(os.getpid(), signal.SIGTERM)
            state["step"], state["micro"] = self.step, 0
            return _orig(self)

        patch(cls, "train_step", step_wrapper)

    poison = {"nan_at": lambda loss: loss * float("nan"), "inf_grad_at": InfGrad.apply}
    kinds = [k for k in poison if k in faults]
    if kinds:
        step, _, micro = faults[kinds[0]].partition(".")
        want, spoil = (int(step), int(micro or 0)), poison[kinds[0]]
        want_rank = int(faults.get("nan_rank", "-2"))

        for task in (GeneratorTask, TokenizerTask):

            def forward_wrapper(self, *args, _orig=task.forward, **kwargs):
                out = _orig(self, *args, **kwargs)
                if not next(self.children()).training:  # eval batches are not training micro-batches
                    return out
                here, state["micro"] = (state["step"], state["micro"]), state["micro"] + 1
                rank, world = _rank()
                on_rank = want_rank == -2 or rank == (world - 1 if want_rank == -1 else want_rank)
                if here == want and on_rank and not state["poisoned"]:
                    state["poisoned"] = True
                    return (spoil(out[0]), *out[1:])
                return out

            patch(task, "forward", forward_wrapper)

    if "d_inf_grad_at" in faults:  # the discriminator's loss is finite, its gradient infinite
        from videotrain import tokenizer_task

        at, hinge = int(faults["d_inf_grad_at"]), tokenizer_task.hinge_d_loss

        def d_loss_wrapper(real, fake):
            out = hinge(real, fake)
            if state["step"] == at and not state.get("d_poisoned"):
                state["d_poisoned"] = True
                return InfGrad.apply(out)
            return out

        patch(tokenizer_task, "hinge_d_loss", d_loss_wrapper)

    if "exit_in_save" in faults:
        tag = checkpoint.tag_for(int(faults["exit_in_save"]))
        write = checkpoint.atomic_write_text

        def write_wrapper(path, text):
            write(path, text)
            path = Path(path)
            if path.parent.name == tag and path.name.startswith("rank") and path.suffix == ".json":
                os._exit(EXIT_CODE)

        patch(checkpoint, "atomic_write_text", write_wrapper)


def free_port() -> int:
    """A free localhost TCP port (for a launcher's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(nproc: int = 2) -> tuple[str, ...]:
    """The launcher prefix that runs a script as ``nproc`` local processes under torch.distributed.run."""
    return (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(free_port()))  # fmt: skip


def command(tool: str, faults: tuple[str, ...] | list[str] = (), launcher: tuple[str, ...] = ()) -> list[str]:
    """The command line that runs ``tools/<tool>.py`` (under ``launcher``, e.g. torchrun), through this module
    when ``faults`` (``key=value`` strings) are given."""
    root = Path(__file__).resolve().parents[2]
    script = [str(Path(__file__)), *faults, "--", f"tools.{tool}"] if faults else [str(root / "tools" / f"{tool}.py")]
    return [*(launcher or [sys.executable]), *script]


def main(argv: list[str]) -> int:
    split = argv.index("--")
    faults = dict(item.split("=", 1) for item in argv[:split])
    module, *args = argv[split + 1 :]
    install(faults)
    return importlib.import_module(module).main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
