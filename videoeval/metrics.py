"""Reconstruction metrics for videos: PSNR, SSIM and a user-supplied LPIPS network.

All functions take videos of shape (B, 3, T, H, W) in [-1, 1] (the tokenizer's range) and
return one number per video, shape (B,). PSNR and SSIM are computed on [0, 1] after
clamping, so a reconstruction that overshoots the range is scored as it would be displayed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.checks import first_line

# PSNR of (near-)identical videos: 10*log10(1/MSE) is +inf at MSE = 0, which breaks means and
# JSON. 100 dB is far above any lossy codec (8-bit rounding alone gives ~59 dB).
PSNR_MAX_DB = 100.0

# SSIM constants from Wang et al. 2004, for data range 1.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise ValueError(f"{name} expects two tensors")
    if x.shape != y.shape or x.ndim != 5 or x.shape[1] != 3:
        shapes = f"{tuple(x.shape)} and {tuple(y.shape)}"
        raise ValueError(f"{name} expects two (B, 3, T, H, W) videos of equal shape, got {shapes}")
    if not (x.dtype.is_floating_point and y.dtype.is_floating_point):  # uint8 frames would be clamped to {0, 1}
        raise ValueError(f"{name} expects float videos in [-1, 1], got {x.dtype} and {y.dtype}")


def _unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] float32, clamped."""
    return ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per video, on [0, 1] (peak 1).

    The MSE is taken over all channels, frames and pixels of a video, so this is the PSNR of
    the whole clip, not a mean of per-frame PSNRs.

    Args:
        x: (B, 3, T, H, W) in [-1, 1].
        y: (B, 3, T, H, W) in [-1, 1].

    Returns:
        (B,) float32 in dB, ``10 * log10(1 / MSE)`` capped at ``PSNR_MAX_DB`` (so identical
        videos give exactly ``PSNR_MAX_DB``, never inf).
    """
    _check_pair(x, y, "psnr")
    # float64 keeps tiny MSEs (near-identical clips) exact.
    mse = (_unit(x).double() - _unit(y).double()).pow(2).flatten(1).mean(dim=1)  # (B,)
    db = 10.0 * torch.log10(1.0 / mse)  # +inf where mse == 0
    return db.clamp(max=PSNR_MAX_DB).float()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(size,) float64 1-D Gaussian taps that sum to 1; the 2-D window is its outer product."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Structural similarity per video (Wang et al. 2004), averaged over channels and frames.

    Each channel of each frame is compared separately with an 11x11 Gaussian window
    (sigma 1.5), K1 = 0.01, K2 = 0.03 on [0, 1]. Filtering is 'valid' (no padding), so the
    SSIM map is (H - 10, W - 10); there is no automatic downsampling.

    Args:
        x: (B, 3, T, H, W) in [-1, 1], H and W >= 11.
        y: (B, 3, T, H, W) in [-1, 1].

    Returns:
        (B,) float32, 1 for identical videos.
    """
    _check_pair(x, y, "ssim")
    B, C, T, H, W = x.shape
    if H < SSIM_WINDOW or W < SSIM_WINDOW:
        raise ValueError(f"ssim needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {H}x{W}")
    # float64: the variances are E[z²] - mu², whose float32 round-off (~1e-8) over C2 = 9e-4 moved a flat bright
    # area's SSIM by up to 3e-4 (252 against 253 grey)
    a = _unit(x).double().reshape(B * C * T, 1, H, W)  # (N, 1, H, W), one map per channel per frame
    b = _unit(y).double().reshape(B * C * T, 1, H, W)
    g = gaussian_window().to(device=x.device, dtype=torch.float64)

    def blur(z: torch.Tensor) -> torch.Tensor:  # separable 'valid' Gaussian filter
        z = F.conv2d(z, g.view(1, 1, -1, 1))  # (N, 1, H - 10, W)
        return F.conv2d(z, g.view(1, 1, 1, -1))  # (N, 1, H - 10, W - 10)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.reshape(B, C * T, -1).mean(dim=(1, 2)).float()  # (B,)


