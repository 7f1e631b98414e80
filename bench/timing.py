"""In-process timing for the benchmarks that run both sides in one process: ABBA-alternated wall times,
with the device's queue drained before each clock read, and the device's memory read bandwidth.

On CUDA, kernels run asynchronously: a clock read right after a call would time only the launches. Every
timed call here ends with ``torch.cuda.synchronize`` on a CUDA device, so the wall time covers the work.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

CPU = torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Waits for the work queued on ``device`` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    calls: dict[str, Callable[[], torch.Tensor]],
    shapes: dict[str, tuple[int, ...]],
    repeats: int,
    cpu: dict[str, list[float]] | None = None,
    device: torch.device = CPU,
) -> dict[str, list[float]]:
    """Times each call ``repeats`` times (wall clock, ``device`` drained before each clock read), alternating
    the order every repeat (ABBA), and checks every output's shape against ``shapes``. ``cpu`` collects this
    process's CPU seconds per call: on a busy machine with one thread, a steadier measure than wall time."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            synchronize(device)
            cpu_start, start = time.process_time(), time.perf_counter()
            out = calls[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - cpu_start)
            if tuple(out.shape) != shapes[name]:
                raise RuntimeError(f"{name} gave shape {tuple(out.shape)}, expected {shapes[name]}")
    return times


def read_bandwidth_gbs(device: torch.device = CPU, mib: int = 512, repeats: int = 5) -> float:
    """Memory read bandwidth (GB/s) on ``device``: the median time of ``torch.sum`` over ``mib`` MiB (on the
    CPU with torch's threads)."""
    x = torch.ones(mib * 2**20 // 4, device=device)
    x.sum()  # touch every page (on CUDA: load the kernel) first
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        x.sum()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return x.numel() * 4 / statistics.median(times) / 1e9
