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

import itertools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.files import overlapping
from core.video_write import write_frame_folder, write_video
from pipelines import VideoPipeline
from videoeval.fvd import FVDProtocol, resolve_protocol
from videoeval.sources import VideoSource, videos_by_key

log = logging.getLogger(__name__)


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
    if overlapping(out, real):
        raise ValueError(f"--out {str(out)!r} and --real {str(real)!r} overlap: predictions would replace or mix with "
                         "the real clips")  # fmt: skip
    sources = list(videos_by_key(real, "--real").values())  # two with one key would write one prediction
    wanted = protocol.num_videos if num_videos is None else num_videos
    if not sources:
        raise ValueError(f"no videos found under {str(real)!r}")
    if batch < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch}")
    pipe = VideoPipeline.from_pretrained(model).to(device)
    ct = pipe.tokenizer.config.temporal_compression
    total = 1 + -(-(protocol.num_frames - 1) // ct) * ct  # the first 1 + k*ct >= num_frames
    out = Path(out)
    real = Path(real)
    count, skipped = 0, []
    readable = _readable_contexts(sources, protocol, num_context, skipped)
    while count < wanted:
        chunk = list(itertools.islice(readable, min(batch, wanted - count)))  # (source, (N, H, W, 3) context)
        if not chunk:
            break
        got = pipe(
            prompt, video=[c for _, c in chunk], context_frames=num_context, num_frames=total,
            num_videos=len(chunk), mode=mode, order=order,
            generator=torch.Generator(device=pipe.device).manual_seed(seed + count),
        )  # fmt: skip
        for (source, _), frames in zip(chunk, got.frames):
            if protocol.video_format == "frames":  # lossless, as the protocol's fvd expects (mp4 raises FVD)
                write_frame_folder(out / source.key(real), frames[: protocol.num_frames])
            else:
                write_video(out / f"{source.key(real)}.mp4", frames[: protocol.num_frames], fps=got.fps)
        count += len(chunk)
    if count == 0:
        raise ValueError(f"none of the {len(sources)} videos under {str(real)!r} holds a {protocol.num_frames}-frame "
                         f"clip at stride {protocol.frame_stride}: " + "; ".join(skipped[:3]))  # fmt: skip
    return {"protocol": protocol.name, "videos": count, "skipped": len(skipped), "context_frames": num_context,
            "num_frames": protocol.num_frames, "out": str(out)}  # fmt: skip


def _readable_contexts(
    sources: list[VideoSource], protocol: FVDProtocol, num_context: int, skipped: list[str]
) -> Iterator[tuple[VideoSource, np.ndarray]]:
    """(source, its first ``num_context`` frames) of every source that holds a whole clip of the protocol, in
    order: the clips :func:`videoeval.fvd.iter_clips` takes as the real side, so that real and predicted sets are
    the same videos. A video too short or unreadable is logged, added to ``skipped`` and left out, as there."""
    for source in sources:
        try:
            clip = source.read(num_frames=protocol.num_frames, stride=protocol.frame_stride)  # (T, H, W, 3)
        except ValueError as err:
            log.warning("skipping %s", err)
            skipped.append(str(err))
            continue
        yield source, clip[:num_context]
