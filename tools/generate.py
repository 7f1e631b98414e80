"""``generate.py`` / ``tokvid-generate``: a prompt or class label in, an mp4 (plus a PNG contact sheet) out.

    python generate.py --prompt "a red circle moving left"
    python generate.py --label 5 --mode ar --order cube --num-videos 4 --out outputs/
    python generate.py --image first.png --prompt "a red circle moving left"
    python generate.py --video clip.mp4 --context-frames 5 --num-frames 33
    python generate.py --prompt "a red circle moving left" --prompt "a red circle moving up" --segment-frames 17

The work is :func:`pipelines.generate.generate_to_files`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from core.cli import CliParser, frozen_imports, parse_device, run_cli

with frozen_imports():  # also for the installed tokvid-generate, which imports this module directly
    import torch

    from pipelines.generate import DEFAULT_PROMPT, generate_to_files
    from pipelines.video import DEFAULT_MODEL_DIR

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of ``generate.py``; bad input raises :class:`core.cli.UsageError`."""
    p = CliParser(prog="generate.py", description="Generate a video from a text prompt or a class label.")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--prompt",
        action="append",
        help=f'text prompt (a text model\'s default: "{DEFAULT_PROMPT}"); repeat it with --segment-frames for a story',
    )
    what.add_argument("--label", "--class-id", dest="label", help="class id (or its exact class name)")
    p.add_argument("--mode", choices=["ar", "maskgit"], help="GPT-style or MaskGIT-style generator")
    p.add_argument("--order", choices=["token", "cube", "frame", "clip"], help="prediction units")
    p.add_argument(
        "--num-frames",
        type=int,
        help="total frames, context included (1 + k*ct); longer than trained is made window by window",
    )
    visual = p.add_mutually_exclusive_group()
    visual.add_argument("--image", help="an image file to start from (image-to-video); resized and center-cropped")
    visual.add_argument("--video", help="a video file to continue from its last --context-frames frames")
    p.add_argument("--context-frames", type=int, help="frames of --video to continue from (1 + k*ct, e.g. 5)")
    p.add_argument(
        "--segment-frames",
        type=int,
        help="a story: frames of the first segment (1 + k*ct); each further --prompt adds one fewer",
    )
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale")
    p.add_argument("--steps", type=int, help="MaskGIT steps per unit")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--temperature", type=float, help="softmax temperature (every call, unless --context-temperature)")
    p.add_argument("--context-temperature", type=float, help="temperature after --image/--video and in later windows")
    p.add_argument(
        "--choice-temperature", type=float,
        help="MaskGIT: Gumbel noise on the confidences that pick which tokens to keep (every call, unless "
        "--context-choice-temperature)",
    )  # fmt: skip
    p.add_argument("--context-choice-temperature", type=float,
                   help="MaskGIT: that noise after --image/--video and in later windows")  # fmt: skip
    p.add_argument(
        "--first-frame-candidates", type=int,
        help="GPT-style: first latent frames drawn per video, the one the prompt explains best kept",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=int, default=0,
        help="random seed: the same seed, settings and --num-videos give the same videos on one machine; the videos "
        "of one call are drawn as one batch, so the first of --num-videos 4 is not the video of --num-videos 1",
    )  # fmt: skip
    p.add_argument("--num-videos", type=int, default=1, help="videos from one call, sampled as one batch (<= 256)")
    p.add_argument("--out", help="an .mp4/.gif file for one video, a directory for several (a name ending in / is "
                   "always a directory; default "
                   "outputs/video.mp4 for one, outputs/ for several); the "
                   ".png sheet and .gif beside a video replace only files that tokvid wrote")  # fmt: skip
    p.add_argument("--gif", action="store_true", help="also write a .gif next to each mp4")
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="pipeline directory (default: the shipped model)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32",
        help="model precision (bfloat16 halves memory; on CPU fp32 is usually the fastest)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _main(argv: Sequence[str] | None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    made = generate_to_files(
        args.prompt, args.label, image=args.image, video=args.video, context_frames=args.context_frames,
        segment_frames=args.segment_frames, out=args.out, model=args.model, num_videos=args.num_videos, mode=args.mode,
        order=args.order, num_frames=args.num_frames, seed=args.seed, gif=args.gif, device=parse_device(args.device),
        dtype=DTYPES[args.dtype],
        progress=not args.quiet,
        sampling={"cfg_scale": args.cfg, "steps": args.steps, "top_k": args.top_k, "top_p": args.top_p,
                  "temperature": args.temperature, "context_temperature": args.context_temperature,
                  "choice_temperature": args.choice_temperature,
                  "context_choice_temperature": args.context_choice_temperature,
                  "first_frame_candidates": args.first_frame_candidates},
    )  # fmt: skip
    total = time.perf_counter() - start
    frames, timings = made.output.frames, made.output.timings
    what = "no prompt" if not made.prompts else "prompt " + " then ".join(map(repr, made.prompts))
    what = f"class {made.label}" if made.label is not None else what
    if args.image or args.video:
        what += f", continuing {args.image or args.video}"
    print(
        f"generated {args.num_videos} video(s) for {what} with mode={made.mode}, order={made.order}: "
        f"{frames.shape[1]} frames of {frames.shape[3]}x{frames.shape[2]} at {made.output.fps:g} fps"
    )
    for path in made.written:
        print(f"wrote {path}")
    encoding = f", {timings['encoding']:.2f} s encoding context" if timings.get("encoding") else ""
    print(
        f"time: {total:.2f} s total, {timings['sampling']:.2f} s sampling, {timings['decoding']:.2f} s decoding"
        + encoding
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``generate.py`` and ``tokvid-generate``: 0, or 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
