"""Prompt or class label in, video files out: the work behind ``generate.py`` (``tools/generate.py``).

The checks that can fail on the user's input run before the model is loaded, so a bad command fails in a second,
not after minutes of loading or sampling: the prompt, seed and video count, the output paths, that an image or video
file opens, and, read from the folder's YAML files alone (:class:`pipelines.spec.PipelineSpec`), the mode and order,
the label, the sampling settings, the frame counts and the number of context frames (:func:`check_request`). What
needs the loaded model or the decoded frames (a prompt the text encoder cannot read, a video shorter than its
context) is checked when the pipeline runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.checks import check_text, is_int, shown
from core.video_write import MAX_GIF_FPS
from generator.sampling import AR_ONLY, MASKGIT_ONLY, SamplingConfig
from pipelines.context import check_context_count, probe_frames
from pipelines.io import check_writable, output_paths, save_output
from pipelines.spec import PipelineSpec
from pipelines.video import DEFAULT_MODEL_DIR, VideoOutput, VideoPipeline

DEFAULT_PROMPT = "a red circle moving left"
MAX_NUM_VIDEOS = 256  # videos per call, sampled as one batch
EMPTY_PROMPT = f'the prompt is empty; describe the video, e.g. "{DEFAULT_PROMPT}"'  # CLI, API and server alike
MAX_SEED = 2**63 - 1  # seeds stay in a signed 64-bit range (manual_seed would take up to 2**64 - 1)


@dataclass
class GeneratedFiles:
    """What :func:`generate_to_files` made.

    Attributes:
        output: the pipeline's output; ``frames`` is (B, T, H, W, C) uint8.
        mode: the generator mode used ("ar" or "maskgit").
        order: the prediction units used ("token", "cube", "frame" or "clip").
        sampling: the sampling settings used.
        label: the class id, when a label was given instead of a prompt.
        prompts: the prompts used (:data:`DEFAULT_PROMPT` when nothing conditioned a text model's video).
        written: every file written (videos, contact sheets, gifs), in order.
    """

    output: VideoOutput
    mode: str
    order: str
    sampling: SamplingConfig
    label: int | None
    prompts: list[str]
    written: list[Path]


def parse_label(text: str, class_names: Sequence[str]) -> int:
    """A class id given as a number or as its exact class name (any case).

    Raises:
        ValueError: a name that is not one of ``class_names``. Numbers are checked by the pipeline.
    """
    if not isinstance(text, str):  # int(2.7) and int(True) made classes 2 and 1 of a float and a bool
        if not is_int(text):
            raise ValueError(f"a label is a class id (an integer) or a class name, got {text!r}")
        return int(text)
    digits = text.strip().removeprefix("-")
    if digits.isascii() and digits.isdigit():  # int() also read "1_0", "+7" and Arabic-Indic digits as class ids
        return int(text)
    names = [n.lower() for n in class_names]
    if text.strip().lower() in names:
        return names.index(text.strip().lower())
    how = f"give a class id 0..{len(names) - 1} or an exact class name"
    raise ValueError(f"unknown class {shown(text)}: {how}")


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate, independent of where it is written and which loaded model makes it.

    Attributes:
        prompts: one text prompt, several for a story (with ``segment_frames``), or none.
        label: class id (an integer), or its exact class name (instead of a prompt).
        image: an image file: the first frame of the video (image-to-video).
        video: a video file whose last ``context_frames`` frames the video continues.
        context_frames: frames taken from ``video`` (1 + k*ct).
        segment_frames: tell a story: the first segment's frames (1 + k*ct); each later prompt adds
            ``segment_frames - 1`` frames (see :meth:`VideoPipeline.story`).
        num_videos: videos to make, all from one seeded generator.
        mode: generator mode; None takes the model's default.
        order: prediction units; None takes the mode's default.
        num_frames: total frames per video, context included (1 + k*ct); None takes the model's.
        sampling: :class:`SamplingConfig` fields to change, e.g. ``{"cfg_scale": 4.0, "steps": 12}``.
        seed: seed of the ``torch.Generator`` on the pipeline's device.
    """

    prompts: tuple[str, ...] = ()
    label: int | str | None = None
    image: str | os.PathLike | None = None
    video: str | os.PathLike | None = None
    context_frames: int | None = None
    segment_frames: int | None = None
    num_videos: int = 1
    mode: str | None = None
    order: str | None = None
    num_frames: int | None = None
    sampling: Mapping[str, object] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.prompts, str):  # "red" was a story of the prompts "r", "e" and "d"
            raise ValueError("prompts is a sequence of prompts: give (prompt,) for one")
        if self.prompts and self.label is not None:  # refused only by the pipeline, after the model loaded
            raise ValueError("give a prompt or a label, not both")
        if self.label is not None and not (isinstance(self.label, str) or is_int(self.label)):
            raise ValueError(f"a label is a class id (an integer) or a class name, got {self.label!r}")
        if any(not isinstance(p, str) or not p.strip() for p in self.prompts):
            raise ValueError(EMPTY_PROMPT)
        for prompt in self.prompts:
            check_text(prompt, "the prompt")
        if isinstance(self.label, str):
            check_text(self.label, "the label")
        if not is_int(self.num_videos) or not 1 <= self.num_videos <= MAX_NUM_VIDEOS:
            # one call samples them as one batch: 10^5 spent minutes on paths and prompts before any memory error
            raise ValueError(f"--num-videos must be >= 1 and <= {MAX_NUM_VIDEOS}, got {self.num_videos!r}")
        if self.segment_frames is None and len(self.prompts) > 1:
            raise ValueError("several prompts tell a story: give --segment-frames (e.g. 17)")
        if self.segment_frames is not None and (self.label is not None or self.num_frames is not None):
            raise ValueError("--segment-frames tells a story from prompts: it takes no --label or --num-frames")
        if self.image is not None and self.video is not None:
            raise ValueError("give an image or a video to continue, not both")
        if not is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:  # np.int64 too, as every other integer field
            # torch.Generator's overflow came after the model loaded, without naming the flag
            raise ValueError(f"--seed must be an integer in [0, 2**63), got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))

    def prompts_for(self, cond: str) -> list[str]:
        """The prompts used with a generator conditioned on ``cond``: the given ones, else :data:`DEFAULT_PROMPT`
        when nothing at all conditions the video and the generator reads text (a class-conditional or
        unconditional one then samples without a condition)."""
        nothing = self.label is None and self.image is None and self.video is None
        return list(self.prompts) or ([DEFAULT_PROMPT] if nothing and cond == "text" else [])


def generate_with(
    pipe: VideoPipeline, request: GenerationRequest, paths: Sequence[Path], *, gif: bool = False, progress: bool = True
) -> GeneratedFiles:
    """Runs ``request`` on an already loaded pipeline and writes one video (and sheet) per path.

    Raises:
        ValueError: not one path per video, a path that would replace an input or a file tokvid did not write (see
            :func:`pipelines.io.check_writable`), a context file that cannot be read, or settings the model cannot do.
    """
    if len(paths) != request.num_videos:  # the videos past the last path were made and dropped
        raise ValueError(f"{request.num_videos} videos need as many paths, got {len(paths)}")
    check_writable(list(paths), (request.image, request.video), gif=gif)  # the sheet replaced an input image
    return _run(pipe, request, _visual(request), paths, gif=gif, progress=progress)


def check_request(spec: PipelineSpec, request: GenerationRequest) -> None:
    """The checks of ``request`` that need only the model's configs, with the messages the pipeline gives: mode and
    order, label, sampling settings, frame counts and context frames.

    Raises:
        ValueError: one line naming what is wrong.
    """
    mode, order = spec.resolve_mode_order(request.mode, request.order)
    if request.label is not None:
        spec.class_ids(spec.generators[mode], parse_label(request.label, spec.config.class_names))
    sampling_settings(spec, mode, order, request.sampling)
    ct = spec.tokenizer.temporal_compression
    check_context_count(request.image is not None, request.video is not None, request.context_frames, ct)
    given = request.context_frames if request.video is not None else int(request.image is not None)
    if request.segment_frames is not None:
        prompts = request.prompts_for(spec.generators[mode].cond)
        if not prompts:  # an image or video, and no prompt
            raise ValueError("--segment-frames tells a story from prompts: give at least one --prompt")
        spec.check_story(len(prompts), request.segment_frames, given)
    else:
        num_frames = spec.config.num_frames if request.num_frames is None else request.num_frames
        spec.latent_frames(num_frames)
        spec.check_room(num_frames, given)


STYLE_NAMES = {"ar": "GPT-style", "maskgit": "MaskGIT-style"}


def sampling_settings(spec: PipelineSpec, mode: str, order: str, changes: Mapping[str, object]) -> SamplingConfig:
    """The model's sampling settings for ``mode`` in ``order`` with a request's ``changes``
    (:meth:`PipelineSpec.sampling_for`).

    Raises:
        ValueError: a setting that only MaskGIT-style decoding reads, given for a GPT-style mode (taken and
            ignored, it would give videos that no setting changed), or one only GPT-style decoding reads for a
            MaskGIT-style mode, or what ``sampling_for`` refuses.
    """
    settings = spec.sampling_for(mode, order, changes)
    style = spec.generators[mode].style
    for only, reader in ((MASKGIT_ONLY, "maskgit"), (AR_ONLY, "ar")):
        ignored = [name for name in only if changes.get(name) is not None]
        if style != reader and ignored:
            them, kind = "it" if len(ignored) == 1 else "them", STYLE_NAMES[reader]
            raise ValueError(f"{', '.join(ignored)}: only {kind} decoding reads {them}, and mode {mode!r} is "
                             f"{STYLE_NAMES[style]}: leave {them} out, or choose a {kind} mode")  # fmt: skip
    return settings


def _visual(request: GenerationRequest) -> dict:
    """The pipeline's visual-context arguments: the files, checked to be readable (the pipeline reads them at its
    frame size and rate)."""
    for source, what in ((request.image, "image"), (request.video, "video")):
        if source is not None:
            probe_frames(source, what)
    return {
        "image": request.image,
        "video": request.video,
        "context_frames": request.context_frames,
    }


def _run(
    pipe: VideoPipeline, request: GenerationRequest, visual: dict, paths: Sequence[Path], *, gif: bool, progress: bool
) -> GeneratedFiles:
    class_id = parse_label(request.label, pipe.config.class_names) if request.label is not None else None
    mode, order = pipe.resolve_mode_order(request.mode, request.order)
    prompts = request.prompts_for(pipe.generators[mode].config.cond)
    settings = sampling_settings(pipe.spec, mode, order, request.sampling)
    g = torch.Generator(device=pipe.device).manual_seed(request.seed)
    common = dict(
        mode=mode, order=order, num_videos=request.num_videos, sampling=settings, generator=g, progress=progress
    )
    if request.segment_frames is not None:
        output = pipe.story(prompts, segment_frames=request.segment_frames, **visual, **common)
    else:
        output = pipe(prompts[0] if prompts else None, class_id, num_frames=request.num_frames, **visual, **common)
    written = save_output(output, paths, gif=gif)
    return GeneratedFiles(
        output=output, mode=mode, order=order, sampling=settings, label=class_id, prompts=prompts, written=written
    )


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
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> GeneratedFiles:
    """Loads the pipeline, generates ``num_videos`` videos and writes each as an mp4 (or gif) with a PNG
    contact sheet. The arguments are :class:`GenerationRequest`'s fields, plus:

    Args:
        prompt: text prompt, or several for a story (one per segment, with ``segment_frames``); with
            neither ``prompt`` nor ``label``, :data:`DEFAULT_PROMPT` for a text-conditional generator, or no
            condition at all when an image or video is given or the generator does not read text.
        out: an .mp4/.gif file for one video, a folder for several; default ``outputs/video.mp4``
            for one video and ``outputs/`` for several.
        model: pipeline directory (default: the shipped shapes model).
        gif: also write a .gif next to each mp4.
        device: where the pipeline runs.
        dtype: the models' weight and compute dtype (e.g. ``torch.bfloat16``); None keeps fp32. Token
            codes are still chosen in fp32 and videos decoded to fp32 pixels.
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
    if prompt is not None and not isinstance(prompt, str) and len(prompt) == 0:  # read as no prompt: the default's
        raise ValueError(EMPTY_PROMPT)
    request = GenerationRequest(
        prompts=(prompt,) if isinstance(prompt, str) else tuple(() if prompt is None else prompt), label=label,
        image=image, video=video,
        context_frames=context_frames, segment_frames=segment_frames, num_videos=num_videos, mode=mode, order=order,
        num_frames=num_frames, sampling=dict(sampling or {}), seed=seed,
    )  # fmt: skip
    paths = output_paths(out or ("outputs/video.mp4" if num_videos == 1 else "outputs"), num_videos)
    check_writable(paths, (image, video), gif=gif)
    spec = PipelineSpec.from_dir(model)
    check_request(spec, request)  # before the model loads: its YAML files alone
    if gif and spec.config.fps > MAX_GIF_FPS:  # found when the GIF was written, after sampling and the mp4
        raise ValueError(f"--gif: this model makes {spec.config.fps:g} fps, more than a GIF holds ({MAX_GIF_FPS})")
    visual = _visual(request)  # an unreadable file fails in a second too
    pipe = VideoPipeline.from_pretrained(model).to(torch.device(device), dtype)
    return _run(pipe, request, visual, paths, gif=gif, progress=progress)
