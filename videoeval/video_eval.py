"""Video-set evaluation: FVD (and optionally IS) under a named protocol, and paired PSNR/SSIM/LPIPS.

The library behind ``tools/eval_video.py``. :func:`evaluate_fvd` compares a real and a generated
set under a preset of :data:`videoeval.fvd.PROTOCOLS` (see :mod:`videoeval.fvd` for what each
preset fixes) and returns a JSON-ready report that names the protocol and the I3D file's SHA-256.

``save_stats`` stores the real set's mean, covariance, count, protocol and I3D SHA-256 (read
back with ``allow_pickle=False``); passing that ``.npz`` as ``real`` reuses them and is refused
if the protocol or the I3D file differ. Without ``fake`` only the stats are written.

``compute_is`` adds IS over the generated set from the softmax of the 400 Kinetics logits (10
splits; skipped, with the reason, when they hold fewer than 2 clips each, since a split's IS is at most its clip
count). This is *not* the UCF-101 IS of TGAN/TATS/MAGVIT, which uses a C3D network trained on UCF-101; do not
compare the two.

:func:`evaluate_recon` pairs videos by relative path without the file suffix (``a/b.mp4`` ↔
``a/b.avi`` ↔ frame folder ``a/b/``) and reports PSNR and SSIM (:mod:`videoeval.metrics`) and
LPIPS when given its TorchScript network. Identical videos give PSNR ``PSNR_MAX_DB`` and SSIM 1.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.files import check_file_target, overlapping, sha256_file
from core.frames import frames_to_tensor
from videoeval.fvd import FeatureStats, FVDProtocol, frechet_distance, inception_score, iter_clips, resolve_protocol
from videoeval.i3d import KINETICS_CLASSES, I3DNetwork, extract_features, resolve_i3d_path
from videoeval.metrics import LPIPS, psnr, ssim
from videoeval.reconstruction import summarize
from videoeval.sources import VideoSource, find_videos, videos_by_key

log = logging.getLogger(__name__)

IS_NOTE = ("IS from I3D Kinetics-400 logits; not comparable to the C3D/UCF-101 IS of TGAN/TATS/MAGVIT; each split's "
           "IS is at most its clip count")  # fmt: skip
MIN_CLIPS_PER_SPLIT = 2


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
        log.info(
            "%s: %d videos found; the first %d readable (sorted by path) are used",
            label,
            len(sources),
            protocol.num_videos,
        )
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
    protocol: FVDProtocol | str,
    *,
    num_videos: int | None = None,
    i3d_path: str | Path | None = None,
    device: str | torch.device | None = "cpu",
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
        protocol: a preset of ``PROTOCOLS`` (or a variant of one), or a preset's name.
        num_videos: override the protocol's sample count (its name then records the override).
        i3d_path: TorchScript I3D file; None reads ``$TOKVID_I3D``.
        device: where I3D runs; None picks CUDA when available, else the CPU.
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
    protocol = resolve_protocol(protocol)
    if num_videos is not None and num_videos < 2:
        raise ValueError(f"--num-videos must be >= 2, got {num_videos}")
    if batch_size < 1 or is_splits < 1:
        raise ValueError("--batch-size and --is-splits must be >= 1")
    protocol = protocol.with_num_videos(num_videos)
    real, fake = Path(real), (Path(fake) if fake is not None else None)
    if save_stats is not None and _is_stats_file(real):
        raise ValueError("--save-stats needs --real to be a folder of videos, not a stats file")
    if save_stats is not None and Path(save_stats).suffix.lower() != ".npz":  # only .npz is read back as stats
        raise ValueError(f"--save-stats must name a .npz file, got {str(save_stats)!r}")
    if fake is None and save_stats is None:
        raise ValueError("give --fake, or --save-stats to only compute the real statistics")
    if fake is not None and not _is_stats_file(real) and not _is_stats_file(fake) and overlapping(real, fake):
        # the folders are searched whole: the generated videos were read as real ones too (FVD 0 when they sorted
        # first)
        raise ValueError(f"--real {str(real)!r} and --fake {str(fake)!r} overlap: give two separate folders")
    if fake is not None and _is_stats_file(real) and _is_stats_file(fake) and Path(real).samefile(fake):
        raise ValueError(f"--real and --fake are the same stats file {str(real)!r}: its FVD with itself is 0")
    i3d_file = resolve_i3d_path(i3d_path)
    if save_stats is not None:  # before the real features (hours for k600); --fake's stats were replaced, FVD 0
        check_file_target(save_stats, "--save-stats", {"--real": real, "--fake": fake, "--i3d": i3d_file})
    sha = sha256_file(i3d_file)
    net: I3DNetwork | None = None
    i3d = {"path": str(i3d_file), "sha256": sha}
    report: dict[str, Any] = {"fvd": None, "protocol": protocol.to_dict(), "i3d": i3d}

    def stats_of(label: str, source: Path) -> tuple[FeatureStats, np.ndarray | None]:
        nonlocal net
        if _is_stats_file(source):
            stats = FeatureStats.load(source)
            stats.check_matches(protocol, sha, f"{label} stats {str(source)!r}")
            report[label] = {"source": str(source), "stats_file": True, "clips": stats.count}
            return stats, None
        if net is None:
            net = I3DNetwork(i3d_file, device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
        elif len(fake_feats) < MIN_CLIPS_PER_SPLIT * is_splits:  # a split of one clip scores exactly 1
            reason = (f"{len(fake_feats)} clips over {is_splits} splits leave fewer than {MIN_CLIPS_PER_SPLIT} per "
                      "split (a split's IS is at most its clip count): lower --is-splits or add clips")  # fmt: skip
        if reason is None:
            mean, std = inception_score(fake_feats, is_splits)
            report["inception_score"] = {"mean": mean, "std": std, "num_splits": is_splits,
                                         "clips_per_split": len(fake_feats) // is_splits, "note": IS_NOTE}  # fmt: skip
        else:
            log.warning("Inception Score skipped: %s", reason)
            report["inception_score_skipped"] = reason
    return report


def _pairs(real_root: Path, fake_root: Path) -> list[tuple[VideoSource, VideoSource]]:
    """Real and fake videos paired by relative path without suffix; any unpaired one is an error."""
    sides = {}
    for label, root in (("real", real_root), ("fake", fake_root)):
        by_key = videos_by_key(root, label)
        if not by_key:
            raise ValueError(f"{label}: no videos under {str(root)!r}")
        sides[label] = by_key
    for a, b in (("real", "fake"), ("fake", "real")):
        missing = sorted(set(sides[a]) - set(sides[b]))
        if missing:
            raise ValueError(
                f"{len(missing)} {a} videos have no {b} counterpart, e.g. {missing[0]!r} (pairs by relative path)"
            )
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
    if overlapping(real_root, fake_root):  # the same folder scored a perfect reconstruction: 100 dB, SSIM 1
        raise ValueError(f"--real {str(real_root)!r} and --fake {str(fake_root)!r} overlap: give two separate folders")
    rows = []
    for real_src, fake_src in _pairs(Path(real_root), Path(fake_root)):
        a, b = real_src.read(num_frames=num_frames), fake_src.read(num_frames=num_frames)  # (T, H, W, 3)
        if a.shape != b.shape:
            hint = "" if a.shape[1:] != b.shape[1:] else "; --num-frames N compares the first N"
            shapes = f"{str(real_src.path)!r} is {a.shape[:3]} (T, H, W) but {str(fake_src.path)!r} is {b.shape[:3]}"
            raise ValueError(shapes + hint)
        x, y = frames_to_tensor(a).unsqueeze(0), frames_to_tensor(b).unsqueeze(0)  # (1, 3, T, H, W)
        row: dict[str, Any] = {
            "path": str(real_src.path),
            "num_frames": a.shape[0],
            "height": a.shape[1],
            "width": a.shape[2],
        }
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
            if info.get("stats_file"):
                kind = "cached stats"
            else:
                kind = f"{info['videos_found']} videos, {len(info['skipped'])} skipped"
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


def recon_report(
    real_root: str | os.PathLike,
    fake_root: str | os.PathLike,
    *,
    lpips_path: str | os.PathLike | None = None,
    num_frames: int | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_recon` with the LPIPS network loaded from ``lpips_path``, as a JSON-ready report.

    Returns:
        ``real``, ``fake``, ``mean`` (per metric) and ``videos`` (one row per pair).
    """
    lpips = LPIPS(lpips_path) if lpips_path is not None else None
    rows = evaluate_recon(real_root, fake_root, lpips=lpips, num_frames=num_frames)
    return {"real": str(real_root), "fake": str(fake_root), "mean": summarize(rows), "videos": rows}
