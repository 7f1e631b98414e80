"""Tokenize and detokenize one video with a trained tokenizer; write an mp4 and a PNG strip.

    python tools/roundtrip.py --tokenizer runs/tok/tokenizer --video clip.mp4 --out outputs/rt

Writes ``roundtrip.mp4`` (original | reconstruction side by side), ``roundtrip.png``
(originals over reconstructions, every frame) and prints the token grid, PSNR and SSIM.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from core.cli import run_cli
from tokenizer import VideoTokenizer
from videoeval.metrics import psnr, ssim
from core.video_io import frames_to_tensor, read_video, resize_center_crop, tensor_to_frames, video_fps, write_contact_sheet, write_video


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True, help="directory written by save_pretrained")
    parser.add_argument("--video", required=True, help="video or image file")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--start", type=int, default=0)
    args = parser.parse_args(argv)
    tok = VideoTokenizer.from_pretrained(args.tokenizer)
    tok.latent_shape(args.num_frames, args.size, args.size)  # fail early on unreachable sizes
    frames = resize_center_crop(read_video(args.video, num_frames=args.num_frames, start=args.start), args.size)
    video = frames_to_tensor(frames)[None]  # (1, 3, T, H, W)
    with torch.inference_mode():
        ids = tok.encode(video)
        recon = tok.decode(ids).clamp(-1, 1)
    rec_frames = tensor_to_frames(recon[0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fps = video_fps(args.video) if len(frames) > 1 else 1.0
    write_video(out / "roundtrip.mp4", np.concatenate([frames, rec_frames], axis=2), fps)
    write_contact_sheet(out / "roundtrip.png", [frames, rec_frames])
    print(f"tokens {tuple(ids.shape[1:])} from {tuple(video.shape[2:])} frames; codebook {tok.codebook_size}")
    print(f"psnr {float(psnr(recon, video)[0]):.2f} dB  ssim {float(ssim(recon, video)[0]):.4f}")
    print(f"wrote {out / 'roundtrip.mp4'} and {out / 'roundtrip.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
