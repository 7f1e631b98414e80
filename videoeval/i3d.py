"""The I3D network behind FVD: a TorchScript file the user supplies, its input, and its features.

:func:`clips_to_i3d_input` maps uint8 clips to [-1, 1] and upsamples every frame to 224x224 with
``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``; :class:`I3DNetwork`
calls the user's TorchScript I3D and returns one feature row per clip; :func:`extract_features`
runs it over clips in batches. Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.checks import first_line
from core.files import sha256_file
from core.frames import frames_to_tensor

I3D_ENV = "TOKVID_I3D"
I3D_SIZE = 224
KINETICS_CLASSES = 400  # width of the I3D output when it is the Kinetics-400 logit layer
I3D_HOW = (
    "obtain `i3d_torchscript.pt` (the TorchScript port of the TF-Hub Kinetics-400 I3D used for FVD by "
    "StyleGAN-V, src/metrics/frechet_video_distance.py, published at "
    "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt) and pass it with --i3d PATH "
    f"or set {I3D_ENV}=PATH; tokvid never downloads it"
)
I3D_NOTE = (
    "i3d_torchscript.pt (StyleGAN-V's TorchScript port of TF-Hub deepmind/i3d-kinetics-400), "
    "called with rescale=False, resize=False, return_features=True -> 400-d pre-softmax layer"
)


def clips_to_i3d_input(
    clips: Sequence[np.ndarray], size: int = I3D_SIZE, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """uint8 clips -> the I3D input: float32 in [-1, 1], every frame upsampled to size x size.

    Resizing is per frame, ``F.interpolate(mode="bilinear", align_corners=False)`` without
    antialiasing (the clips are upsampled), as in the PyTorch FVD ports of StyleGAN-V/VideoGPT.

    Args:
        clips: N clips, each (T, h, w, 3) uint8, all the same shape.

    Returns:
        (N, 3, T, size, size) float32 on ``device``.
    """
    x = torch.stack([frames_to_tensor(c) for c in clips]).to(device)  # (N, 3, T, h, w)
    N, C, T, h, w = x.shape
    if (h, w) != (size, size):
        x = x.transpose(1, 2).reshape(N * T, C, h, w)  # (N*T, 3, h, w)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = x.reshape(N, T, C, size, size).transpose(1, 2)  # (N, 3, T, size, size)
    return x.contiguous()


def resolve_i3d_path(path: str | os.PathLike | None) -> Path:
    """``path``, else ``$TOKVID_I3D``; raises a ValueError that says what to obtain if neither is a file."""
    if path is None:
        path = os.environ.get(I3D_ENV) or None
    if path is None:
        raise ValueError(f"no I3D network given: {I3D_HOW}")
    if not Path(path).is_file():
        raise ValueError(f"I3D network {str(path)!r} not found: {I3D_HOW}")
    return Path(path)


class I3DNetwork:
    """A TorchScript I3D the user supplies; nothing is downloaded.

    The file is read with ``torch.jit.load``, the one accepted way to take a network from a
    user file (TorchScript's own loader reads the archive; Python's pickle never runs). It must hold the module
    ``i3d_torchscript.pt`` (see ``I3D_HOW``) or one with its signature; it is called as::

        net(x, rescale=False, resize=False, return_features=True)

    with x a (N, 3, T, 224, 224) float32 tensor in [-1, 1] (``rescale=True`` would expect
    [0, 255] and ``resize=True`` would resize inside the network; tokvid does both itself so
    the preprocessing is fixed and written down). It returns (N, 400) float: the layer before
    the softmax of the Kinetics-400 classifier, i.e. the class logits.

    Args:
        path: the TorchScript file; None reads ``$TOKVID_I3D``.
        device: where the network runs.
    """

    def __init__(self, path: str | os.PathLike | None, device: str | torch.device = "cpu") -> None:
        self.path = resolve_i3d_path(path)
        self.sha256 = sha256_file(self.path)
        self.device = torch.device(device)
        try:
            net = torch.jit.load(str(self.path), map_location=self.device)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"{str(self.path)!r} is not a TorchScript I3D ({first_line(err)}): {I3D_HOW}") from None
        self._worked = False  # until a first call succeeds, a RuntimeError means the file is not an I3D
        self.net = net.eval()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, 224, 224) in [-1, 1] -> (N, D) float32 features on the CPU."""
        try:
            out = self.net(x.to(self.device), rescale=False, resize=False, return_features=True)
        except RuntimeError as err:  # another network's file (an LPIPS one): its forward takes other arguments
            if self._worked:
                raise
            if isinstance(err, torch.cuda.OutOfMemoryError):  # a too large first batch is not a wrong file
                raise ValueError(
                    f"I3D ran out of device memory on a batch of {x.shape[0]} clips: lower --batch-size"
                ) from None
            raise ValueError(f"{str(self.path)!r} does not run as I3D ({first_line(err)}): {I3D_HOW}") from None
        self._worked = True
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the I3D network must return ({x.shape[0]}, D) features, got {got}")
        out = out.float().cpu()
        if not torch.isfinite(out).all():
            raise ValueError("the I3D network returned non-finite features")
        return out


def extract_features(
    net: I3DNetwork, clips: Iterable[tuple[str, np.ndarray]], *, i3d_size: int = I3D_SIZE, batch_size: int = 8
) -> tuple[np.ndarray, list[str]]:
    """Runs the I3D network over clips, ``batch_size`` at a time.

    Args:
        net: the I3D network.
        clips: (name, (T, h, w, 3) uint8) pairs, e.g. from :func:`iter_clips`.
        i3d_size: side the frames are upsampled to.

    Returns:
        (N, D) float64 features and the N clip names, in order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    feats, names, batch = [], [], []
    for name, clip in clips:
        names.append(name)
        batch.append(clip)
        if len(batch) == batch_size:
            feats.append(net(clips_to_i3d_input(batch, i3d_size, net.device)))
            batch = []
    if batch:
        feats.append(net(clips_to_i3d_input(batch, i3d_size, net.device)))
    if not feats:
        return np.zeros((0, 0)), names
    return torch.cat(feats).double().numpy(), names
