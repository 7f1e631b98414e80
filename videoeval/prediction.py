"""Frame prediction for FVD: a model's own continuations of real clips, written where ``eval_video fvd`` reads them.

A prediction protocol (``context_frames > 0``: ``k600``; ``quick`` for smoke runs, with ``--context-frames``)
gives the model the first ``context_frames`` frames of each real clip (read with the protocol's stride) and
asks for the rest; FVD then compares the predicted clips, context included, with the true ones. Each clip is
written as the protocol stores generated videos: a folder of PNG frames (``k600``, lossless) or an mp4
(``quick``):

    python tools/eval_video.py predict --model DIR --real REAL --protocol k600 --out PRED
    python tools/eval_video.py fvd --real REAL --fake PRED --protocol k600 --i3d i3d_torchscript.pt

For Kinetics-600 (MAGVIT's and Phenaki's setting) that is 5 context frames + 11 predicted at 64x64,
over the test split, with the widely used ``i3d_torchscript.pt`` supplied by the user.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from core.video_write import write_frame_folder, write_video
from pipelines import VideoPipeline
from videoeval.fvd import FVDProtocol, resolve_protocol
from videoeval.sources import videos_by_key


def predict_continuations(
    model: str | os.PathLike,
    real: str | os.PathLike,
    out: str | os.PathLike,
    protocol: FVDProtocol | str,
    *,
    context_frames: int | None = None,
    num_videos: int | None = None,
    mode: str | None = None,
    order: str | None = None,
    prompt: str | None = None,
    batch: int = 8,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Writes ``out/<relative path>`` (a PNG frame folder or ``.mp4``, as the protocol stores generated videos) for
    the first ``num_videos`` real clips: context + prediction.

    Args:
        model: pipeline directory.
        real: folder of real videos (:func:`videoeval.sources.find_videos`).
        out: folder for the predicted clips (same relative paths).
        protocol: a prediction preset (or its name); fixes frames, stride and context.
        context_frames: override the protocol's context (it must be 1 + k*ct for the tokenizer).
        num_videos: clips to predict (default: the protocol's count, or all when fewer exist).
        mode / order: generator mode and order (defaults from the model).
        prompt: a prompt for every clip; None predicts unconditionally from the frames alone.
        batch: clips per pipeline call.
        seed: sampling seed of the first batch (later batches add their offset).
        device: where the pipeline runs.

    Returns:
        A JSON-ready summary: protocol name, counts, frames, and the folder written.

    Raises:
        ValueError: a protocol without context, a context the tokenizer cannot encode alone, too few
            or unreadable real clips.
    """
    protocol = resolve_protocol(protocol)
    if context_frames is not None and context_frames < 1:
        raise ValueError(f"--context-frames must be >= 1, got {context_frames}")
    if num_videos is not None and num_videos < 1:  # 0 meant the protocol's count (50,000 for k600)
        raise ValueError(f"--num-videos must be >= 1, got {num_videos}")
    num_context = context_frames if context_frames is not None else protocol.context_frames
    if num_context < 1:
        raise ValueError(f"protocol {protocol.name!r} has no context frames: give --context-frames")
    out_abs, real_abs = Path(out).resolve(), Path(real).resolve()
    if out_abs == real_abs or real_abs in out_abs.parents or out_abs in real_abs.parents:
        raise ValueError(f"--out {str(out)!r} and --real {str(real)!r} overlap: predictions would replace or mix with "
                         "the real clips")  # fmt: skip
    sources = list(videos_by_key(real, "--real").values())  # two with one key would write one prediction
    count = min(protocol.num_videos if num_videos is None else num_videos, len(sources))
    if count < 1:
        raise ValueError(f"no videos found under {str(real)!r}")
    if batch < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch}")
    pipe = VideoPipeline.from_pretrained(model).to(device)
    ct = pipe.tokenizer.config.temporal_compression
    total = 1 + -(-(protocol.num_frames - 1) // ct) * ct  # the first 1 + k*ct >= num_frames
    out = Path(out)
    real = Path(real)
    for start in range(0, count, batch):
        chunk = sources[start : min(start + batch, count)]  # the last batch stops at num_videos
        clips = [s.read(num_frames=num_context, stride=protocol.frame_stride) for s in chunk]  # (N, H, W, 3) each
        got = pipe(
            prompt, video=clips, context_frames=num_context, num_frames=total, num_videos=len(chunk), mode=mode,
            order=order, generator=torch.Generator(device=pipe.device).manual_seed(seed + start),
        )  # fmt: skip
        for source, frames in zip(chunk, got.frames):
            if protocol.video_format == "frames":  # lossless, as the protocol's fvd expects (mp4 raises FVD)
                write_frame_folder(out / source.key(real), frames[: protocol.num_frames])
            else:
                write_video(out / f"{source.key(real)}.mp4", frames[: protocol.num_frames], fps=got.fps)
    return {"protocol": protocol.name, "videos": count, "context_frames": num_context,
            "num_frames": protocol.num_frames, "out": str(out)}  # fmt: skip
