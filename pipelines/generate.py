"""Prompt or class label in, video files out: the work behind ``generate.py`` (``tools/generate.py``).

Every check that can fail on the user's input (an empty prompt, an output folder that cannot be
written) runs before the model is loaded, so a bad command fails in a second, not after sampling.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from generator.sampling import SamplingConfig
from pipelines.context import load_frames
from pipelines.io import check_writable, output_paths, save_output
from pipelines.video import DEFAULT_MODEL_DIR, VideoOutput, VideoPipeline

DEFAULT_PROMPT = "a red circle moving left"


@dataclass
class GeneratedFiles:
    """What :func:`generate_to_files` made.

    Attributes:
        output: the pipeline's output; ``frames`` is (B, T, H, W, C) uint8.
        mode: the generator mode used ("ar" or "maskgit").
        order: the prediction units used ("token", "cube", "frame" or "clip").
        label: the class id, when a label was given instead of a prompt.
        written: every file written (videos, contact sheets, gifs), in order.
    """

    output: VideoOutput
    mode: str
    order: str
    label: int | None
    written: list[Path]


def parse_label(text: str, class_names: Sequence[str]) -> int:
    """A class id given as a number or as its exact class name (any case).

    Raises:
        ValueError: a name that is not one of ``class_names``. Numbers are checked by the pipeline.
    """
    try:
        return int(text)
    except ValueError:
        names = [n.lower() for n in class_names]
        if text.strip().lower() in names:
            return names.index(text.strip().lower())
        how = f"give a class id 0..{len(names) - 1} or an exact class name"
        raise ValueError(f"unknown class {text!r}: {how}") from None


def sampling_for(pipe: VideoPipeline, mode: str, overrides: Mapping[str, object] | None = None) -> SamplingConfig:
    """The model's sampling settings for ``mode`` with the given fields replaced (None values are ignored).

    Raises:
        ValueError: an override that names no field of :class:`SamplingConfig`.
    """
    sampling = pipe.config.sampling.get(mode) or SamplingConfig()
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(changes) - {f.name for f in fields(sampling)})
    if unknown:
        raise ValueError(f"unknown sampling setting(s) {unknown}")
    return replace(sampling, **changes)


def generate_to_files(
    prompt: str | Sequence[str] | None = None,
    label: str | None = None,
    *,
    image: str | os.PathLike | None = None,
    video: str | os.PathLike | None = None,
    context_frames: int | None = None,
    segment_frames: int | None = None,
    out: str | os.PathLike | None = None,
    model: str | os.PathLike = DEFAULT_MODEL_DIR,
    num_videos: int = 1,
    mode: str | None = None,
    order: str | None = None,
    num_frames: int | None = None,
    sampling: Mapping[str, object] | None = None,
    seed: int = 0,
    gif: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> GeneratedFiles:
    """Generates ``num_videos`` videos and writes each as an mp4 (or gif) with a PNG contact sheet.

    Args:
        prompt: text prompt, or several for a story (one per segment, with ``segment_frames``); with
            neither ``prompt`` nor ``label``, :data:`DEFAULT_PROMPT`, or no condition at all when an
            image or video is given.
        label: class id, or its exact class name (instead of a prompt).
        image: an image file: the first frame of the video (image-to-video).
        video: a video file whose last ``context_frames`` frames the video continues.
        context_frames: frames taken from ``video`` (1 + k*ct).
        segment_frames: tell a story: the first segment's frames (1 + k*ct); each later prompt adds
            ``segment_frames - 1`` frames (see :meth:`VideoPipeline.story`).
        out: an .mp4/.gif file for one video, a folder for several; default ``outputs/video.mp4``
            for one video and ``outputs/`` for several.
        model: pipeline directory (default: the shipped shapes model).
        num_videos: videos to make, all from one seeded generator.
        mode: generator mode; None takes the model's default.
        order: prediction units; None takes the mode's default.
        num_frames: total frames per video, context included (1 + k*ct); None takes the model's.
        sampling: :class:`SamplingConfig` fields to change, e.g. ``{"cfg_scale": 4.0, "steps": 12}``.
        seed: seed of the ``torch.Generator`` on ``device``.
        gif: also write a .gif next to each mp4.
        device: where the pipeline runs.
        progress: show progress bars while sampling.

    Returns:
        The output, the mode and order used, the label, and every file written.

    Raises:
        ValueError: an empty prompt, an output folder that cannot be written, a model directory
            that does not load, or settings the model cannot do (all with one-line messages).

    Examples:
        >>> made = generate_to_files("a red circle moving left", out="outputs/v.mp4")  # doctest: +SKIP
        >>> made.output.frames.shape  # doctest: +SKIP
        (1, 17, 64, 64, 3)
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    if not prompts and label is None and image is None and video is None:
        prompts = [DEFAULT_PROMPT]  # frames alone (an image or a video) generate unconditionally
    if any(not p.strip() for p in prompts):
        raise ValueError('the prompt is empty; describe the video, e.g. --prompt "a red circle moving left"')
    if num_videos < 1:
        raise ValueError(f"--num-videos must be >= 1, got {num_videos}")
    if segment_frames is None and len(prompts) > 1:
        raise ValueError("several prompts tell a story: give --segment-frames (e.g. 17)")
    if segment_frames is not None and (label is not None or num_frames is not None):
        raise ValueError("--segment-frames tells a story from prompts: it takes no --label or --num-frames")
    paths = output_paths(out or ("outputs/video.mp4" if num_videos == 1 else "outputs"), num_videos)
    check_writable(paths)
    # Read the visual context before the model loads: an unreadable file fails in a second.
    visual = {
        "image": load_frames(image, "image") if image is not None else None,
        "video": load_frames(video, "video") if video is not None else None,
        "context_frames": context_frames,
    }
    device = torch.device(device)
    pipe = VideoPipeline.from_pretrained(model).to(device)
    class_id = parse_label(label, pipe.config.class_names) if label is not None else None
    mode, order = pipe.resolve_mode_order(mode, order)
    settings = sampling_for(pipe, mode, sampling)
    g = torch.Generator(device=device).manual_seed(seed)
    common = dict(mode=mode, order=order, num_videos=num_videos, sampling=settings, generator=g, progress=progress)
    if segment_frames is not None:
        output = pipe.story(prompts, segment_frames=segment_frames, **visual, **common)
    else:
        output = pipe(prompts[0] if prompts else None, class_id, num_frames=num_frames, **visual, **common)
    written = save_output(output, paths, gif=gif)
    return GeneratedFiles(output=output, mode=mode, order=order, label=class_id, written=written)
