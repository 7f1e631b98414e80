"""Reconstruction quality of a video tokenizer: PSNR, SSIM and (optionally) LPIPS per video.

    python tools/eval_tokenizer.py --tokenizer runs/tok/tokenizer --data videos/ \\
        --num-frames 17 --size 128 --json eval.json --previews previews/

The work is :func:`videoeval.reconstruction.evaluate_dataset`: each video gives one clip of
``--num-frames`` frames ``--stride`` apart, resized and center-cropped to ``--size``, which goes
through the tokenizer and is scored against itself. The table lists every video and the mean;
``--json`` writes the same numbers, ``--previews`` a PNG per video (original over reconstruction).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli import CliParser, parse_device, run_cli
from core.files import atomic_write_json, check_file_target
from videoeval.reconstruction import evaluate_dataset, recon_table


def _main(argv: Sequence[str] | None) -> int:
    p = CliParser(prog="eval_tokenizer.py", description="Tokenizer reconstruction PSNR/SSIM/LPIPS.")
    p.add_argument("--tokenizer", required=True, type=Path, help="exported tokenizer folder (from_pretrained)")
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="a video/image file, a folder searched recursively, or a .csv/.jsonl manifest",
    )
    p.add_argument("--num-frames", type=int, default=17, help="frames per clip, 1 + k*ct (default 17)")
    p.add_argument("--size", type=int, default=128, help="square crop side, a multiple of cs (default 128)")
    p.add_argument("--stride", type=int, default=1, help="step between clip frames (default 1)")
    p.add_argument("--max-videos", type=int, default=None, help="evaluate only the first N videos (sorted)")
    p.add_argument("--lpips", type=Path, default=None, help="TorchScript LPIPS file (see videoeval.metrics.LPIPS)")
    p.add_argument("--json", type=Path, default=None, help="write per-video and mean metrics here")
    p.add_argument("--previews", type=Path, default=None, help="write an original-over-recon PNG per video here")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    device = parse_device(args.device) if args.device is not None else None
    if args.json is not None:
        inputs = {"--data": args.data, "--lpips": args.lpips, "--tokenizer": args.tokenizer}  # onto an input: lost
        check_file_target(args.json, "--json", inputs)  # before the evaluation, not after it
    report = evaluate_dataset(
        args.tokenizer, args.data, num_frames=args.num_frames, size=args.size, stride=args.stride,
        max_videos=args.max_videos, lpips_path=args.lpips, previews=args.previews, device=device,
    )  # fmt: skip
    print(recon_table(report["videos"], report["mean"], args.data))
    if report["skipped"]:
        total = len(report["videos"]) + len(report["skipped"])
        print(f"skipped {len(report['skipped'])} of {total} videos (unreadable or too short)")
    if args.json is not None:
        atomic_write_json(args.json, report, indent=2, allow_nan=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0, or 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
