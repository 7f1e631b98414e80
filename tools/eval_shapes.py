"""Prompt adherence on the shapes domain: generate from fresh phrasings of all 72 classes, judge each video
as read back from its mp4 (attributes, second objects, hue stability), beside the tokenizer's ceiling.

    python tools/eval_shapes.py --model models/shapes --out outputs/adherence

The work is :func:`videoeval.adherence.evaluate_shapes`; this module parses and prints. It
writes ``report.md``, ``results.json``, the videos and one contact sheet per mode and order to ``--out``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from core.cli import CliParser, parse_device, run_cli
from pipelines import DEFAULT_MODEL_DIR
from videoeval.adherence import DEFAULT_SEED, PHRASINGS, evaluate_shapes

# sampling overrides for every mode: flag -> (SamplingConfig field, type, help)
SAMPLING_FLAGS: dict[str, tuple[str, type, str]] = {
    "--steps": ("steps", int, "MaskGIT steps"),
    "--cfg": ("cfg_scale", float, "guidance scale"),
    "--temperature": ("temperature", float, "sampling temperature, also after given frames unless set below"),
    "--context-temperature": ("context_temperature", float, "temperature after given frames and in later windows"),
    "--choice-temperature": ("choice_temperature", float, "MaskGIT Gumbel noise on confidences, also after frames"),
    "--context-choice-temperature": ("context_choice_temperature", float, "MaskGIT choice noise after given frames"),
    "--top-k": ("top_k", int, "keep the k most likely tokens, 0 = off"),
    "--top-p": ("top_p", float, "nucleus sampling threshold, 1 = off"),
    "--mask-schedule": ("mask_schedule", str, "MaskGIT mask schedule"),
    "--corrector-rounds": ("corrector_rounds", int, "MaskGIT predictor-corrector rounds"),
    "--corrector-fraction": ("corrector_fraction", float, "share of a unit's tokens each corrector round draws again"),
    "--first-frame-candidates": ("first_frame_candidates", int, "GPT-style first frames drawn per video, best kept"),
}


def _main(argv: Sequence[str] | None) -> int:
    p = CliParser(prog="eval_shapes.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="pipeline directory (default: the shipped model)")
    p.add_argument(
        "--num-videos", type=int, default=216, help="videos per mode and order, over all 72 classes (0 skips them)"
    )
    p.add_argument(
        "--holdout-videos",
        type=int,
        default=None,
        help="videos per mode and order for the held-out combinations alone (0 skips them; default 48 when the "
        "model holds combinations out, else 0)",
    )
    p.add_argument(
        "--phrasing", choices=sorted(PHRASINGS), default="fresh",
        help="fresh: phrasings training never used (default); training: the training caption templates",
    )  # fmt: skip
    p.add_argument("--modes", default="", help="comma-separated modes (default: all in the model)")
    p.add_argument("--orders", default="", help="comma-separated orders to try per mode (default: the mode's default)")
    p.add_argument(
        "--holdout",
        default=None,
        allow_empty=True,
        help='held-out combinations, e.g. "green triangle up" (default: the model\'s holdout.json; "" for none)',
    )
    p.add_argument("--batch", type=int, default=8)
    for flag, (field, kind, text) in SAMPLING_FLAGS.items():
        p.add_argument(flag, dest=field, type=kind, default=None, help=f"{text} (default: the model's)")
    p.add_argument(
        "--seed", type=int, default=DEFAULT_SEED,
        help=f"phrasing and sampling seed (default {DEFAULT_SEED}, the reporting seed; choose settings on others)",
    )  # fmt: skip
    p.add_argument(
        "--recon-videos", type=int, default=144,
        help="fresh renders of all classes to judge the tokenizer's reconstructions on (0 skips it)",
    )  # fmt: skip
    p.add_argument(
        "--tasks", default="prompts",
        help="comma-separated: prompts (adherence), and the visual-conditioning tasks continuation, image, long, story",
    )  # fmt: skip
    p.add_argument("--conditioning-videos", type=int, default=72, help="videos per visual-conditioning task row")
    p.add_argument("--device", default="cpu", help="where the pipeline runs: cpu, cuda, cuda:1, ...")
    p.add_argument("--out", required=True, help="report folder")
    args = p.parse_args(argv)
    device = parse_device(args.device)
    summary = evaluate_shapes(
        args.model, args.out, tasks=[t for t in args.tasks.split(",") if t],
        conditioning_videos=args.conditioning_videos, device=device, num_videos=args.num_videos,
        holdout_videos=args.holdout_videos, modes=[m for m in args.modes.split(",") if m],
        orders=[o for o in args.orders.split(",") if o], holdout=args.holdout, batch=args.batch, seed=args.seed,
        recon_videos=args.recon_videos, phrasing=args.phrasing,
        sampling={field: getattr(args, field) for field, _, _ in SAMPLING_FLAGS.values()},
    )  # fmt: skip
    for key, s in summary.items():
        print(f"{key:40s} " + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()))
    print(f"wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0, or 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
