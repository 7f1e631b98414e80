"""Frame arrays and their shapes: checks, cover sizes, resizing with a center crop, and tensors.

Clips are RGB uint8 ``(T, H, W, 3)`` numpy arrays; models see float ``(3, T, H, W)`` tensors in [-1, 1].
Reading and writing files is :mod:`core.video_io` and :mod:`core.video_write`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.checks import is_int


def check_size(size: object) -> tuple[int, int]:
    """(h, w) of an output ``size``: a positive int (square) or a pair of them, NumPy's included; ValueError for
    anything else (a NumPy int was a TypeError, True was a side of 1, a triple a bare unpacking error)."""
    pair = (size, size) if is_int(size) else tuple(size) if isinstance(size, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(is_int(v) and v > 0 for v in pair):
        raise ValueError(f"size must be a positive int or (h, w) of positive ints, got {size!r}")
    return int(pair[0]), int(pair[1])


MAX_COVER_AREA = 64  # how much larger than the crop the resized frame may be: a 64:1 strip of the crop's shape


def cover_size(height: int, width: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """(h, w) that keeps the aspect ratio of ``height`` x ``width`` and just covers ``size`` (an int is square)."""
    h, w = check_size(size)
    scale = max(h / height, w / width)
    new_h, new_w = max(h, round(height * scale)), max(w, round(width * scale))
    if new_h * new_w > MAX_COVER_AREA * h * w:  # a 102-byte 1x8000 PNG became 64x512000 floats (567 MiB) to crop
        raise ValueError(
            f"a {height}x{width} frame is too far from the {h}x{w} it is cropped to: its sides differ by more than "
            f"{MAX_COVER_AREA}:1 against the crop's"
        )
    return new_h, new_w


def decoded_size(
    height: int, width: int, sar: float, turns: int, size: int | tuple[int, int] | None
) -> tuple[int, int]:
    """(h, w) a decoder should scale a stored ``height`` x ``width`` frame to, before it is turned.

    Shown, the frame is ``sar`` (the sample aspect ratio) times wider and then turned by ``turns`` quarter turns;
    the result, turned the same way, has that display shape, or with ``size`` the :func:`cover_size` of it.
    """
    display_w = max(1, round(width * sar))
    shown = (height, display_w) if turns % 2 == 0 else (display_w, height)  # (h, w) on screen
    h, w = shown if size is None else cover_size(*shown, size)
    return (h, w) if turns % 2 == 0 else (w, h)  # the stored orientation


def check_frames(frames: np.ndarray, name: str = "frames") -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        got = f"{type(frames).__name__} {getattr(frames, 'dtype', '')}"
        raise ValueError(f"{name} must be a uint8 numpy array, got {got}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"{name} must have shape (T, H, W, 3) with T, H, W > 0, got {frames.shape}")


def resize_center_crop(frames: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resizes so the clip covers ``size``, keeping the aspect ratio, then crops the center.

    With an int the short side becomes ``size`` and the result is square. Resizing is
    bilinear with antialiasing (``torch.nn.functional.interpolate``).

    Args:
        frames: (T, H, W, 3) uint8.
        size: output side, or (h, w).

    Returns:
        (T, h, w, 3) uint8.
    """
    check_frames(frames)
    T, H, W, _ = frames.shape
    new_h, new_w = cover_size(H, W, size)
    h, w = check_size(size)
    if (new_h, new_w) != (H, W):
        out = np.empty((T, new_h, new_w, 3), dtype=np.uint8)
        for i in range(0, T, 16):  # chunks bound the float32 copy of long clips
            chunk = np.array(frames[i : i + 16], order="C")  # a copy: views with negative strides, read-only arrays
            x = torch.from_numpy(chunk).permute(0, 3, 1, 2).float()  # (t, 3, H, W)
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
            out[i : i + 16] = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        frames = out
    top, left = (new_h - h) // 2, (new_w - w) // 2
    return np.ascontiguousarray(frames[:, top : top + h, left : left + w])


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames -> (3, T, H, W) float32 tensor in [-1, 1]."""
    check_frames(frames)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (3, T, H, W)
    return x.float().div_(127.5).sub_(1.0)


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """Float video in [-1, 1] -> uint8 frames (values are clamped, then rounded); ValueError on NaN or infinity,
    which the cast made black (a diverged decoder wrote black videos without a word).

    Args:
        video: (3, T, H, W) or (B, 3, T, H, W), any float dtype and device.

    Returns:
        (T, H, W, 3) or (B, T, H, W, 3) uint8 numpy array.
    """
    if not isinstance(video, torch.Tensor) or video.ndim not in (4, 5) or video.shape[-4] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"video must be a (3, T, H, W) or (B, 3, T, H, W) tensor, got {shape}")
    if not bool(torch.isfinite(video).all()):
        raise ValueError("video holds NaN or infinite values: the model that made it produced no picture there")
    x = ((video.detach().float() + 1.0) * 127.5).clamp_(0, 255).round_().to(torch.uint8).cpu()
    return x.movedim(-4, -1).numpy()  # (..., T, H, W, 3)
