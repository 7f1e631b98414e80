"""tools/metrics.py: PSNR by hand, SSIM against an independent scipy reference, LPIPS loading."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from videoeval.metrics import LPIPS, PSNR_MAX_DB, psnr, ssim


def videos(B=2, T=3, H=24, W=20, noise=0.2, seed=0):
    """A smooth video in [-1, 1] and a noisy copy, both (B, 3, T, H, W)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(B * 3 * T, 1, 6, 5, generator=g), size=(H, W), mode="bilinear")
    x = base.reshape(B, 3, T, H, W) * 2 - 1
    y = (x + noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return x, y


def reference_ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM of (B, 3, T, H, W) videos in [0, 1], one 2-D image at a time, with scipy filters."""
    c1, c2 = 0.01**2, 0.03**2
    r = 5  # truncate=3.5 with sigma=1.5 gives radius int(3.5 * 1.5 + 0.5) = 5: an 11-tap window

    def blur(img):
        return ndimage.gaussian_filter(img, sigma=1.5, truncate=3.5, mode="constant")[r:-r, r:-r]

    out = np.zeros(x.shape[0])
    for b in range(x.shape[0]):
        scores = []
        for c in range(x.shape[1]):
            for t in range(x.shape[2]):
                a, d = x[b, c, t], y[b, c, t]
                mu_a, mu_d = blur(a), blur(d)
                var_a = blur(a * a) - mu_a**2
                var_d = blur(d * d) - mu_d**2
                cov = blur(a * d) - mu_a * mu_d
                s = ((2 * mu_a * mu_d + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_d**2 + c1) * (var_a + var_d + c2))
                scores.append(s.mean())
        out[b] = np.mean(scores)
    return out


def test_psnr_matches_hand_computation():
    x, y = videos()
    got = psnr(x, y)
    assert got.shape == (2,)
    for b in range(2):
        mse = (((x[b].double() + 1) / 2 - (y[b].double() + 1) / 2) ** 2).mean()
        assert float(got[b]) == pytest.approx(float(10 * torch.log10(1 / mse)), abs=1e-4)


def test_psnr_of_identical_videos_is_capped_not_inf():
    x, _ = videos()
    got = psnr(x, x.clone())
    assert torch.equal(got, torch.full((2,), PSNR_MAX_DB))


def test_psnr_clamps_to_valid_range():
    x, _ = videos()
    assert torch.equal(psnr(x, x * 5), psnr(x, (x * 5).clamp(-1, 1)))


def test_ssim_matches_scipy_reference():
    x, y = videos(B=2, T=2, H=24, W=20)
    got = ssim(x, y)
    ref = reference_ssim(((x.double() + 1) / 2).numpy(), ((y.double() + 1) / 2).numpy())
    assert got.shape == (2,)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-4)
    assert 0.0 < float(got.min()) < 0.99  # the noise is visible


def test_ssim_of_flat_bright_frames_is_the_closed_form():
    """float32 moments (E[z²] - mu², its round-off over C2 = 9e-4) put a flat 252-against-253 grey pair 3.3e-4
    off its SSIM, the luminance term (2 mu_a mu_b + C1) / (mu_a² + mu_b² + C1)."""
    shape = (1, 3, 2, 16, 16)
    for grey_a, grey_b in ((252, 253), (128, 130), (250, 250)):
        x, y = torch.full(shape, grey_a / 127.5 - 1.0), torch.full(shape, grey_b / 127.5 - 1.0)
        mu_a, mu_b, c1 = (grey_a / 127.5 - 1.0 + 1) / 2, (grey_b / 127.5 - 1.0 + 1) / 2, 0.01**2
        expected = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
        assert float(ssim(x, y)[0]) == pytest.approx(expected, abs=2e-7)  # float32 result: ~6e-8 round-off


def test_ssim_of_identical_videos_is_one_and_noise_lowers_it():
    x, _ = videos()
    assert torch.allclose(ssim(x, x.clone()), torch.ones(2), atol=1e-6)
    mild = ssim(*videos(noise=0.05))
    strong = ssim(*videos(noise=0.4))
    assert (strong < mild).all()


def test_metrics_reject_bad_shapes():
    x, y = videos(H=10, W=30)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x, y)
    with pytest.raises(ValueError, match="equal shape"):
        psnr(x, y[:, :, :2])


def test_metrics_refuse_integer_frames():
    """uint8 frames were clamped to {0, 1} after the [-1, 1] -> [0, 1] map: two unrelated videos scored 28 dB."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, 256, (1, 3, 2, 16, 16), dtype=torch.uint8, generator=g) for _ in range(2))
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match="expects float videos in \\[-1, 1\\], got torch.uint8"):
            metric(a, b)


class _MeanSquare(torch.nn.Module):
    """Stand-in LPIPS network: mean squared difference per image, shaped like real LPIPS."""

    def __init__(self, flat: bool) -> None:
        super().__init__()
        self.flat = flat
        self.scale = torch.nn.Parameter(torch.ones(1))  # a weight, like the real linear heads

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = self.scale * (a - b).pow(2).mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
        return d.flatten() if self.flat else d


@pytest.mark.parametrize("flat", [True, False])
def test_lpips_loads_torchscript_and_batches_frames(tmp_path, flat):
    path = tmp_path / "lpips.pt"
    torch.jit.script(_MeanSquare(flat)).save(str(path))
    metric = LPIPS(path, frame_batch_size=2)  # 2 videos x 3 frames: batches of 2, 2, 2
    x, y = videos()
    got = metric(x, y)
    want = (x - y).pow(2).mean(dim=(1, 3, 4)).mean(dim=1)  # per-frame mean, then over frames
    assert got.shape == (2,)
    torch.testing.assert_close(got, want)
    params = list(metric.parameters())
    assert params and not any(p.requires_grad for p in params)


def test_lpips_on_images_passes_gradients_to_inputs(tmp_path):
    """The training loop uses LPIPS on (N, 3, H, W) frames as a differentiable loss."""
    path = tmp_path / "lpips.pt"
    torch.jit.script(_MeanSquare(flat=False)).save(str(path))
    metric = LPIPS(path, frame_batch_size=3)
    x, y = videos()
    a = x[:, :, 0].clone().requires_grad_(True)  # (2, 3, H, W)
    d = metric(a, y[:, :, 0])
    assert d.shape == (2,)
    d.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="images or"):
        metric(x[:, :2], y[:, :2])


def test_lpips_missing_or_bad_file_says_what_to_provide(tmp_path):
    with pytest.raises(ValueError, match=r"not found: provide a TorchScript .*torch\.jit\.trace"):
        LPIPS(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="not a TorchScript LPIPS file"):
        LPIPS(tmp_path / "junk.pt")


def test_an_i3d_file_given_as_lpips_and_the_reverse_are_one_value_error(tmp_path):
    """Both load as TorchScript, and the mix-up was a cast-error or argument-count traceback at the first batch."""
    from tests.unit.test_eval_video import save_stand_in
    from videoeval.i3d import I3DNetwork

    i3d = save_stand_in(tmp_path / "i3d.pt")
    with pytest.raises(ValueError, match="does not run as LPIPS"):
        LPIPS(i3d)
    lpips = tmp_path / "lpips.pt"
    torch.jit.script(_MeanSquare(flat=True)).save(str(lpips))
    with pytest.raises(ValueError, match="does not run as I3D"):
        I3DNetwork(lpips)(torch.zeros(1, 3, 16, 224, 224))
