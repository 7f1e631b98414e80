"""The only module that imports deepspeed: process-group setup, engine construction and
DeepSpeed's checkpoint files.

Works under ``deepspeed``'s launcher, ``torchrun`` / ``python -m torch.distributed.run`` (one or
many nodes) and a bare ``python tools/train.py`` (one process, no MPI needed). Without CUDA it
runs on the CPU over gloo.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from typing import Any

import torch

from core.checks import first_line, out_of_memory
from core.files import read_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, local rank, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_int(name: str, default: int) -> int:
    """The environment variable ``name`` as a non-negative integer, ``default`` when unset.

    Raises:
        ValueError: it is set to anything else, naming it ("invalid literal for int()" named none).
    """
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.strip().isdigit():
        raise ValueError(f"the environment variable {name}={value!r} must be a non-negative integer")
    return int(value)


def init_distributed() -> DistInfo:
    """Initialises torch.distributed through DeepSpeed (gloo on CPU, nccl on CUDA).

    A bare single process gets RANK=0, WORLD_SIZE=1, LOCAL_RANK=0 and a localhost store on a port that the OS
    picks as it binds (unless MASTER_PORT is set), so DeepSpeed never looks for MPI; a port probed free and bound
    later was now and then taken in between by another process (EADDRINUSE in a test run of parallel trainings).
    A launched one (RANK set) must give WORLD_SIZE, MASTER_ADDR and MASTER_PORT, with RANK < WORLD_SIZE; LOCAL_RANK
    defaults to 0 (a Kubeflow-style launch sets only the others). Without them DeepSpeed went looking for MPI (an
    mpi4py traceback), and RANK=1 WORLD_SIZE=1 waited 30 minutes for a rank 0 that never came.

    Raises:
        ValueError: a launch environment that is incomplete or inconsistent, naming the variables.
    """
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "0")  # 0: bound below, by the store itself
    missing = [name for name in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ValueError(f"RANK is set but not {', '.join(missing)}: a launched process needs RANK, WORLD_SIZE, "
                         "MASTER_ADDR and MASTER_PORT (torchrun and deepspeed set them)")  # fmt: skip
    os.environ.setdefault("LOCAL_RANK", "0")
    rank, world, local = (env_int(name, 0) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    env_int("MASTER_PORT", 0)  # "invalid literal for int()" named none of them
    if not rank < world:
        raise ValueError(f"RANK={rank} must be below WORLD_SIZE={world}")
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed  # noqa: PLC0415 - kept out of import time of every other module
    import deepspeed.ops

    # DeepSpeed's shared-memory CPU all-reduce needs a ~30 s g++ build; gloo is fine for us.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if not torch.distributed.is_initialized():
        backend = "nccl" if cuda else "gloo"
        if os.environ["WORLD_SIZE"] == "1" and os.environ["MASTER_PORT"] == "0":
            store = torch.distributed.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
            os.environ["MASTER_PORT"] = str(store.port)
            torch.distributed.init_process_group(backend, store=store, rank=0, world_size=1)
        deepspeed.init_distributed(dist_backend=backend)  # takes over a process group that is already up
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return DistInfo(rank, world, local, device)


def _accelerator_name() -> str:
    from deepspeed.accelerator import get_accelerator

    return get_accelerator().device_name()


def deepspeed_config(
    engine_json: str | None,
    *,
    micro_batch: int,
    grad_accum: int,
    grad_clip: float,
    precision: str,
    zero_stage: int | None,
) -> dict[str, Any]:
    """Engine JSON (engine keys only) + values filled from the training config.

    The JSON may set ZeRO stage, offload and bucket sizes; batch size, accumulation, clipping
    and precision always come from the training config, so there is one source of truth. A
    JSON that sets any of those is refused.

    ``bf16`` on a CPU accelerator trains through ``torch.autocast`` (DeepSpeed's ``torch_autocast``):
    fp32 weights and optimizer, bf16 matmuls and convolutions. On GPUs it is DeepSpeed's bf16 mode.
    """
    cfg: dict[str, Any] = {}
    if engine_json:
        cfg = read_json(engine_json, "DeepSpeed config")
        if not isinstance(cfg, dict) or not isinstance(cfg.get("zero_optimization", {}), dict):
            raise ValueError(
                f"DeepSpeed config {engine_json!r} must be a JSON object whose 'zero_optimization' is an object"
            )
    owned = {
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
        "bf16",
        "fp16",
        "torch_autocast",
        "optimizer",
        "scheduler",
    }
    clash = sorted(owned & set(cfg))
    if clash:
        raise ValueError(f"DeepSpeed config {engine_json!r} sets {clash}; those come from the training config")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    cfg["train_micro_batch_size_per_gpu"] = micro_batch
    cfg["gradient_accumulation_steps"] = grad_accum
    cfg["gradient_clipping"] = grad_clip
    autocast = precision == "bf16" and _accelerator_name() == "cpu"
    cfg["bf16"] = {"enabled": precision == "bf16" and not autocast}
    cfg["fp16"] = {"enabled": precision == "fp16", "initial_scale_power": 12}
    if autocast:
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    if zero_stage is not None:
        cfg.setdefault("zero_optimization", {})["stage"] = zero_stage
    cfg.setdefault("zero_optimization", {}).setdefault("stage", 0)
    cfg.setdefault("steps_per_print", 10**9)
    cfg.setdefault("wall_clock_breakdown", False)
    return cfg


def build_engine(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    *,
    caller_fills_grads: bool = False,
):
    """``deepspeed.initialize`` with our own torch optimizer; returns the engine.

    Checkpoint loading is switched to ``torch.load(weights_only=True)`` (see
    :class:`SafeCheckpointEngine`), so resuming never unpickles arbitrary objects.

    Args:
        model: the module whose forward returns the loss.
        optimizer: a torch optimizer over its parameters.
        config: the engine config from :func:`deepspeed_config`.
        caller_fills_grads: the caller gives every trainable parameter without a gradient a
            zero one before each boundary ``engine.step()``, as DeepSpeed's gradient all-reduce
            does. On one process with ZeRO-0 in fp32 that all-reduce is then skipped.
    """
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    engine.checkpoint_engine = SafeCheckpointEngine()
    fp32 = not (config.get("bf16", {}).get("enabled") or config.get("fp16", {}).get("enabled"))
    if caller_fills_grads and fp32 and engine.zero_optimization_stage() == 0 and not _multi_process():
        # Over one rank DeepSpeed's all-reduce is an identity that still costs several passes
        # over the gradients per step: flatten them into one buffer, scale it by 1/1,
        # all-reduce it, copy it back. Its own pipeline engine turns it off the same way; the
        # one other thing it does, zero gradients for parameters without one, is the caller's.
        engine.enable_backward_allreduce = False
    return engine


def discard_gradients(engine) -> None:
    """Drops every gradient ``engine`` holds for the step being accumulated, as DeepSpeed's own overflow path does.

    ``engine.zero_grad()`` clears ``p.grad`` only. ZeRO keeps accumulated gradients in its optimizer: ZeRO-3 its
    ``averaged_gradients`` (or CPU-offload buffers), so the next, finite step was applied as inf and dropped by
    DeepSpeed; ZeRO-1/2 the micro-batches summed before the boundary (``all_grad_tensors``), which a skipped
    step's discriminator then carried into the next step. Written against DeepSpeed 0.19's optimizers.
    """
    engine.zero_grad()
    optimizer, stage = engine.optimizer, engine.zero_optimization_stage()
    if stage == 3:
        optimizer._overflow_clean_up(optimizer.loss_scale)
    elif stage in (1, 2):  # DeepSpeed's ZeRO-1/2 optimizer; its bf16 optimizer keeps no such buffers
        optimizer.zero_grad(set_to_none=True)
        if getattr(optimizer, "cpu_offload", False):
            optimizer.reset_cpu_buffers()
        averaged, summed = getattr(optimizer, "averaged_gradients", {}), getattr(optimizer, "all_grad_tensors", {})
        for k in set(averaged) | set(summed):
            averaged[k] = None
            summed[k] = None


def _allow_deepspeed_globals() -> None:
    """Registers the few plain classes DeepSpeed stores in its checkpoints as safe to load."""
    import collections

    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    safe = [collections.OrderedDict, ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]
    torch.serialization.add_safe_globals(safe)


class SafeCheckpointEngine:
    """DeepSpeed's torch checkpoint engine, but loading with ``weights_only=True``."""

    def __init__(self) -> None:
        from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

        self._inner = TorchCheckpointEngine()
        _allow_deepspeed_globals()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def load(self, path: str, map_location=None):  # noqa: ANN001 - DeepSpeed's signature
        """``torch.load(weights_only=True)``; a file torch's readers cannot read (a truncated one raised EOFError or
        RuntimeError and ended the CLIs in a traceback) is a :class:`DamagedCheckpointFile` naming it. Running out
        of memory stays what it is: the file is not at fault."""
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except (EOFError, RuntimeError, pickle.UnpicklingError) as err:
            if out_of_memory(err):
                raise
            why = f"{type(err).__name__}: {first_line(err)}"
            if "Weights only load failed" in str(err):
                why += "; a file of another DeepSpeed version may hold objects this loader does not allow"
            raise DamagedCheckpointFile(f"checkpoint file {path} could not be read ({why})") from None


class DamagedCheckpointFile(ValueError):
    """A DeepSpeed checkpoint file that ``torch.load`` could not read; :func:`videotrain.checkpoint.load` adds which
    checkpoint to remove (a discriminator's file sits one folder below it)."""


def _multi_process() -> bool:
    """Whether a process group of more than one process is initialised."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def all_reduce_max(value: float, device: torch.device) -> float:
    """The max of a scalar over all ranks (the value itself on one process, without a collective)."""
    return float(all_reduce_max_values(torch.tensor([value], dtype=torch.float64), device)[0])


def all_reduce_max_values(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Elementwise max of a CPU tensor over all ranks, reduced on ``device``, returned on the CPU (the
    tensor itself on one process, without a collective or a device copy)."""
    if not _multi_process():
        return values
    out = values.to(device)
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.MAX)
    return out.cpu()


