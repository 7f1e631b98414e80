"""Video generation metrics with explicit protocols: FVD (and optionally IS) and paired PSNR/SSIM/LPIPS.

    python tools/eval_video.py fvd --real DIR_OR_STATS [--fake DIR_OR_STATS] --protocol quick \\
        --i3d i3d_torchscript.pt [--save-stats real.npz] [--inception-score] [--json OUT]
    python tools/eval_video.py recon --real DIR --fake DIR [--lpips PATH] [--json OUT]
    python tools/eval_video.py predict --model DIR --real DIR --protocol k600 --out PRED  # then fvd --fake PRED

The work is :func:`videoeval.video_eval.evaluate_fvd` (``fvd``) and
:func:`videoeval.video_eval.recon_report` (``recon``) and
:func:`videoeval.prediction.predict_continuations` (``predict``: frame prediction, a model's own
continuations of the real clips' first frames, for an FVD in the prediction form). Every FVD names a preset of
``videoeval.fvd.PROTOCOLS`` (``ucf101``, ``k600``, ``quick``; see :mod:`videoeval.fvd` for what
each fixes and which paper it matches); the JSON report carries the full protocol and the
SHA-256 of the I3D file, which is never downloaded. ``recon`` pairs videos by relative path
without the file suffix.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli import CliParser, parse_device, run_cli, seed_value, setup_logging
from core.files import atomic_write_json, check_file_target
from videoeval.fvd import PROTOCOLS
from videoeval.prediction import predict_continuations
from videoeval.reconstruction import recon_table
from videoeval.video_eval import evaluate_fvd, format_fvd, recon_report


def build_parser() -> CliParser:
    """The ``fvd`` and ``recon`` subcommands."""
    p = CliParser(prog="eval_video.py", description="FVD/IS under explicit protocols, and paired PSNR/SSIM/LPIPS.")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fvd", help="Fréchet Video Distance between real and generated videos")
    f.add_argument("--real", required=True, type=Path, help="folder of real videos, or .npz stats from --save-stats")
    f.add_argument("--fake", type=Path, default=None, help="folder of generated videos (or .npz stats)")
    f.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS), help="preset (see videoeval.fvd)")
    f.add_argument("--i3d", type=Path, default=None, help="TorchScript i3d_torchscript.pt (default: $TOKVID_I3D)")
    f.add_argument(
        "--num-videos", type=int, default=None, help="override the preset's sample count (renames the protocol)"
    )
    f.add_argument("--save-stats", type=Path, default=None, help="write the real set's statistics (.npz) here")
    f.add_argument("--inception-score", action="store_true", help="also report IS of the generated set (I3D logits)")
    f.add_argument("--is-splits", type=int, default=10, help="IS splits (default 10)")
    f.add_argument("--batch-size", type=int, default=8, help="clips per I3D call (default 8)")
    f.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    f.add_argument("--json", type=Path, default=None, help="write the report here")
    r = sub.add_parser("recon", help="PSNR/SSIM/LPIPS of paired videos")
    r.add_argument("--real", required=True, type=Path, help="folder of real videos")
    r.add_argument("--fake", required=True, type=Path, help="folder of reconstructions, same relative paths")
    r.add_argument("--lpips", type=Path, default=None, help="TorchScript LPIPS file (see videoeval.metrics.LPIPS)")
    r.add_argument("--num-frames", type=int, default=None, help="compare only the first N frames")
    r.add_argument("--json", type=Path, default=None, help="write per-video and mean metrics here")
    q = sub.add_parser("predict", help="continue the first frames of real clips with a model (for fvd --fake)")
    q.add_argument("--model", required=True, type=Path, help="pipeline directory")
    q.add_argument("--real", required=True, type=Path, help="folder of real videos")
    q.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS), help="preset (frames, stride, context)")
    q.add_argument("--out", required=True, type=Path, help="folder for the predicted clips (same relative paths)")
    q.add_argument("--context-frames", type=int, default=None, help="override the preset's context frames")
    q.add_argument("--num-videos", type=int, default=None, help="clips to predict (default: the preset's count)")
    q.add_argument("--mode", default=None, help="generator mode (default from the model)")
    q.add_argument("--order", default=None, help="prediction units (default from the model)")
    q.add_argument("--prompt", default=None, help="one prompt for every clip (default: none, frames alone)")
    q.add_argument("--batch-size", type=int, default=8, help="clips per pipeline call (default 8)")
    q.add_argument("--seed", type=seed_value, default=0)
    q.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    q.add_argument("--json", type=Path, default=None, help="write the summary here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``fvd``, ``recon`` or ``predict``. Returns 0, or 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    inputs = {f"--{k.replace('_', '-')}": getattr(args, k, None) for k in ("real", "fake", "i3d", "lpips", "model",
                                                                            "save_stats")}  # fmt: skip
    if args.json is not None:
        check_file_target(args.json, "--json", inputs)  # before the evaluation, not after it
    if args.command == "fvd":
        report = evaluate_fvd(
            args.real, args.fake, args.protocol, num_videos=args.num_videos, i3d_path=args.i3d,
            device=parse_device(args.device) if args.device is not None else None, batch_size=args.batch_size,
            save_stats=args.save_stats, compute_is=args.inception_score, is_splits=args.is_splits,
        )  # fmt: skip
        print(format_fvd(report))
    elif args.command == "predict":
        report = predict_continuations(
            args.model, args.real, args.out, args.protocol, context_frames=args.context_frames,
            num_videos=args.num_videos, mode=args.mode, order=args.order, prompt=args.prompt,
            batch=args.batch_size, seed=args.seed, device=parse_device(args.device),
        )  # fmt: skip
        print(f"wrote {report['videos']} predicted clips ({report['context_frames']} context + "
              f"{report['num_frames'] - report['context_frames']} predicted frames) to {report['out']}")  # fmt: skip
    else:
        report = recon_report(args.real, args.fake, lpips_path=args.lpips, num_frames=args.num_frames)
        print(recon_table(report["videos"], report["mean"], args.real))
    if args.json is not None:
        atomic_write_json(args.json, report, indent=2, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
