"""``generate.py`` / ``tokvid-generate``: a prompt or class label in, an mp4 (plus a PNG contact sheet) out.

    python generate.py --prompt "a red circle moving left"
    python generate.py --label 5 --mode ar --order cube --num-videos 4 --out outputs/
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "shapes"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from core.cli import UsageError

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one line and exit 2, no usage dump
            raise UsageError(message)

    p = Parser(prog="generate.py", description="Generate a video from a text prompt or a class label.")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--prompt", help='text prompt, e.g. "a red circle moving left"')
    what.add_argument("--label", "--class-id", dest="label", help="class id (or its exact class name)")
    p.add_argument("--mode", choices=["ar", "maskgit"], help="GPT-style or MaskGIT-style generator")
    p.add_argument("--order", choices=["token", "cube", "frame", "clip"], help="prediction units")
    p.add_argument("--num-frames", type=int, help="frames (1 + k*ct); more than trained needs --order frame")
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale")
    p.add_argument("--steps", type=int, help="MaskGIT steps per unit")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--temperature", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-videos", type=int, default=1)
    p.add_argument("--out", help="an .mp4/.gif file for one video, a directory for several (default outputs/)")
    p.add_argument("--gif", action="store_true", help="also write a .gif next to each mp4")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="pipeline directory (default: the shipped shapes model)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.prompt is None and args.label is None:
        args.prompt = "a red circle moving left"
    if args.num_videos < 1:
        raise UsageError("--num-videos must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from core.cli import run_cli

    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    import torch

    from pipelines.io import check_writable, output_paths, save_output
    from pipelines.video import VideoPipeline

    if args.prompt is not None and not args.prompt.strip():
        raise ValueError("the prompt is empty; describe the video, e.g. --prompt \"a red circle moving left\"")
    out = args.out or ("outputs/video.mp4" if args.num_videos == 1 else "outputs")
    paths = output_paths(out, args.num_videos)
    check_writable(paths)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"unknown device {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but CUDA is not available")
    pipe = VideoPipeline.from_pretrained(args.model).to(device)
    labels = _parse_label(args.label, pipe) if args.label is not None else None
    mode, order = pipe.resolve_mode_order(args.mode, args.order)
    sampling = pipe.config.sampling.get(mode)
    from generator.sampling import SamplingConfig

    sampling = sampling or SamplingConfig()
    changes = {k: v for k, v in dict(cfg_scale=args.cfg, steps=args.steps, top_k=args.top_k, top_p=args.top_p,
                                      temperature=args.temperature).items() if v is not None}
    sampling = replace(sampling, **changes)
    g = torch.Generator(device=device).manual_seed(args.seed)
    output = pipe(args.prompt, labels, mode=mode, order=order, num_frames=args.num_frames, num_videos=args.num_videos,
                  sampling=sampling, generator=g, progress=not args.quiet)
    written = save_output(output, paths, gif=args.gif)
    total = time.perf_counter() - start
    what = f"prompt {args.prompt!r}" if args.prompt is not None else f"class {labels}"
    print(f"generated {args.num_videos} video(s) for {what} with mode={mode}, order={order}: "
          f"{output.frames.shape[1]} frames of {output.frames.shape[3]}x{output.frames.shape[2]} at {output.fps:g} fps")
    for path in written:
        print(f"wrote {path}")
    print(f"time: {total:.2f} s total, {output.timings['sampling']:.2f} s sampling, {output.timings['decoding']:.2f} s decoding")
    return 0


def _parse_label(text: str, pipe) -> int:
    try:
        return int(text)
    except ValueError:
        names = [n.lower() for n in pipe.config.class_names]
        if text.strip().lower() in names:
            return names.index(text.strip().lower())
        raise ValueError(f"unknown class {text!r}: give a class id 0..{len(names) - 1} or an exact class name") from None


if __name__ == "__main__":
    sys.exit(main())
