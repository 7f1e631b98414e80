"""Fréchet Video Distance: protocols, I3D features, cached feature statistics, the distance.

The presets (``PROTOCOLS``), their table and the CLI live in ``tools/eval_video.py``; this
module is the library.

Pipeline for one set of videos (real or generated) under an :class:`FVDProtocol`:

1. :func:`find_videos` lists the videos under a folder: every video file (mp4, avi, gif, ...)
   is one video, and every folder that directly holds image files is one video whose frames
   are those images in name order ("raw frames").
2. :func:`iter_clips` reads ``num_frames`` frames ``frame_stride`` apart from frame 0 of each
   video, resizes the short side to ``input_size`` and center-crops a square (antialiased
   bilinear, :func:`core.video_io.resize_center_crop`). When a set has fewer videos than
   ``num_videos``, further non-overlapping windows (starting at frame ``k * num_frames *
   frame_stride``) are taken round-robin until the count is met.
3. :func:`clips_to_i3d_input` maps uint8 to [-1, 1] and upsamples every frame to 224x224 with
   ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``.
4. :class:`I3DNetwork` calls the user's TorchScript I3D and returns one feature row per clip.
5. :class:`FeatureStats` holds the mean and covariance (float64) and can be cached as ``.npz``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.files import sha256_file
from core.video_io import IMAGE_EXTS, VIDEO_EXTS, frames_to_tensor, read_video, resize_center_crop

log = logging.getLogger("videoeval.fvd")

I3D_ENV = "TOKVID_I3D"
I3D_SIZE = 224
KINETICS_CLASSES = 400  # width of the I3D output when it is the Kinetics-400 logit layer
STATS_FORMAT_VERSION = 1
I3D_HOW = (
    "obtain `i3d_torchscript.pt` (the TorchScript port of the TF-Hub Kinetics-400 I3D used for FVD by "
    "StyleGAN-V, src/metrics/frechet_video_distance.py, published at "
    "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt) and pass it with --i3d PATH "
    f"or set {I3D_ENV}=PATH; tokvid never downloads it"
)
_I3D_NOTE = (
    "i3d_torchscript.pt (StyleGAN-V's TorchScript port of TF-Hub deepmind/i3d-kinetics-400), "
    "called with rescale=False, resize=False, return_features=True -> 400-d pre-softmax layer"
)


@dataclass(frozen=True, kw_only=True)
class FVDProtocol:
    """Everything that decides an FVD number besides the videos and the I3D weights.

    Attributes:
        name: preset key (an override of ``num_videos`` appends ``[num_videos=N]``).
        num_frames: frames per clip fed to I3D (T).
        frame_stride: step between the source frames of a clip.
        input_size: clips are resized (short side) and center-cropped to input_size² first;
            this is the resolution the generator works at.
        i3d_size: side the frames are then upsampled to for I3D (224).
        num_videos: clips per set, generated and real alike (the sample count).
        video_format: how generated videos are stored for this protocol: "frames" (lossless
            images or decoded arrays) or "mp4" (lossy H.264; compression raises FVD).
        context_frames: real frames given to the model in prediction tasks. They stay part of
            the clip: FVD is computed over all ``num_frames`` frames.
        real_split: which real videos the reference statistics come from.
        i3d: the I3D variant and how it is called.
        reference: the paper (and code) whose protocol this matches.
    """

    name: str
    num_frames: int
    frame_stride: int
    input_size: int
    i3d_size: int = I3D_SIZE
    num_videos: int
    video_format: str
    context_frames: int = 0
    real_split: str
    i3d: str = _I3D_NOTE
    reference: str

    def __post_init__(self) -> None:
        for field in ("num_frames", "frame_stride", "input_size", "i3d_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FVDProtocol.{field} must be a positive int, got {value!r}")
        if isinstance(self.num_videos, bool) or not isinstance(self.num_videos, int) or self.num_videos < 2:
            raise ValueError(f"FVDProtocol.num_videos must be an int >= 2 (covariance needs 2 samples), got {self.num_videos!r}")
        if self.video_format not in ("frames", "mp4"):
            raise ValueError(f"FVDProtocol.video_format must be 'frames' or 'mp4', got {self.video_format!r}")
        if not 0 <= self.context_frames < self.num_frames:
            raise ValueError(f"FVDProtocol.context_frames must be in [0, num_frames), got {self.context_frames}")

    def fingerprint(self) -> str:
        """The fields that change the features or their count, as one string (stored in stats)."""
        return (
            f"num_frames={self.num_frames};frame_stride={self.frame_stride};input_size={self.input_size};"
            f"i3d_size={self.i3d_size};num_videos={self.num_videos}"
        )

    def with_num_videos(self, num_videos: int | None) -> FVDProtocol:
        """This protocol with another sample count; the name records the override."""
        if num_videos is None or num_videos == self.num_videos:
            return self
        return dataclasses.replace(self, name=f"{self.name}[num_videos={num_videos}]", num_videos=num_videos)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Finding and reading videos


@dataclass(frozen=True)
class VideoSource:
    """One video: a media file, or a folder whose image files (``frames``) are its frames."""

    path: Path
    frames: tuple[Path, ...] = ()

    @property
    def kind(self) -> str:
        """"frames" for a folder of images, else "file"."""
        return "frames" if self.frames else "file"

    def key(self, root: Path) -> str:
        """Relative path without the file suffix: ``a/b.mp4``, ``a/b.avi`` and folder ``a/b/`` pair up."""
        rel = self.path.relative_to(root) if self.path != root else Path(".")
        return (rel if self.frames else rel.with_suffix("")).as_posix()

    def read(self, *, num_frames: int | None = None, stride: int = 1, start: int = 0) -> np.ndarray:
        """Frames ``start, start + stride, ...`` as (T, H, W, 3) uint8 (all to the end if num_frames is None).

        Raises:
            ValueError: unreadable, too short, or (frame folder) images of different sizes.
        """
        if not self.frames:
            return read_video(self.path, num_frames=num_frames, stride=stride, start=start)
        total = len(self.frames)
        needed = start + 1 if num_frames is None else start + (num_frames - 1) * stride + 1
        if total < needed:
            want = f"num_frames={num_frames}, stride={stride}, start={start}"
            raise ValueError(f"{str(self.path)!r} is too short: it has {total} frames, {want} needs {needed}")
        stop = total if num_frames is None else needed
        frames = [read_video(p)[0] for p in self.frames[start:stop:stride]]  # each (H, W, 3)
        if len({f.shape for f in frames}) != 1:
            raise ValueError(f"frame folder {str(self.path)!r} holds images of different sizes")
        return np.stack(frames)


def find_videos(root: str | os.PathLike) -> list[VideoSource]:
    """Lists the videos under ``root``, sorted by relative path.

    Every file with a suffix in ``VIDEO_EXTS`` is one video; every folder (``root`` included)
    that directly holds files with a suffix in ``IMAGE_EXTS`` is one video made of those
    images in name order. Hidden files and folders (".name") are skipped.

    Args:
        root: a folder, or a single video file.

    Raises:
        ValueError: ``root`` does not exist or is not a video file.
    """
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() not in VIDEO_EXTS:
            raise ValueError(f"{str(root)!r} is not a video file (known: {sorted(VIDEO_EXTS)})")
        return [VideoSource(root)]
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} does not exist")
    sources = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names = sorted(f for f in files if not f.startswith("."))
        folder = Path(folder)
        sources += [VideoSource(folder / f) for f in names if Path(f).suffix.lower() in VIDEO_EXTS]
        images = tuple(folder / f for f in names if Path(f).suffix.lower() in IMAGE_EXTS)
        if images:
            sources.append(VideoSource(folder, images))
    return sorted(sources, key=lambda s: s.key(root))


def iter_clips(
    sources: Sequence[VideoSource], protocol: FVDProtocol, *, skipped: list[str] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Yields up to ``protocol.num_videos`` clips, as the protocol says.

    Round 0 takes frames ``0, s, ..., (T-1)*s`` (T = num_frames, s = frame_stride) of every
    video in order; round k takes the window starting at frame ``k*T*s`` of every video still
    long enough, until ``num_videos`` clips were yielded or no video has another window.
    Videos that cannot be read, or are too short for one clip, are logged and skipped.

    Args:
        sources: from :func:`find_videos`.
        protocol: the frame count, stride, size and count to apply.
        skipped: if given, the paths of skipped videos are appended to it.

    Yields:
        (name, clip): ``name`` is ``path@start``; ``clip`` is (T, input_size, input_size, 3) uint8.
    """
    window = protocol.num_frames * protocol.frame_stride
    active, count, k = list(sources), 0, 0
    while active and count < protocol.num_videos:
        if k == 1:
            log.info("%d videos gave %d clips; taking further %d-frame windows", len(sources), count, window)
        still = []
        for src in active:
            try:
                frames = src.read(num_frames=protocol.num_frames, stride=protocol.frame_stride, start=k * window)
            except ValueError as err:
                if k == 0:
                    log.warning("skipping %s", err)
                    if skipped is not None:
                        skipped.append(str(src.path))
                continue
            yield f"{src.path}@{k * window}", resize_center_crop(frames, protocol.input_size)
            count += 1
            if count == protocol.num_videos:
                return
            still.append(src)
        active, k = still, k + 1


