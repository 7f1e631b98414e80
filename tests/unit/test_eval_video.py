"""tools/eval_video.py + videoeval (fvd, i3d, sources, video_eval): Fréchet distance vs scipy, presets and the
clip loader, stats caching and its refusals, the missing-I3D error, recon metrics, IS; with a stand-in I3D."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from core.files import sha256_file
from core.video_write import write_video
from tools.eval_video import main
from videoeval.fvd import PROTOCOLS, FeatureStats, frechet_distance, inception_score, iter_clips
from videoeval.i3d import I3D_ENV, I3DNetwork, extract_features
from videoeval.metrics import PSNR_MAX_DB
from videoeval.sources import find_videos
from videoeval.video_eval import evaluate_fvd, evaluate_recon

NUM = 6  # videos per set in the CLI tests (--num-videos 6)


class StandInI3D(nn.Module):
    """Has the call signature of i3d_torchscript.pt; its output shows what it was fed.

    out[:, :32] per-frame means of x (zeros past T); out[:, 32:37] = T, H, W, min(x), max(x);
    out[:, 37:] a fixed random projection of pooled x, so different clips spread out.
    """

    def __init__(self, seed: int = 0, dim: int = 400) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(3 * 4 * 4 * 4, dim - 37, generator=g))

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = True
    ) -> torch.Tensor:
        torch._assert(not rescale and not resize, "must be called with rescale=False, resize=False")
        torch._assert(x.dim() == 5 and x.shape[1] == 3, "expects (N, 3, T, H, W)")
        torch._assert(x.shape[3] == 224 and x.shape[4] == 224, "expects 224x224 frames")
        N, T = x.shape[0], x.shape[2]
        means = F.pad(x.mean(dim=(1, 3, 4)), (0, 32 - T))  # (N, 32)
        flat = x.flatten(1)
        size = [float(T), float(x.shape[3]), float(x.shape[4])]
        lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)  # (N, 1)
        meta = torch.cat([torch.tensor(size).expand(N, 3), lo, hi], dim=1)  # (N, 5)
        pooled = F.adaptive_avg_pool3d(x, [4, 4, 4]).flatten(1)  # (N, 192)
        out = torch.cat([means, meta, torch.tanh(3.0 * pooled @ self.proj)], dim=1)
        return out if return_features else out.softmax(dim=1)


def save_stand_in(path: Path, seed: int = 0, dim: int = 400) -> Path:
    torch.jit.script(StandInI3D(seed, dim)).save(str(path))
    return path


def random_clip(seed: int, T: int = 16, H: int = 48, W: int = 64) -> np.ndarray:
    """(T, H, W, 3) uint8 smooth random video."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(1, 3, T // 4 + 1, 4, 5, generator=g), size=(T, H, W), mode="trilinear")
    return (x[0].permute(1, 2, 3, 0) * 255).round().to(torch.uint8).numpy()


def gray_ramp(T: int = 40, H: int = 48, W: int = 64) -> np.ndarray:
    """Frame i is flat gray 6*i, so a frame's mean tells its index."""
    levels = (6 * np.arange(T, dtype=np.uint8))[:, None, None, None]  # (T, 1, 1, 1)
    return np.repeat(levels, 3, axis=3) * np.ones((T, H, W, 3), np.uint8)


def write_frame_folder(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:04d}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_video")
    for i in range(NUM):
        write_video(root / "real" / f"v{i}.mp4", random_clip(i), fps=8)
        write_video(root / "fake" / f"v{i}.mp4", random_clip(100 + i), fps=8)
    i3d = save_stand_in(root / "i3d.pt")
    stats = root / "real_stats.npz"
    args = ["fvd", "--real", str(root / "real"), "--fake", str(root / "fake"), "--protocol", "quick"]
    args += ["--num-videos", str(NUM), "--i3d", str(i3d), "--save-stats", str(stats), "--json", str(root / "fvd.json")]
    assert main(args + ["--inception-score", "--is-splits", "3"]) == 0
    return root, i3d, stats, json.loads((root / "fvd.json").read_text())


