"""Fréchet Video Distance: protocols and their presets, clips, cached feature statistics, the distance.

Pipeline for one set of videos (real or generated) under an :class:`FVDProtocol`:

1. :func:`videoeval.sources.find_videos` lists the videos under a folder.
2. :func:`iter_clips` reads ``num_frames`` frames ``frame_stride`` apart from frame 0 of each
   video, resizes the short side to ``input_size`` and center-crops a square (antialiased
   bilinear, :func:`core.frames.resize_center_crop`). When a set has fewer videos than
   ``num_videos``, further non-overlapping windows (starting at frame ``k * num_frames *
   frame_stride``) are taken round-robin until the count is met.
3. :mod:`videoeval.i3d` upsamples the clips to 224x224 and returns one I3D feature row per clip.
4. :class:`FeatureStats` holds the mean and covariance (float64) and can be cached as ``.npz``;
   :func:`frechet_distance` compares two of them.

FVD numbers from different repositories are rarely comparable: they differ in the I3D
weights, the layer, the frame count and stride, the resolution, mp4 versus lossless frames,
and the sample count (FVD is biased upwards at small counts). Every tokvid FVD names a preset
of ``PROTOCOLS``; the JSON report carries the full protocol and the SHA-256 of the I3D file.

Presets (``PROTOCOLS``)
-----------------------

All three feed 16 frames at stride 1 to I3D at 224², upsampled from the input size.

* ``ucf101``: UCF-101 class-conditional generation. Input 128²; 10,000 generated vs 10,000 real
  clips (train split); generated videos as frames. Matches MAGVIT (Yu et al., CVPR 2023), which
  follows TATS (Ge et al., ECCV 2022); checked in MAGVIT's
  ``videogvt/configs/maskgvt_ucf101_config.py``: 16 frames, stride 1, 128²,
  ``eval.num_examples = 10000``, ``eval.data_splits = 'train'``.
* ``k600``: Kinetics-600 frame prediction, 5 context + 11 predicted frames, FVD over all 16.
  Input 64²; 50,000 generated vs 50,000 real (test split); frames. The task of TrIVD-GAN (Luc et
  al. 2020); 50k samples as in Video Diffusion Models (Ho et al. 2022), the setting of MAGVIT's
  and Phenaki's K600 results.
* ``quick``: smoke runs. Input 64²; 64 vs 64; mp4. Matches nothing: never quote it next to a paper.

MAGVIT reports the mean ± std of 4 evaluations (``eval.final_num_repeats = 4``); one tokvid
run is one evaluation. ``--num-videos N`` overrides the count; the protocol name then becomes e.g.
``ucf101[num_videos=2048]`` everywhere (table, JSON, cached stats). StyleGAN-V and DIGAN
report FVD on 2,048 samples; such numbers are not comparable to the presets above.

How a clip reaches I3D (all presets)
------------------------------------

* A video is a file (mp4, avi, gif, ...) or a folder of image files (its frames in name
  order). The clip is frames 0, s, ..., (T-1)s (T frames, stride s). A set with fewer videos
  than the count contributes further non-overlapping windows, round-robin (UCF-101's train
  split has 9,537 videos for 10,000 samples). Unreadable or too-short videos are skipped and
  listed in the report.
* Resize the short side to the input size and center-crop a square (antialiased bilinear),
  then upsample each frame to 224x224 (bilinear, ``align_corners=False``) in [-1, 1].
* The network is the user's TorchScript ``i3d_torchscript.pt`` (StyleGAN-V's port of the
  TF-Hub Kinetics-400 I3D), loaded with ``torch.jit.load`` and called as
  ``net(x, rescale=False, resize=False, return_features=True)`` on (N, 3, 16, 224, 224):
  the (N, 400) pre-softmax Kinetics-400 logits are the feature, the layer the TF reference
  reads (``RGB/inception_i3d/Mean:0``). Pass it with ``--i3d PATH`` or ``$TOKVID_I3D``;
  nothing is downloaded. VideoGPT's ``i3d_pretrained_400.pt`` is a pickled state dict of a
  different port and is not accepted.
* Known differences from other code: the TF reference (google-research FVD, MAGVIT's
  ``compute_fvd.py``) upsamples with TF1 ``resize_bilinear`` (no half-pixel centers);
  StyleGAN-V lets the network resize uint8 input and takes random clip offsets; its
  covariance divides by N where tokvid's divides by N - 1 (a 1/N effect).
* The Fréchet distance is computed in float64 from an eigendecomposition (see
  :func:`videoeval.fvd.frechet_distance`), robust to rank-deficient covariances.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from core.files import atomic_write_bytes
from core.frames import resize_center_crop
from videoeval.i3d import I3D_NOTE, I3D_SIZE
from videoeval.sources import VideoSource

log = logging.getLogger(__name__)

STATS_FORMAT_VERSION = 1


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
    i3d: str = I3D_NOTE
    reference: str

    def __post_init__(self) -> None:
        for field in ("num_frames", "frame_stride", "input_size", "i3d_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FVDProtocol.{field} must be a positive int, got {value!r}")
        if isinstance(self.num_videos, bool) or not isinstance(self.num_videos, int) or self.num_videos < 2:
            raise ValueError(
                f"FVDProtocol.num_videos must be an int >= 2 (covariance needs 2 samples), got {self.num_videos!r}"
            )
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


PROTOCOLS: dict[str, FVDProtocol] = {
    "ucf101": FVDProtocol(
        name="ucf101",
        num_frames=16,
        frame_stride=1,
        input_size=128,
        num_videos=10_000,
        video_format="frames",
        real_split="UCF-101 train split (9,537 videos; later windows fill the count to 10,000)",
        reference=(
            "MAGVIT (Yu et al., CVPR 2023), class-conditional UCF-101: google-research/magvit "
            "videogvt/configs/maskgvt_ucf101_config.py sets 16 frames, stride 1, 128x128, "
            "eval.num_examples=10000, eval.data_splits='train'; MAGVIT follows TATS (Ge et al., ECCV 2022)"
        ),
    ),
    "k600": FVDProtocol(
        name="k600",
        num_frames=16,
        frame_stride=1,
        input_size=64,
        num_videos=50_000,
        video_format="frames",
        context_frames=5,
        real_split="Kinetics-600 test split",
        reference=(
            "Kinetics-600 frame prediction, 5 context + 11 predicted frames at 64x64 (TrIVD-GAN, "
            "Luc et al. 2020); 50,000 samples as in Video Diffusion Models (Ho et al. 2022), "
            "the setting MAGVIT and Phenaki compare in"
        ),
    ),
    "quick": FVDProtocol(
        name="quick",
        num_frames=16,
        frame_stride=1,
        input_size=64,
        num_videos=64,
        video_format="mp4",
        real_split="any",
        reference="none: a smoke test, not comparable to any paper (64 samples bias FVD upwards)",
    ),
}


def resolve_protocol(protocol: FVDProtocol | str) -> FVDProtocol:
    """A preset by name (ValueError naming the presets for an unknown one), or the protocol given."""
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
        return PROTOCOLS[protocol]
    return protocol


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
        """Writes an ``.npz`` (no pickled objects) atomically (:func:`core.files.atomic_write_bytes`)."""
        buf = io.BytesIO()
        np.savez(
            buf, mu=self.mu, sigma=self.sigma, count=np.int64(self.count), protocol=np.str_(self.protocol),
            fingerprint=np.str_(self.fingerprint), i3d_sha256=np.str_(self.i3d_sha256),
            format_version=np.int64(STATS_FORMAT_VERSION),
        )  # fmt: skip
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Reads a file written by :meth:`save` (``allow_pickle=False``); raises ValueError if malformed."""
        keys = ("mu", "sigma", "count", "protocol", "fingerprint", "i3d_sha256", "format_version")
        try:
            with np.load(path, allow_pickle=False) as data:
                d = {k: data[k] for k in keys if k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:  # ValueError: pickled objects
            # numpy's own text (for a file that is no zip too) advises loading with pickles allowed: never for these
            if not zipfile.is_zipfile(path):  # a JSON or text file read as "holds pickled objects"
                why = "it is not an .npz archive"
            elif "pickle" in str(err):
                why = "it holds pickled objects, which are never loaded"
            else:
                why = type(err).__name__
            raise ValueError(f"{str(path)!r} is not a .npz of FVD stats written by --save-stats ({why})") from None
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"{str(path)!r} is not a tokvid FVD stats file (missing {missing})")
        if int(d["format_version"]) != STATS_FORMAT_VERSION:
            found = int(d["format_version"])
            raise ValueError(f"{str(path)!r} has stats format {found}, expected {STATS_FORMAT_VERSION}")
        mu, sigma = d["mu"].astype(np.float64), d["sigma"].astype(np.float64)
        finite = np.isfinite(mu).all() and np.isfinite(sigma).all()
        if mu.ndim != 1 or sigma.shape != (mu.size, mu.size) or not finite:
            raise ValueError(f"{str(path)!r} holds malformed statistics: mu {mu.shape}, sigma {sigma.shape}")
        return cls(mu, sigma, int(d["count"]), str(d["protocol"]), str(d["fingerprint"]), str(d["i3d_sha256"]))

    def check_matches(self, protocol: FVDProtocol, i3d_sha256: str, source: str) -> None:
        """Raises ValueError, naming both sides, if these stats were made another way."""
        if self.protocol != protocol.name:
            raise ValueError(
                f"{source} was computed with protocol {self.protocol!r}, but this run uses {protocol.name!r}"
            )
        if self.fingerprint != protocol.fingerprint():
            raise ValueError(
                f"{source} was computed with protocol {self.protocol!r} as ({self.fingerprint}), "
                f"but {protocol.name!r} is now ({protocol.fingerprint()})"
            )
        if self.i3d_sha256 != i3d_sha256:
            raise ValueError(
                f"{source} was computed with I3D sha256 {self.i3d_sha256}, but this I3D file is {i3d_sha256}"
            )


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2), in float64.

    d² = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½) (Dowson & Landau 1982). The last trace is
    the sum of the singular values of S1^½ S2^½ (its nuclear norm: (S1^½ S2^½)(S1^½ S2^½)ᵀ = S1^½ S2 S1^½,
    which has the eigenvalues of S1 S2), with each root from ``np.linalg.eigh``: no complex numbers appear,
    unlike ``scipy.linalg.sqrtm(S1 @ S2)`` whose round-off imaginary parts FID code discards. Taking the
    eigenvalues of S1^½ S2 S1^½ instead squares the condition number, and a spectrum over ~6.5 decades lost
    real terms (0.56 too high on an FVD of 25,797). Eigenvalues of S1 and S2 below ``D * eps * max`` are
    round-off of true zeros (rank-deficient covariances, e.g. fewer samples than feature dimensions) and are
    set to 0 before the square root, which would otherwise blow 1e-16 noise up to 1e-8; identical sets give 0
    within round-off. A negative result (round-off) is clipped to 0.

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

    def root(s: np.ndarray) -> np.ndarray:  # S^½ of a symmetric positive semi-definite S
        w, V = np.linalg.eigh(s)
        return (V * np.sqrt(floor(w))) @ V.T

    tr_sqrt = np.linalg.svd(root(s1) @ root(s2), compute_uv=False).sum()  # tr((S1 S2)^½)
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
