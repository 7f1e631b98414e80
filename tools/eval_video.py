"""Video generation metrics with explicit protocols: FVD (and optionally IS) and paired PSNR/SSIM/LPIPS.

Usage::

    python tools/eval_video.py fvd --real DIR_OR_STATS [--fake DIR_OR_STATS] --protocol quick \\
        --i3d i3d_torchscript.pt [--save-stats real.npz] [--inception-score] [--json OUT]
    python tools/eval_video.py recon --real DIR --fake DIR [--lpips PATH] [--json OUT]

FVD numbers from different repositories are rarely comparable: they differ in the I3D
weights, the layer, the frame count and stride, the resolution, mp4 versus lossless frames,
and the sample count (FVD is biased upwards at small counts). Every tokvid FVD names a preset
of ``PROTOCOLS``; the JSON report carries the full protocol and the SHA-256 of the I3D file.

Presets (``PROTOCOLS``)
-----------------------

| preset | task | frames | input → I3D | samples per set | generated as | matches |
|---|---|---|---|---|---|---|
| `ucf101` | UCF-101 class-conditional generation | 16, stride 1 | 128² → 224² | 10,000 generated vs 10,000 real (train split) | frames | MAGVIT (Yu et al., CVPR 2023), which follows TATS (Ge et al., ECCV 2022); checked in MAGVIT's `videogvt/configs/maskgvt_ucf101_config.py`: 16 frames, stride 1, 128², `eval.num_examples = 10000`, `eval.data_splits = 'train'` |
| `k600` | Kinetics-600 frame prediction: 5 context + 11 predicted frames, FVD over all 16 | 16, stride 1 | 64² → 224² | 50,000 generated vs 50,000 real (test split) | frames | task of TrIVD-GAN (Luc et al. 2020); 50k samples as in Video Diffusion Models (Ho et al. 2022), the setting of MAGVIT's and Phenaki's K600 results |
| `quick` | smoke runs | 16, stride 1 | 64² → 224² | 64 vs 64 | mp4 | nothing: never quote it next to a paper |

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

``--save-stats OUT.npz`` stores the real set's mean, covariance, count, protocol and I3D
SHA-256 (read back with ``allow_pickle=False``); ``--real OUT.npz`` reuses them and is refused
if the protocol or the I3D file differ. Without ``--fake`` the run only writes the stats.

``--inception-score`` adds IS over the generated set from the softmax of the 400 Kinetics
logits (10 splits). This is *not* the UCF-101 IS of TGAN/TATS/MAGVIT, which uses a C3D network
trained on UCF-101; do not compare the two.

``recon`` pairs videos by relative path without the file suffix (``a/b.mp4`` ↔ ``a/b.avi`` ↔
frame folder ``a/b/``) and reports PSNR and SSIM (``tools/metrics.py``) and LPIPS when
``--lpips`` gives its TorchScript file. Identical videos give PSNR ``PSNR_MAX_DB`` and SSIM 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/eval_video.py`: make the repo importable
    _ROOT = str(Path(__file__).resolve().parents[1])
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)

import argparse
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from core.cli import UsageError, run_cli, setup_logging
from core.files import atomic_write_text
from tools.eval_tokenizer import format_table, summarize
from core.files import sha256_file
from videoeval.fvd import (
    KINETICS_CLASSES,
    FeatureStats,
    FVDProtocol,
    I3DNetwork,
    VideoSource,
    extract_features,
    find_videos,
    frechet_distance,
    inception_score,
    iter_clips,
    resolve_i3d_path,
)
from videoeval.metrics import LPIPS, psnr, ssim
from core.video_io import frames_to_tensor

__all__ = ["PROTOCOLS", "FVDProtocol", "evaluate_fvd", "evaluate_recon", "main"]

log = logging.getLogger("tools.eval_video")

IS_NOTE = "IS from I3D Kinetics-400 logits; not comparable to the C3D/UCF-101 IS of TGAN/TATS/MAGVIT"

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


def _is_stats_file(path: Path) -> bool:
    return path.suffix.lower() == ".npz" and path.is_file()


def _set_features(
    label: str, root: Path, protocol: FVDProtocol, net: I3DNetwork, batch_size: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """I3D features of one folder of videos under ``protocol``, and what was read."""
    sources = find_videos(root)
    if not sources:
        raise ValueError(f"{label}: no videos (files or folders of frames) under {str(root)!r}")
    files = sum(s.kind == "file" for s in sources)
    if label == "fake" and protocol.video_format == "frames" and files:
        log.warning(
            "protocol %s expects generated videos as lossless frames, but %d of %d under %s are "
            "compressed files; compression artefacts raise FVD",
            protocol.name, files, len(sources), root,
        )  # fmt: skip
    skipped: list[str] = []
    feats, names = extract_features(
        net, iter_clips(sources, protocol, skipped=skipped), i3d_size=protocol.i3d_size, batch_size=batch_size
    )
    if len(names) < protocol.num_videos:
        raise ValueError(
            f"{label}: {str(root)!r} gave {len(names)} clips ({len(sources)} videos, {len(skipped)} skipped), "
            f"but protocol {protocol.name!r} needs {protocol.num_videos}"
        )
    if len(sources) > protocol.num_videos:
        log.info("%s: %d videos found; the first %d readable (sorted by path) are used", label, len(sources), protocol.num_videos)
    info = {
        "source": str(root),
        "videos_found": len(sources),
        "formats": {"file": files, "frames": len(sources) - files},
        "clips": len(names),
        "clips_beyond_first_window": sum(not n.endswith("@0") for n in names),
        "skipped": skipped,
    }
    return feats, info


def evaluate_fvd(
    real: str | Path,
    fake: str | Path | None,
    protocol: FVDProtocol,
    *,
    i3d_path: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    save_stats: str | Path | None = None,
    compute_is: bool = False,
    is_splits: int = 10,
) -> dict[str, Any]:
    """FVD between two sets of videos under a protocol.

    Args:
        real: folder of real videos, or an ``.npz`` of cached statistics.
        fake: folder of generated videos or ``.npz`` statistics; None only computes (and
            saves) the real statistics.
        protocol: a preset of ``PROTOCOLS`` (or a variant of one).
        i3d_path: TorchScript I3D file; None reads ``$TOKVID_I3D``.
        device: where I3D runs.
        batch_size: clips per I3D call.
        save_stats: write the real set's statistics here (``real`` must be a folder).
        compute_is: add the Inception Score of the generated set (needs 400-d I3D logits).
        is_splits: IS splits.

    Returns:
        A JSON-ready report: ``protocol`` (all fields), ``i3d`` (path, sha256), ``real`` and
        ``fake`` (what was read), ``fvd`` (None without ``fake``), ``inception_score`` or
        ``inception_score_skipped``, ``stats_saved``.

    Raises:
        ValueError: a missing I3D file (the message says what to obtain), too few clips,
            cached stats made with another protocol or I3D file, or other bad input.
    """
    real, fake = Path(real), (Path(fake) if fake is not None else None)
    if save_stats is not None and _is_stats_file(real):
        raise ValueError("--save-stats needs --real to be a folder of videos, not a stats file")
    if fake is None and save_stats is None:
        raise ValueError("give --fake, or --save-stats to only compute the real statistics")
    i3d_file = resolve_i3d_path(i3d_path)
    sha = sha256_file(i3d_file)
    net: I3DNetwork | None = None
    report: dict[str, Any] = {"fvd": None, "protocol": protocol.to_dict(), "i3d": {"path": str(i3d_file), "sha256": sha}}

    def stats_of(label: str, source: Path) -> tuple[FeatureStats, np.ndarray | None]:
        nonlocal net
        if _is_stats_file(source):
            stats = FeatureStats.load(source)
            stats.check_matches(protocol, sha, f"{label} stats {str(source)!r}")
            report[label] = {"source": str(source), "stats_file": True, "clips": stats.count}
            return stats, None
        if net is None:
            net = I3DNetwork(i3d_file, device)
        feats, report[label] = _set_features(label, source, protocol, net, batch_size)
        return FeatureStats.from_features(feats, protocol=protocol, i3d_sha256=sha), feats

    real_stats, _ = stats_of("real", real)
    if save_stats is not None:
        real_stats.save(save_stats)
        report["stats_saved"] = str(save_stats)
        log.info("wrote real statistics (%d clips, protocol %s) to %s", real_stats.count, protocol.name, save_stats)
    if fake is None:
        return report
    fake_stats, fake_feats = stats_of("fake", fake)
    if fake_stats.mu.shape != real_stats.mu.shape:
        raise ValueError(f"real and fake features differ in width: {real_stats.mu.size} vs {fake_stats.mu.size}")
    report["fvd"] = frechet_distance(real_stats.mu, real_stats.sigma, fake_stats.mu, fake_stats.sigma)
    if compute_is:
        reason = None
        if fake_feats is None:
            reason = "IS needs per-clip logits, but --fake is a stats file"
        elif fake_feats.shape[1] != KINETICS_CLASSES:
            reason = f"the I3D output is {fake_feats.shape[1]}-d, not the {KINETICS_CLASSES} Kinetics-400 logits"
        if reason is None:
            mean, std = inception_score(fake_feats, is_splits)
            report["inception_score"] = {"mean": mean, "std": std, "num_splits": min(is_splits, len(fake_feats)), "note": IS_NOTE}
        else:
            log.warning("Inception Score skipped: %s", reason)
            report["inception_score_skipped"] = reason
    return report


def _pairs(real_root: Path, fake_root: Path) -> list[tuple[VideoSource, VideoSource]]:
    """Real and fake videos paired by relative path without suffix; any unpaired one is an error."""
    sides = {}
    for label, root in (("real", real_root), ("fake", fake_root)):
        by_key: dict[str, VideoSource] = {}
        for src in find_videos(root):
            key = src.key(root)
            if key in by_key:
                raise ValueError(f"{label}: {str(by_key[key].path)!r} and {str(src.path)!r} both pair as {key!r}")
            by_key[key] = src
        if not by_key:
            raise ValueError(f"{label}: no videos under {str(root)!r}")
        sides[label] = by_key
    for a, b in (("real", "fake"), ("fake", "real")):
        missing = sorted(set(sides[a]) - set(sides[b]))
        if missing:
            raise ValueError(f"{len(missing)} {a} videos have no {b} counterpart, e.g. {missing[0]!r} (pairs by relative path)")
    return [(sides["real"][k], sides["fake"][k]) for k in sorted(sides["real"])]


@torch.no_grad()
def evaluate_recon(
    real_root: str | Path, fake_root: str | Path, *, lpips: LPIPS | None = None, num_frames: int | None = None
) -> list[dict[str, Any]]:
    """PSNR, SSIM and (optionally) LPIPS of each fake video against its real counterpart.

    Args:
        real_root: folder of real videos (or one video).
        fake_root: folder of reconstructions with the same relative paths.
        lpips: optional LPIPS network (``videoeval.metrics.LPIPS``).
        num_frames: compare only the first N frames (both videos need at least N).

    Returns:
        One dict per pair, sorted by path: ``path`` (real), ``num_frames``, ``height``,
        ``width``, ``psnr`` (dB, capped), ``ssim`` and, with ``lpips``, ``lpips``.

    Raises:
        ValueError: unpaired videos, or a pair whose frame count or size differ.
    """
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"--num-frames must be >= 1, got {num_frames}")
    rows = []
    for real_src, fake_src in _pairs(Path(real_root), Path(fake_root)):
        a, b = real_src.read(num_frames=num_frames), fake_src.read(num_frames=num_frames)  # (T, H, W, 3)
        if a.shape != b.shape:
            hint = "" if a.shape[1:] != b.shape[1:] else "; --num-frames N compares the first N"
            shapes = f"{str(real_src.path)!r} is {a.shape[:3]} (T, H, W) but {str(fake_src.path)!r} is {b.shape[:3]}"
            raise ValueError(shapes + hint)
        x, y = frames_to_tensor(a).unsqueeze(0), frames_to_tensor(b).unsqueeze(0)  # (1, 3, T, H, W)
        row: dict[str, Any] = {"path": str(real_src.path), "num_frames": a.shape[0], "height": a.shape[1], "width": a.shape[2]}
        row["psnr"], row["ssim"] = float(psnr(x, y)[0]), float(ssim(x, y)[0])
        if lpips is not None:
            row["lpips"] = float(lpips(x, y)[0])
        rows.append(row)
    return rows


def format_fvd(report: dict[str, Any]) -> str:
    """Plain-text summary of :func:`evaluate_fvd`'s report."""
    p = report["protocol"]
    lines = [
        f"{'protocol':<10}{p['name']}: {p['num_frames']} frames, stride {p['frame_stride']}, "
        f"{p['input_size']}² -> {p['i3d_size']}², {p['num_videos']} clips per set",
        f"{'i3d':<10}{Path(report['i3d']['path']).name} sha256 {report['i3d']['sha256'][:16]}",
    ]
    for label in ("real", "fake"):
        if label in report:
            info = report[label]
            kind = "cached stats" if info.get("stats_file") else f"{info['videos_found']} videos, {len(info['skipped'])} skipped"
            lines.append(f"{label:<10}{info['source']} ({info['clips']} clips; {kind})")
    if report.get("stats_saved"):
        lines.append(f"{'saved':<10}{report['stats_saved']}")
    if report["fvd"] is not None:
        lines.append(f"{'FVD':<10}{report['fvd']:.3f}")
    if "inception_score" in report:
        s = report["inception_score"]
        lines.append(f"{'IS':<10}{s['mean']:.3f} ± {s['std']:.3f} ({IS_NOTE})")
    elif "inception_score_skipped" in report:
        lines.append(f"{'IS':<10}skipped: {report['inception_score_skipped']}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line through run_cli, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="eval_video.py", description="FVD/IS under explicit protocols, and paired PSNR/SSIM/LPIPS.")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fvd", help="Fréchet Video Distance between real and generated videos")
    f.add_argument("--real", required=True, type=Path, help="folder of real videos, or .npz stats from --save-stats")
    f.add_argument("--fake", type=Path, default=None, help="folder of generated videos (or .npz stats)")
    f.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS), help="preset (see the module docstring)")
    f.add_argument("--i3d", type=Path, default=None, help="TorchScript i3d_torchscript.pt (default: $TOKVID_I3D)")
    f.add_argument("--num-videos", type=int, default=None, help="override the preset's sample count (renames the protocol)")
    f.add_argument("--save-stats", type=Path, default=None, help="write the real set's statistics (.npz) here")
    f.add_argument("--inception-score", action="store_true", help="also report IS of the generated set (I3D logits)")
    f.add_argument("--is-splits", type=int, default=10, help="IS splits (default 10)")
    f.add_argument("--batch-size", type=int, default=8, help="clips per I3D call (default 8)")
    f.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if available")
    f.add_argument("--json", type=Path, default=None, help="write the report here")
    r = sub.add_parser("recon", help="PSNR/SSIM/LPIPS of paired videos")
    r.add_argument("--real", required=True, type=Path, help="folder of real videos")
    r.add_argument("--fake", required=True, type=Path, help="folder of reconstructions, same relative paths")
    r.add_argument("--lpips", type=Path, default=None, help="TorchScript LPIPS file (see tools/metrics.py)")
    r.add_argument("--num-frames", type=int, default=None, help="compare only the first N frames")
    r.add_argument("--json", type=Path, default=None, help="write per-video and mean metrics here")
    return p