def textbook_fd(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|² + tr(S_a + S_b - 2 sqrtm(S_a S_b)), as in the FID/FVD reference code."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b)
    return float(np.real(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root)))


def fd_of(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


# ---------------------------------------------------------------------------------------------
# The distance


def test_frechet_distance_matches_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 24))
    b = rng.normal(size=(250, 24)) @ rng.normal(scale=0.5, size=(24, 24)) + 0.3
    assert fd_of(a, b) == pytest.approx(textbook_fd(a, b), rel=1e-6)
    stats = FeatureStats.from_features(a, protocol=PROTOCOLS["quick"], i3d_sha256="x")
    np.testing.assert_allclose(stats.sigma, np.cov(a, rowvar=False), rtol=1e-12)


def test_frechet_distance_is_zero_for_identical_sets_and_symmetric():
    rng = np.random.default_rng(1)
    for n, d in ((200, 16), (10, 32)):  # full rank, and rank-deficient (fewer samples than dims)
        a, b = rng.normal(size=(n, d)), rng.normal(loc=0.2, size=(n + 3, d))
        scale = np.trace(np.cov(a, rowvar=False))
        assert 0.0 <= fd_of(a, a) < 1e-6 * scale
        assert fd_of(a, b) == pytest.approx(fd_of(b, a), rel=1e-9)
        assert np.isfinite(fd_of(a, b)) and fd_of(a, b) > 0


def test_frechet_distance_is_exact_for_a_covariance_spectrum_of_many_decades():
    """The trace was taken from the eigenvalues of S1^½ S2 S1^½, whose condition number is S1's squared: with
    feature scales from 10 to 1e-3 the floor dropped real terms (an FVD of 25,797 came out 0.56 too high)."""
    rng = np.random.default_rng(1)
    d, n = 200, 1024
    mix = rng.normal(size=(d, d)) * np.logspace(1, -3, d)  # full rank, covariance eigenvalues over ~9 decades
    a, b = rng.normal(size=(n, d)) @ mix, rng.normal(size=(n, d)) @ mix * 1.1 + 0.5
    xa, xb = (a - a.mean(0)).T / np.sqrt(n - 1), (b - b.mean(0)).T / np.sqrt(n - 1)  # S = X Xᵀ
    s_a, s_b = xa @ xa.T, xb @ xb.T
    base = float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b))
    exact = base - 2 * np.linalg.svd(xa.T @ xb, compute_uv=False).sum()  # tr((Sa Sb)^½) = |Xaᵀ Xb|_*
    assert frechet_distance(a.mean(0), s_a, b.mean(0), s_b) == pytest.approx(exact, rel=1e-9)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expects"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---------------------------------------------------------------------------------------------
# Presets and the clip loader


