"""What a pipeline folder's YAML files say, without any weights: the checks a request needs.

:class:`PipelineSpec` holds the pipeline's, the tokenizer's and each generator's config. A loaded
:class:`pipelines.VideoPipeline` checks every call through its spec, and ``generate.py`` reads the spec alone first
(:meth:`PipelineSpec.from_dir`, a few small YAML files), so that a bad frame count, mode, order, label or setting
fails in a second instead of after the models and the text encoder have loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from core.checks import is_int
from core.weights import load_config
from generator import GeneratorConfig
from generator.sampling import SamplingConfig
from pipelines.config import PipelineConfig
from pipelines.folder import load_pipeline_config
from tokenizer import TokenizerConfig

# The longest video one call makes (about 8.5 min at 8 fps): a typo of 10^9 frames sampled window after window, for
# days, copying the whole growing video each time.
MAX_NUM_FRAMES = 4097


@dataclass(frozen=True)
class PipelineSpec:
    """A pipeline's configs: ``pipeline.yaml``, the tokenizer's and each generator's (mode -> config)."""

    config: PipelineConfig
    tokenizer: TokenizerConfig
    generators: Mapping[str, GeneratorConfig]

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> PipelineSpec:
        """Reads the configs of a pipeline directory (no weights).

        Raises:
            ValueError: a folder that is not a pipeline, or a config that does not validate.
        """
        directory = Path(directory)
        config = load_pipeline_config(directory)
        tokenizer = load_config(TokenizerConfig, directory / "tokenizer")
        generators = {mode: load_config(GeneratorConfig, directory / sub) for mode, sub in config.generators.items()}
        return cls(config, tokenizer, generators)

    def resolve_mode_order(self, mode: str | None, order: str | None) -> tuple[str, str]:
        """Fills defaults (for None only: an empty string is refused, not read as "the default") and refuses
        combinations the generators do not support."""
        mode = self.config.default_mode if mode is None else mode
        if mode not in self.generators:
            raise ValueError(f"mode {mode!r} is not available in this model; it has {sorted(self.generators)}")
        orders = self.generators[mode].orders
        order = (self.config.default_orders.get(mode) or orders[0]) if order is None else order
        if order not in orders:
            raise ValueError(f"the {mode} generator supports orders {list(orders)}, not {order!r}")
        return mode, order

    def latent_frames(self, num_frames: int, what: str = "num_frames") -> int:
        """Latent frames of a clip of ``num_frames`` frames; ``what`` names the argument in errors.

        Raises:
            ValueError: not 1 + k*ct frames, or more than :data:`MAX_NUM_FRAMES`.
        """
        ct = self.tokenizer.temporal_compression
        if not is_int(num_frames) or num_frames < 1 or (num_frames - 1) % ct:
            raise ValueError(
                f"{what}={num_frames} is not reachable: the tokenizer needs 1 + k*{ct} frames "
                f"(e.g. 1, {1 + ct}, {1 + 4 * ct})"
            )
        if num_frames > MAX_NUM_FRAMES:
            raise ValueError(f"{what}={num_frames} is more than the {MAX_NUM_FRAMES} frames one call makes")
        return 1 + (num_frames - 1) // ct

    def check_room(self, num_frames: int, num_context: int) -> None:
        """Refuses ``num_context`` given frames that leave nothing to generate in ``num_frames`` (the total)."""
        if num_context >= num_frames:
            raise ValueError(
                f"{num_context} context frames leave nothing to generate: num_frames ({num_frames}) "
                "is the total length and must be larger"
            )

    def check_segment_frames(self, segment_frames: int) -> None:
        """A story's segment length: 1 + k*ct frames with k >= 1 (each later segment adds ``segment_frames - 1``)."""
        self.latent_frames(segment_frames, "segment_frames")
        if segment_frames < 1 + self.tokenizer.temporal_compression:
            raise ValueError(f"segment_frames={segment_frames} adds no frames after the first segment")

    def check_story(self, num_prompts: int, segment_frames: int, given_frames: int) -> None:
        """A story of ``num_prompts`` segments of ``segment_frames`` (:meth:`check_segment_frames`) after
        ``given_frames`` context frames (0: none): at least one prompt, and at most :data:`MAX_NUM_FRAMES` in all."""
        if num_prompts < 1:
            raise ValueError("a story needs a list of at least one prompt")
        self.check_segment_frames(segment_frames)
        total = 1 + num_prompts * (segment_frames - 1) + max(given_frames - 1, 0)
        if total > MAX_NUM_FRAMES:
            raise ValueError(f"the story has {total} frames, more than the {MAX_NUM_FRAMES} one call makes")

    def class_ids(self, gen: GeneratorConfig, labels: int | list[int]) -> list[int]:
        """``labels`` as a list of class ids valid for the generator of config ``gen`` (one of :attr:`generators`).

        Raises:
            ValueError: an unconditional generator, or an id outside the model's classes.
        """
        if gen.cond == "none":
            raise ValueError(f"the {gen.style} generator is unconditional: it takes neither prompts nor labels")
        labels = [labels] if is_int(labels) else list(labels)
        n = len(self.config.class_names) or gen.num_classes
        for lab in labels:
            if not is_int(lab) or not 0 <= lab < n:
                raise ValueError(f"unknown class {lab!r}: valid class ids are 0..{n - 1}")
        return [int(lab) for lab in labels]

    def sampling_for(self, mode: str, order: str, overrides: Mapping[str, object] | None = None) -> SamplingConfig:
        """The model's sampling settings for ``mode`` in ``order`` with the given fields replaced (None values are
        ignored).

        A ``temperature`` given without a ``context_temperature`` applies to every call, those with an image or
        a video too: the model's ``context_temperature`` is dropped. The same holds for ``choice_temperature``
        and ``context_choice_temperature``.

        Raises:
            ValueError: an override that names no field of :class:`SamplingConfig`, or a value it refuses.
        """
        sampling = self.config.sampling_for(mode, order)
        changes = {k: v for k, v in (overrides or {}).items() if v is not None}
        unknown = sorted(set(changes) - {f.name for f in fields(sampling)})
        if unknown:
            raise ValueError(f"unknown sampling setting(s) {unknown}")
        for name in ("temperature", "choice_temperature"):
            if name in changes:
                changes.setdefault(f"context_{name}", None)
        return replace(sampling, **changes)