def _write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2, allow_nan=False) + "\n")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    if args.command == "fvd":
        if args.num_videos is not None and args.num_videos < 2:
            raise ValueError(f"--num-videos must be >= 2, got {args.num_videos}")
        if args.batch_size < 1 or args.is_splits < 1:
            raise ValueError("--batch-size and --is-splits must be >= 1")
        try:
            torch.device(args.device)
        except RuntimeError as err:
            raise ValueError(f"--device {args.device!r} is not a device: {err}") from None
        protocol = PROTOCOLS[args.protocol].with_num_videos(args.num_videos)
        report = evaluate_fvd(
            args.real, args.fake, protocol, i3d_path=args.i3d, device=args.device, batch_size=args.batch_size,
            save_stats=args.save_stats, compute_is=args.inception_score, is_splits=args.is_splits,
        )  # fmt: skip
        print(format_fvd(report))
    else:
        lpips = LPIPS(args.lpips) if args.lpips is not None else None
        rows = evaluate_recon(args.real, args.fake, lpips=lpips, num_frames=args.num_frames)
        mean = summarize(rows)
        print(format_table(rows, mean, args.real))
        report = {"real": str(args.real), "fake": str(args.fake), "mean": mean, "videos": rows}
    if args.json is not None:
        _write_json(args.json, report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``fvd`` or ``recon``. Returns 0, or 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
