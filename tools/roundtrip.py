"""Tokenize and detokenize one video with a trained tokenizer; write an mp4 and a PNG strip.

    python tools/roundtrip.py --tokenizer runs/tok/tokenizer --video clip.mp4 --out outputs/rt

The work is :func:`videoeval.reconstruction.roundtrip`. Writes ``roundtrip.mp4`` (original |
reconstruction side by side), ``roundtrip.png`` (originals over reconstructions, every frame)
and prints the token grid, PSNR and SSIM.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from core.cli import CliParser, run_cli
from videoeval.reconstruction import roundtrip


def _main(argv: Sequence[str] | None) -> int:
    p = CliParser(prog="roundtrip.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True, help="directory written by save_pretrained")
    p.add_argument("--video", required=True, help="video or image file")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-frames", type=int, default=17, help="frames of the clip, 1 + k*ct (default 17)")
    p.add_argument("--size", type=int, default=128, help="square crop side, a multiple of cs (default 128)")
    p.add_argument("--start", type=int, default=0, help="first frame of the clip")
    args = p.parse_args(argv)
    rt = roundtrip(args.tokenizer, args.video, args.out, num_frames=args.num_frames, size=args.size, start=args.start)
    print(f"tokens {rt.ids_shape} from {rt.clip_shape} frames; codebook {rt.codebook_size}")
    print(f"psnr {rt.psnr:.2f} dB  ssim {rt.ssim:.4f}")
    print(f"wrote {' and '.join(map(str, rt.written))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0, or 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