def test_presets_are_what_they_say():
    ucf, k600, quick = PROTOCOLS["ucf101"], PROTOCOLS["k600"], PROTOCOLS["quick"]

    def sizes(p):
        return p.num_frames, p.frame_stride, p.input_size, p.i3d_size, p.num_videos

    assert sizes(ucf) == (16, 1, 128, 224, 10_000)
    assert sizes(k600) == (16, 1, 64, 224, 50_000)
    assert k600.context_frames == 5 and ucf.context_frames == 0
    assert (quick.num_frames, quick.frame_stride, quick.input_size, quick.num_videos) == (16, 1, 64, 64)
    assert (ucf.video_format, k600.video_format, quick.video_format) == ("frames", "frames", "mp4")
    assert all(name == p.name and p.reference for name, p in PROTOCOLS.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        ucf.num_videos = 5
    over = ucf.with_num_videos(2048)
    assert over.name == "ucf101[num_videos=2048]" and over.num_videos == 2048
    assert over.fingerprint() != ucf.fingerprint()
    with pytest.raises(ValueError, match="video_format"):
        dataclasses.replace(quick, video_format="avi")
    with pytest.raises(ValueError, match="num_frames"):
        dataclasses.replace(quick, num_frames=0)


@pytest.mark.parametrize("kind", ["frames", "mp4"])
def test_loader_applies_stride_and_i3d_sees_224(tmp_path, kind):
    ramp = gray_ramp(40)  # 40 frames; stride 2 takes frames 0, 2, ..., 30
    if kind == "frames":
        write_frame_folder(tmp_path / "v" / "clip", ramp)
    else:
        write_video(tmp_path / "v" / "clip.mp4", ramp, fps=8)
    sources = find_videos(tmp_path / "v")
    assert [s.kind for s in sources] == ["frames" if kind == "frames" else "file"]
    protocol = dataclasses.replace(PROTOCOLS["quick"], frame_stride=2, num_videos=2)
    clips = list(iter_clips(sources, protocol))  # the 2nd window would start at frame 32: too short
    assert len(clips) == 1 and clips[0][1].shape == (16, 64, 64, 3)
    net = I3DNetwork(save_stand_in(tmp_path / "i3d.pt"))
    feats, names = extract_features(net, clips, i3d_size=protocol.i3d_size)
    assert feats.shape == (1, 400) and names == [f"{sources[0].path}@0"]
    want = 6 * np.arange(0, 32, 2) / 127.5 - 1  # frames 0, 2, ..., 30 in [-1, 1]
    tol = 0.5 / 127.5 if kind == "frames" else 3 / 127.5  # H.264 moves flat gray by a level or two
    np.testing.assert_allclose(feats[0, :16], want, atol=tol)
    assert np.all(feats[0, 16:32] == 0)
    T, H, W, lo, hi = feats[0, 32:37]
    assert (T, H, W) == (16, 224, 224) and -1 <= lo and hi <= 1


def test_later_windows_fill_the_count_and_short_videos_are_skipped(tmp_path):
    write_frame_folder(tmp_path / "v" / "a_long", gray_ramp(40))
    write_frame_folder(tmp_path / "v" / "b_short", gray_ramp(10))
    protocol = dataclasses.replace(PROTOCOLS["quick"], num_videos=3)
    skipped = []
    clips = list(iter_clips(find_videos(tmp_path / "v"), protocol, skipped=skipped))
    assert [n.rsplit("@", 1)[1] for n, _ in clips] == ["0", "16"]  # a window at 32 needs 48 frames
    assert [int(c[0, 0, 0, 0]) for _, c in clips] == [0, 96]  # first frames: 0 and 16 (gray 6*i)
    assert skipped == [str(tmp_path / "v" / "b_short")]


def test_too_few_clips_is_a_clear_error(data, tmp_path):
    root, i3d, _, _ = data
    with pytest.raises(ValueError, match=r"gave 6 clips .* needs 7"):
        evaluate_fvd(root / "real", root / "fake", PROTOCOLS["quick"].with_num_videos(7), i3d_path=i3d)


# ---------------------------------------------------------------------------------------------
# FVD end to end, stats caching


def test_fvd_cli_report_and_stats_round_trip(data, tmp_path, capsys):
    root, i3d, stats, report = data
    assert report["protocol"]["name"] == f"quick[num_videos={NUM}]" and report["protocol"]["num_frames"] == 16
    assert report["i3d"]["sha256"] == sha256_file(i3d)
    assert report["real"]["clips"] == report["fake"]["clips"] == NUM
    assert report["fake"]["formats"] == {"file": NUM, "frames": 0}
    assert report["fvd"] > 1.0 and report["stats_saved"] == str(stats)
    assert report["inception_score"]["mean"] >= 1.0 and report["inception_score"]["clips_per_split"] == 2
    cached = FeatureStats.load(stats)
    assert cached.count == NUM and cached.protocol == f"quick[num_videos={NUM}]"
    assert cached.i3d_sha256 == report["i3d"]["sha256"]

    args = ["fvd", "--real", str(stats), "--fake", str(root / "fake"), "--protocol", "quick", "--num-videos", str(NUM)]
    assert main(args + ["--i3d", str(i3d), "--json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["fvd"] == pytest.approx(report["fvd"], rel=1e-12)
    assert again["real"] == {"source": str(stats), "stats_file": True, "clips": NUM}
    assert "FVD" in capsys.readouterr().out

    same = evaluate_fvd(stats, root / "real", PROTOCOLS["quick"].with_num_videos(NUM), i3d_path=i3d)
    assert same["fvd"] < 1e-6 * np.trace(cached.sigma)


def test_stats_only_run_writes_stats(data, tmp_path):
    root, i3d, stats, _ = data
    out = tmp_path / "sub" / "only.npz"
    report = evaluate_fvd(root / "real", None, PROTOCOLS["quick"].with_num_videos(NUM), i3d_path=i3d, save_stats=out)
    assert report["fvd"] is None
    np.testing.assert_array_equal(FeatureStats.load(out).sigma, FeatureStats.load(stats).sigma)
    assert [p.name for p in out.parent.iterdir()] == ["only.npz"]  # no temp file left behind
    # any other name was written, and then refused as --real ("not a media file of a known type")
    with pytest.raises(ValueError, match="--save-stats must name a .npz file"):
        evaluate_fvd(root / "real", None, PROTOCOLS["quick"].with_num_videos(NUM), i3d_path=i3d,
                     save_stats=tmp_path / "real_stats")  # fmt: skip
    assert not (tmp_path / "real_stats").exists()


def test_cached_stats_with_other_protocol_or_i3d_are_refused(data, tmp_path, capsys):
    root, i3d, stats, _ = data
    base = ["fvd", "--real", str(stats), "--fake", str(root / "fake"), "--protocol", "quick"]
    assert main(base + ["--num-videos", "5", "--i3d", str(i3d)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")
    assert f"'quick[num_videos={NUM}]'" in err and "'quick[num_videos=5]'" in err

    other = save_stand_in(tmp_path / "other_i3d.pt", seed=1)
    assert main(base + ["--num-videos", str(NUM), "--i3d", str(other)]) == 2
    err = capsys.readouterr().err
    assert sha256_file(i3d) in err and sha256_file(other) in err

    redefined = dataclasses.replace(PROTOCOLS["quick"].with_num_videos(NUM), input_size=32)  # same name
    with pytest.raises(ValueError, match="input_size=64.*input_size=32"):
        FeatureStats.load(stats).check_matches(redefined, sha256_file(i3d), "cached")


def test_malformed_stats_files_are_rejected(data, tmp_path):
    with np.load(data[2]) as good:
        fields = dict(good)
    np.savez(tmp_path / "objects.npz", **{**fields, "mu": np.array([{"a": 1}], dtype=object)})
    np.savez(tmp_path / "partial.npz", mu=np.zeros(3))
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    for name, match in (("objects", "it holds pickled objects, which are never loaded"), ("partial", "missing"),
                        ("garbage", "is not a .npz of FVD stats written by --save-stats")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            FeatureStats.load(tmp_path / f"{name}.npz")


# ---------------------------------------------------------------------------------------------
# The I3D file


def test_missing_i3d_says_what_to_obtain(data, tmp_path, monkeypatch, capsys):
    root, _, _, _ = data
    monkeypatch.delenv(I3D_ENV, raising=False)
    with pytest.raises(ValueError, match=r"i3d_torchscript\.pt.*--i3d PATH.*TOKVID_I3D"):
        evaluate_fvd(root / "real", root / "fake", PROTOCOLS["quick"])
    missing = tmp_path / "nowhere" / "i3d.pt"
    args = [
        "fvd",
        "--real",
        str(root / "real"),
        "--fake",
        str(root / "fake"),
        "--protocol",
        "quick",
        "--i3d",
        str(missing),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: I3D network") and str(missing) in err
    assert "i3d_torchscript.pt" in err


def test_i3d_from_env_and_non_torchscript_file(data, tmp_path, monkeypatch):
    root, i3d, stats, _ = data
    monkeypatch.setenv(I3D_ENV, str(i3d))
    copy = shutil.copy(stats, tmp_path / "copy.npz")
    report = evaluate_fvd(stats, copy, PROTOCOLS["quick"].with_num_videos(NUM), compute_is=True)
    assert report["fvd"] == pytest.approx(0.0, abs=1e-9) and report["i3d"]["path"] == str(i3d)
    with pytest.raises(ValueError, match="are the same stats file"):  # FVD 0.000 and exit 0: a typo, not a result
        evaluate_fvd(stats, stats, PROTOCOLS["quick"].with_num_videos(NUM))
    assert "stats file" in report["inception_score_skipped"]
    bogus = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, bogus)
    with pytest.raises(ValueError, match="not a TorchScript I3D"):
        I3DNetwork(bogus)


def test_running_out_of_memory_on_the_first_i3d_batch_is_not_called_a_wrong_file(tmp_path):
    """A too large --batch-size fails on the first batch: the error said the file "does not run as I3D" and sent the
    user to fetch another network."""
    net = I3DNetwork(save_stand_in(tmp_path / "i3d.pt"))

    class OutOfMemory(nn.Module):
        def forward(self, x, rescale, resize, return_features):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 21.00 GiB")

    net.net = OutOfMemory()
    with pytest.raises(ValueError, match="ran out of device memory on a batch of 2 clips: lower --batch-size"):
        net(torch.zeros(2, 3, 16, 224, 224))


def test_inception_score_is_skipped_for_non_logit_features(data, tmp_path):
    root, _, _, _ = data
    narrow = save_stand_in(tmp_path / "narrow.pt", dim=64)
    report = evaluate_fvd(root / "real", root / "fake", "quick", num_videos=NUM, i3d_path=narrow, compute_is=True)
    assert "64-d" in report["inception_score_skipped"] and report["fvd"] > 0


def test_inception_score_known_values():
    assert inception_score(np.zeros((20, 5)), num_splits=2) == pytest.approx((1.0, 0.0))
    confident = 50.0 * np.eye(8)  # 8 samples, each sure of a different class
    assert inception_score(confident, num_splits=1)[0] == pytest.approx(8.0, rel=1e-6)
    probs = torch.softmax(torch.from_numpy(confident), dim=1).numpy()
    assert inception_score(probs, num_splits=1)[0] == pytest.approx(8.0, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Reconstruction metrics


def test_recon_identical_dirs_give_psnr_cap_and_ssim_one(data, tmp_path, capsys):
    root, _, _, _ = data
    out = tmp_path / "recon.json"
    shutil.copytree(root / "real", tmp_path / "copy")  # the same folder twice is refused (tests/integration)
    assert main(["recon", "--real", str(root / "real"), "--fake", str(tmp_path / "copy"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["videos"]) == NUM
    assert report["mean"]["psnr"] == PSNR_MAX_DB and report["mean"]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert "mean" in capsys.readouterr().out


def test_recon_pairs_by_relative_path_across_formats(tmp_path):
    clip = random_clip(7)
    write_frame_folder(tmp_path / "real" / "a", clip)
    noisy = np.clip(clip.astype(int) + np.random.default_rng(0).integers(-20, 21, clip.shape), 0, 255).astype(np.uint8)
    write_frame_folder(tmp_path / "fake" / "a", noisy)
    rows = evaluate_recon(tmp_path / "real", tmp_path / "fake")
    assert [Path(r["path"]).name for r in rows] == ["a"] and 20 < rows[0]["psnr"] < 40 and rows[0]["ssim"] < 1
    write_frame_folder(tmp_path / "fake" / "b", clip)
    with pytest.raises(ValueError, match="no real counterpart.*'b'"):
        evaluate_recon(tmp_path / "real", tmp_path / "fake")


def test_recon_takes_one_video_file_on_each_side(tmp_path):
    """The docstring says "or one video": a file as --real failed with "PosixPath('.') has an empty name"."""
    clip = random_clip(7)
    write_frame_folder(tmp_path / "r" / "frames", clip)
    write_frame_folder(tmp_path / "f" / "frames", clip)
    rows = evaluate_recon(tmp_path / "r" / "frames", tmp_path / "f" / "frames")  # a folder of frames as the root
    assert len(rows) == 1 and rows[0]["psnr"] == PSNR_MAX_DB
    from core.video_write import write_video

    write_video(tmp_path / "real" / "v0.mp4", clip, fps=8)
    write_video(tmp_path / "fake" / "v0.mp4", clip, fps=8)
    rows = evaluate_recon(tmp_path / "real" / "v0.mp4", tmp_path / "fake" / "v0.mp4")
    assert [Path(r["path"]).name for r in rows] == ["v0.mp4"] and rows[0]["psnr"] == PSNR_MAX_DB


def test_bad_flags_are_one_line_and_help_works(tmp_path, capsys):
    assert main(["fvd", "--real", str(tmp_path), "--protocol", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --protocol: invalid choice: 'nope'") and len(err.splitlines()) == 1
    assert main(["fvd", "--real", str(tmp_path), "--protocol", "quick", "--num-videos", "1", "--i3d", "x.pt"]) == 2
    assert capsys.readouterr().err == "error: --num-videos must be >= 2, got 1\n"
    with pytest.raises(SystemExit) as exit_info:
        main(["recon", "--help"])
    assert exit_info.value.code == 0 and "--lpips" in capsys.readouterr().out


def test_contact_sheets_beside_videos_are_not_read_as_one_more_video(tmp_path):
    """generate.py writes video_000.png beside video_000.mp4: the folder was read as a frame-folder video of
    contact sheets, keyed first, so it displaced a real sample from the FVD set."""
    for i in range(2):
        write_video(tmp_path / "gen" / f"video_{i:03d}.mp4", gray_ramp(16), fps=8)
        write_frame_folder(tmp_path / "gen" / f"sheet_{i}", gray_ramp(1))
        (tmp_path / "gen" / f"sheet_{i}" / "0000.png").rename(tmp_path / "gen" / f"video_{i:03d}.png")
        (tmp_path / "gen" / f"sheet_{i}").rmdir()
    write_frame_folder(tmp_path / "gen" / "frames_clip", gray_ramp(16))  # a real frame folder is still a video
    sources = find_videos(tmp_path / "gen")
    assert sorted(s.key(tmp_path / "gen") for s in sources) == ["frames_clip", "video_000", "video_001"]


def test_a_frame_folder_with_unpadded_numbers_is_read_in_time_order(tmp_path):
    """``ffmpeg -i in.mp4 out_%d.png`` names frames out_1 ... out_20: FVD, recon and predict read them in text order
    (1, 10, ..., 19, 2, 20, 3, ...) while read_video reads numbers as numbers, so two identical videos, one with
    zero-padded names, scored 9.0 dB and SSIM 0.61 against each other."""
    frames = np.stack([np.full((32, 32, 3), 10 * i, np.uint8) for i in range(20)])
    for i, frame in enumerate(frames):
        (tmp_path / "a" / "clip").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(tmp_path / "a" / "clip" / f"out_{i + 1}.png")
    write_frame_folder(tmp_path / "b" / "clip", frames)
    (source,) = find_videos(tmp_path / "a")
    assert source.read(num_frames=20)[:, 0, 0, 0].tolist() == list(range(0, 200, 10))
    (row,) = evaluate_recon(tmp_path / "b", tmp_path / "a", num_frames=20)
    assert row["psnr"] == PSNR_MAX_DB and row["ssim"] == pytest.approx(1.0)


def test_inception_score_over_splits_of_one_clip_is_refused(data):
    """With --num-videos 6 and the default 10 splits every split held one clip, and IS was exactly 1.000 whatever
    the videos: a number that measured nothing."""
    root, i3d, _, _ = data
    report = evaluate_fvd(root / "real", root / "fake", "quick", num_videos=NUM, i3d_path=i3d, compute_is=True)
    assert "inception_score" not in report and "6 clips over 10 splits" in report["inception_score_skipped"]
