"""Safetensors weights plus a YAML config: the only on-disk model format tokvid reads.

Nothing here unpickles: weights go through ``safetensors`` and configs through
``yaml.safe_load``. Files are written to a temp name and renamed, weights before the
config, so a directory whose config exists always has complete weights next to it.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from core.checks import first_line, out_of_memory
from core.config import from_dict, load_yaml, save_config
from core.files import atomic_path

T = TypeVar("T")
M = TypeVar("M", bound=torch.nn.Module)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"


def folder_fingerprint(directory: str | os.PathLike, what: str) -> str:
    """sha256 identifying a saved model folder: its ``config.yaml`` bytes, then its ``model.safetensors``.

    Each file contributes its name, a NUL byte, its size as 8 little-endian bytes and its bytes, so the two
    files cannot be confused by moving bytes between them. The same weights stored in another dtype are
    another folder (a token cache records its tokenizer's; a generator's export records the cache's).

    Raises:
        ValueError: the folder or one of the two files is missing (``what`` names the folder: "tokenizer").
    """
    directory = Path(directory)
    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        path = directory / name
        if not path.is_file():
            raise ValueError(f"{what} folder {str(directory)!r} has no {name}")
        h.update(name.encode() + b"\0" + path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def save_state(state: dict[str, torch.Tensor], path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
    """Writes a state dict to ``path`` as safetensors, atomically.

    ``dtype`` (e.g. ``torch.float16``) stores every floating-point tensor in that precision to
    halve the file; loading copies the values back into the model's own (fp32) parameters.
    """
    if dtype is not None and not dtype.is_floating_point:  # an int8 "precision" would store every weight as 0
        raise ValueError(f"weights can be stored in a floating-point dtype only, got {dtype}")
    # safetensors refuses shared storage and non-contiguous views: store plain copies.
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    if dtype is not None:
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in plain.items()}
        for k, v in plain.items():  # fp16 tops out at 65504: a larger weight would be stored as inf
            if v.is_floating_point() and bool(torch.isfinite(v).all()) and not bool(torch.isfinite(cast[k]).all()):
                raise ValueError(f"{k} has values outside the range of {dtype}: store it in a wider dtype")
        plain = cast
    with atomic_path(path) as tmp:
        mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o666 less the umask, as every file tokvid writes
        try:  # safetensors writes its own 0o600 temp file and renames it over ours
            save_file(plain, tmp)
        except SafetensorError as err:  # an I/O error (a full disk) in its own type: the CLIs showed a traceback
            code = re.search(r"\(os error (\d+)\)", str(err))
            raise OSError(int(code.group(1)) if code else errno.EIO, f"cannot write {str(path)!r}: {err}") from None
        os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY)
        try:  # on disk before the rename, and before the config that says the folder is complete
            os.fsync(fd)
        finally:
            os.close(fd)


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a safetensors file; a missing or corrupt file is a ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {str(path)!r} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"weights file {str(path)!r} is not a readable safetensors file: {err}") from None


MAX_LISTED = 4  # offending keys named per kind in load_strict's message


def _mismatches(own: dict[str, tuple[tuple[int, ...], torch.dtype]],
                theirs: dict[str, tuple[tuple[int, ...], torch.dtype]], what: str) -> str | None:  # fmt: skip
    """The message of :func:`load_strict` for two {key: (shape, dtype)} maps, or None when they fit."""
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    both = sorted(set(own) & set(theirs))
    mismatched = [f"{k}: weights {theirs[k][0]} vs model {own[k][0]}" for k in both if own[k][0] != theirs[k][0]]
    mistyped = [
        f"{k}: weights {theirs[k][1]} vs model {own[k][1]}"
        for k in both
        if not (theirs[k][1].is_floating_point and own[k][1].is_floating_point) and theirs[k][1] != own[k][1]
    ]
    problems = []
    for kind, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched),
                        ("dtype mismatches", mistyped)):  # fmt: skip
        if items:  # a config from another model listed ~60 keys in 3,000 characters: the first few say enough
            more = f"; and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
            problems.append(f"{len(items)} {kind} [{'; '.join(items[:MAX_LISTED])}{more}]")
    return f"{what} weights do not match its config: " + ", ".join(problems) if problems else None


def _layout(state: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str = "model") -> None:
    """Loads ``state`` into ``module``; any missing, unexpected, mis-shaped or mis-typed key is a ValueError.

    Floating-point weights load into floating-point parameters of any precision (fp16 files into fp32
    models); otherwise the dtypes must be equal (an integer or bool tensor would be cast into a float
    parameter, and a float one truncated into an integer buffer). The message lists every offending key
    with both shapes or dtypes, so a user can see at once whether the config or the weights are wrong.
    """
    problem = _mismatches(_layout(module.state_dict()), _layout(state), what)
    if problem:
        raise ValueError(problem)
    module.load_state_dict(state, strict=True)


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


def weights_layout(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """{key: (shape, dtype)} of a safetensors file, read from its header alone (no tensor is loaded).

    Raises:
        ValueError: a missing or unreadable file, or a dtype torch has no type for.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            layout = {k: (tuple(s.get_shape()), s.get_dtype()) for k, s in slices.items()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"weights file {str(path)!r} is not a readable safetensors file: {err}") from None
    unknown = sorted({d for _, d in layout.values()} - set(_SAFETENSORS_DTYPES))
    if unknown:
        raise ValueError(f"weights file {str(path)!r} holds tensors of dtype {unknown}, which tokvid does not load")
    return {k: (shape, _SAFETENSORS_DTYPES[d]) for k, (shape, d) in layout.items()}


def load_pretrained(build: Callable[[], M], directory: str | os.PathLike, what: str) -> M:
    """``build()`` with the weights of ``directory/model.safetensors`` loaded strictly (see :func:`load_strict`).

    The file's header is read first (a missing or damaged file fails before the model is built), and the built
    model's shapes are compared with it before any tensor is read. A config that asks for more memory than the
    machine has (an extra digit in ``dim``: 1.7 TB) is a ValueError naming it, not torch's allocator traceback.
    A build on the meta device would find the mismatch without allocating, but torch runs several of its ops there
    through Python references that import torch._dynamo, a second on generate.py's path: not done.
    """
    path = Path(directory) / WEIGHTS_NAME
    theirs = weights_layout(path)
    try:
        model = build()
    except RuntimeError as err:
        if not out_of_memory(err):
            raise
        raise ValueError(
            f"{what}: its config asks for a model larger than this machine's memory ({first_line(err)}): is its "
            f"config right? Its weights file holds {sum(math.prod(s) for s, _ in theirs.values()):,} values"
        ) from None
    problem = _mismatches(_layout(model.state_dict()), theirs, what)
    if problem:
        raise ValueError(problem)
    load_strict(model, load_state(path), what)
    return model


def save_pretrained(
    module: torch.nn.Module, config: Any, directory: str | os.PathLike, dtype: torch.dtype | None = None
) -> None:
    """Writes ``model.safetensors`` (floats stored as ``dtype`` if given) then ``config.yaml``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_state(module.state_dict(), directory / WEIGHTS_NAME, dtype)
    save_config(config, directory / CONFIG_NAME)


def load_config(config_cls: type[T], directory: str | os.PathLike, file_name: str = CONFIG_NAME, hint: str = "") -> T:
    """Reads and validates ``file_name`` (``config.yaml``) from a pretrained directory; ``hint`` ends the error
    when the file is missing."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"model directory {str(directory)!r} is a file: give the folder that holds {file_name}")
    if not directory.is_dir():
        raise ValueError(f"model directory {str(directory)!r} does not exist")
    cfg_path = directory / file_name
    if not cfg_path.is_file():
        raise ValueError(f"model directory {str(directory)!r} has no {file_name}{hint}")
    return from_dict(config_cls, load_yaml(cfg_path), where=str(cfg_path))