class LPIPS(nn.Module):
    """LPIPS distance from a TorchScript network the user provides; nothing is downloaded.

    The file must hold a module ``net(a, b)`` that takes two (N, 3, H, W) image batches in
    [-1, 1] and returns (N,) or (N, 1, 1, 1) distances. One way to make it, on a machine
    with the ``lpips`` package::

        import lpips, torch
        net = lpips.LPIPS(net="alex").eval()
        x = torch.zeros(1, 3, 64, 64)
        torch.jit.trace(net, (x, x)).save("lpips_alex.pt")

    The network's weights are frozen, but gradients flow to the inputs, so the same object
    serves as a perceptual training loss on image batches (wrap evaluation in no_grad).

    Args:
        path: the TorchScript ``.pt`` file.
        frame_batch_size: frames sent through the network at once.
    """

    def __init__(self, path: str | os.PathLike | None, *, frame_batch_size: int = 32) -> None:
        super().__init__()
        how = (
            "provide a TorchScript LPIPS file taking two (N, 3, H, W) images in [-1, 1], e.g. "
            "`torch.jit.trace(lpips.LPIPS(net='alex').eval(), (x, x)).save('lpips_alex.pt')` "
            "with x = torch.zeros(1, 3, 64, 64)"
        )
        if path is None or not Path(path).is_file():
            raise ValueError(f"LPIPS weights {str(path)!r} not found: {how}")
        if frame_batch_size < 1:
            raise ValueError(f"frame_batch_size must be >= 1, got {frame_batch_size}")
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"{str(path)!r} is not a TorchScript LPIPS file ({first_line(err)}): {how}") from None
        for param in net.parameters():  # ScriptModules have no requires_grad_()
            param.requires_grad_(False)
        self.net = net.eval()
        self.frame_batch_size = frame_batch_size
        probe = torch.zeros(1, 3, 64, 64)
        try:  # another network's file (an I3D) loads as TorchScript too, and failed at the first real batch
            with torch.no_grad():
                self._distances(probe, probe)
        except RuntimeError as err:
            raise ValueError(f"{str(path)!r} does not run as LPIPS ({first_line(err)}): {how}") from None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS per image, or the mean over the frames of each video.

        Args:
            x: (N, 3, H, W) images or (B, 3, T, H, W) videos, in [-1, 1].
            y: same shape as ``x``.

        Returns:
            (N,) or (B,) float32 distances.
        """
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.shape != y.shape:
            raise ValueError("LPIPS expects two tensors of equal shape")
        if x.ndim not in (4, 5) or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects (N, 3, H, W) images or (B, 3, T, H, W) videos, got {tuple(x.shape)}")
        try:
            if x.ndim == 4:
                return self._distances(x, y)
            B, C, T, H, W = x.shape
            a = x.transpose(1, 2).reshape(B * T, C, H, W)  # (B*T, 3, H, W)
            b = y.transpose(1, 2).reshape(B * T, C, H, W)
            return self._distances(a, b).reshape(B, T).mean(dim=1)  # (B,)
        except RuntimeError as err:  # AlexNet's pooling needs about 31 px: a traceback on 16 or 24 px clips
            if isinstance(err, torch.cuda.OutOfMemoryError):
                raise
            size = "x".join(map(str, x.shape[-2:]))
            raise ValueError(
                f"the LPIPS network failed on frames of {size} px (AlexNet-style networks need about 32 px a side): "
                f"{first_line(err)}"
            ) from None

    def _distances(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pairs -> (N,) distances, ``frame_batch_size`` at a time."""
        out = []
        for i in range(0, a.shape[0], self.frame_batch_size):
            n = min(self.frame_batch_size, a.shape[0] - i)
            d = self.net(a[i : i + n].float(), b[i : i + n].float())
            if not isinstance(d, torch.Tensor) or d.numel() != n:
                got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
                raise ValueError(f"the LPIPS network must return ({n},) or ({n}, 1, 1, 1) distances, got {got}")
            out.append(d.reshape(n).float())
        return torch.cat(out)