def all_reduce_sum(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Elementwise sum of a CPU tensor over all ranks, reduced on ``device``, returned on the CPU (the tensor
    itself on one process, without a collective or a device copy)."""
    if not _multi_process():
        return values
    out = values.to(device)
    torch.distributed.all_reduce(out)
    return out.cpu()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all ranks (the tensor itself on one process, without a collective)."""
    if not _multi_process():
        return values
    out = values.clone()
    torch.distributed.all_reduce(out)
    return out / torch.distributed.get_world_size()


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def full_state_dict(engine, model: torch.nn.Module, zero_stage: int) -> dict[str, torch.Tensor]:
    """The model's complete fp32 CPU state dict; ZeRO-3 shards are gathered (collective call).

    Under DeepSpeed's bf16 or fp16 the module holds half-precision copies and the optimizer the fp32 master
    weights: the parameters are taken from the masters (``.float()`` of the copy only widened values already
    rounded, by up to ~5e-4 in fp16), buffers from the module.
    """
    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    if any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters()):
        state.update(_fp32_masters(engine, model))
    return state


def _fp32_masters(engine, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """name -> fp32 master of each trainable parameter that a half-precision engine keeps (collective call)."""
    from deepspeed.utils import safe_get_full_fp32_param

    masters, missing = {}, []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        full = safe_get_full_fp32_param(p)  # ZeRO-1/2/3 and the bf16 optimizer
        if full is None:
            missing.append((name, p))
        else:
            masters[name] = full.detach().float().cpu().clone()
    optimizer = getattr(engine, "optimizer", None)
    by_param = {}  # fp16 at ZeRO-0: DeepSpeed's FP16 optimizers keep the masters in groups beside the fp16 params
    if missing and hasattr(optimizer, "fp16_groups"):
        if hasattr(optimizer, "fp32_groups_flat"):  # the fused one: one flat fp32 tensor per group
            from torch._utils import _unflatten_dense_tensors

            groups = [_unflatten_dense_tensors(f, h) for h, f in zip(optimizer.fp16_groups, optimizer.fp32_groups_flat)]
        else:  # the unfused one: an fp32 tensor per parameter
            groups = getattr(optimizer, "fp32_groups", [])
        for half, full in zip(optimizer.fp16_groups, groups):
            by_param.update({id(p): master for p, master in zip(half, full)})
    for name, p in missing:
        if id(p) in by_param:
            masters[name] = by_param[id(p)].detach().float().cpu().clone()
        else:
            log.warning("no fp32 master found for %s: exported from its half-precision copy", name)
    return masters
