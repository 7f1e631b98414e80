"""Arithmetic that must not depend on the hardware's fast paths (token ids, which a cache and a pipeline share)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def exact_numerics() -> Iterator[None]:
    """fp32 matmuls and convolutions without TF32, and fixed cuDNN algorithms, inside; the settings are restored after.

    On NVIDIA GPUs PyTorch convolves in TF32 by default: an H100 gave the shipped tokenizer latents up to 4.5e-3 apart
    for the same clip alone or in a batch of 8, and 2 of 2,560 ids changed (a reviewer's measure). The settings are
    process-wide, so this is for code that owns the device while it runs (a tokenizer's encode, the cache builder).
    """
    saved = (
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
    )  # fmt: skip
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved[:2]
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved[2:]