def clips_to_i3d_input(clips: Sequence[np.ndarray], size: int = I3D_SIZE, device: str | torch.device = "cpu") -> torch.Tensor:
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


# ---------------------------------------------------------------------------------------------
# The I3D network


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
            first_line = (str(err).strip().splitlines() or ["unknown error"])[0]
            raise ValueError(f"{str(self.path)!r} is not a TorchScript I3D ({first_line}): {I3D_HOW}") from None
        self.net = net.eval()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, 224, 224) in [-1, 1] -> (N, D) float32 features on the CPU."""
        out = self.net(x.to(self.device), rescale=False, resize=False, return_features=True)
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


# ---------------------------------------------------------------------------------------------
# Statistics and the distance


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a set's I3D features, with what produced them.

    Attributes:
        mu: (D,) float64 mean.
        sigma: (D, D) float64 covariance, unbiased (divides by count - 1, like ``np.cov``).
        count: number of clips.
        protocol: protocol name; fingerprint: :meth:`FVDProtocol.fingerprint`.
        i3d_sha256: SHA-256 of the I3D file.
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    protocol: str
    fingerprint: str
    i3d_sha256: str

    @classmethod
    def from_features(cls, feats: np.ndarray, *, protocol: FVDProtocol, i3d_sha256: str) -> FeatureStats:
        """Statistics of (N, D) features, N >= 2, in float64."""
        feats = np.asarray(feats, dtype=np.float64)
        if feats.ndim != 2 or feats.shape[0] < 2:
            raise ValueError(f"feature statistics need (N, D) features with N >= 2, got shape {feats.shape}")
        mu, sigma = feats.mean(axis=0), np.cov(feats, rowvar=False)  # (D,), (D, D)
        return cls(mu, sigma, feats.shape[0], protocol.name, protocol.fingerprint(), i3d_sha256)

    def save(self, path: str | os.PathLike) -> None:
        """Writes an ``.npz`` (no pickled objects) atomically: temp file in the same folder, then rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh, mu=self.mu, sigma=self.sigma, count=np.int64(self.count), protocol=np.str_(self.protocol),
                    fingerprint=np.str_(self.fingerprint), i3d_sha256=np.str_(self.i3d_sha256),
                    format_version=np.int64(STATS_FORMAT_VERSION),
                )  # fmt: skip
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Reads a file written by :meth:`save` (``allow_pickle=False``); raises ValueError if malformed."""
        keys = ("mu", "sigma", "count", "protocol", "fingerprint", "i3d_sha256", "format_version")
        try:
            with np.load(path, allow_pickle=False) as data:
                d = {k: data[k] for k in keys if k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:  # ValueError: pickled objects
            raise ValueError(f"cannot read FVD stats {str(path)!r}: {err}") from None
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"{str(path)!r} is not a tokvid FVD stats file (missing {missing})")
        if int(d["format_version"]) != STATS_FORMAT_VERSION:
            raise ValueError(f"{str(path)!r} has stats format {int(d['format_version'])}, expected {STATS_FORMAT_VERSION}")
        mu, sigma = d["mu"].astype(np.float64), d["sigma"].astype(np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.size, mu.size) or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ValueError(f"{str(path)!r} holds malformed statistics: mu {mu.shape}, sigma {sigma.shape}")
        return cls(mu, sigma, int(d["count"]), str(d["protocol"]), str(d["fingerprint"]), str(d["i3d_sha256"]))

    def check_matches(self, protocol: FVDProtocol, i3d_sha256: str, source: str) -> None:
        """Raises ValueError, naming both sides, if these stats were made another way."""
        if self.protocol != protocol.name:
            raise ValueError(f"{source} was computed with protocol {self.protocol!r}, but this run uses {protocol.name!r}")
        if self.fingerprint != protocol.fingerprint():
            raise ValueError(
                f"{source} was computed with protocol {self.protocol!r} as ({self.fingerprint}), "
                f"but {protocol.name!r} is now ({protocol.fingerprint()})"
            )
        if self.i3d_sha256 != i3d_sha256:
            raise ValueError(f"{source} was computed with I3D sha256 {self.i3d_sha256}, but this I3D file is {i3d_sha256}")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2), in float64.

    d² = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½), with the last trace computed as
    tr((A S2 A)^½), A = S1^½ (Dowson & Landau 1982). ``A S2 A`` is symmetric positive
    semi-definite and has the same eigenvalues as ``S1 S2``, so the trace is the sum of the
    square roots of its eigenvalues (``np.linalg.eigh``): no complex numbers appear, unlike
    ``scipy.linalg.sqrtm(S1 @ S2)`` whose round-off imaginary parts FID code discards.
    Eigenvalues below ``D * eps * max`` are round-off of true zeros (rank-deficient
    covariances, e.g. fewer samples than feature dimensions) and are set to 0 before the
    square root, which would otherwise blow 1e-16 noise up to 1e-8; this keeps the result
    symmetric and exactly 0 for identical sets. A negative result (round-off) is clipped to 0.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) symmetric covariances.

    Returns:
        The squared distance d² (what papers report as FVD/FID).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    D = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.shape != (D,) or mu2.shape != (D,) or s1.shape != (D, D) or s2.shape != (D, D):
        got = f"{mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}"
        raise ValueError(f"frechet_distance expects (D,) means and (D, D) covariances, got {got}")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2

    def floor(eig: np.ndarray) -> np.ndarray:  # round-off below D * eps * max is a true 0
        return np.where(eig > eig.max(initial=0.0) * D * np.finfo(np.float64).eps, eig, 0.0)

    w, V = np.linalg.eigh(s1)
    root1 = (V * np.sqrt(floor(w))) @ V.T  # S1^½
    m = root1 @ s2 @ root1
    tr_sqrt = np.sqrt(floor(np.linalg.eigvalsh((m + m.T) / 2))).sum()
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt), 0.0)


def inception_score(logits: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016), mean and std over splits.

    Args:
        logits: (N, K) class logits. Rows that are already probabilities (non-negative,
            summing to 1) are used as they are.
        num_splits: the N samples are cut into min(num_splits, N) consecutive parts.

    Returns:
        (mean, std) of the per-split scores; 1 means no confident or no diverse predictions.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 2:
        raise ValueError(f"inception_score expects (N, K) logits with K >= 2, got shape {x.shape}")
    if (x >= 0).all() and np.allclose(x.sum(axis=1), 1.0, atol=1e-4):
        logp = np.log(np.clip(x, 1e-30, None))
    else:
        logp = x - x.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))  # log-softmax
    p = np.exp(logp)
    scores = []
    for part in np.array_split(np.arange(x.shape[0]), min(num_splits, x.shape[0])):
        log_marginal = np.log(np.clip(p[part].mean(axis=0), 1e-300, None))  # log p(y) over the split
        kl = (p[part] * (logp[part] - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
