"""Prompts or class labels -> the generator's :class:`~generator.Condition`, one row per video."""

from __future__ import annotations

import torch

from generator import Condition, GeneratorConfig
from generator.text_encoders import TextEncoder
from pipelines.batching import repeat_rows
from pipelines.spec import PipelineSpec


def make_condition(
    spec: PipelineSpec,
    gen: GeneratorConfig,
    text_encoder: TextEncoder | None,
    prompt: str | list[str] | None,
    labels: int | list[int] | None,
    batch: int,
    device: torch.device,
) -> Condition:
    """Builds ``gen``'s condition from prompts or labels, repeated to ``batch`` rows.

    With neither, every row gets the null condition that classifier-free guidance trained
    (condition dropout): unconditional generation, as when only frames are given. Labels of a
    text-conditional generator become the pipeline's class names as prompts.

    Raises:
        ValueError: both prompt and labels; either for an unconditional generator; prompts for a
            class-conditional one; labels with no class names to turn into prompts; a prompt that is
            not a string or list of strings; a label out of range (:meth:`PipelineSpec.class_ids`).
    """
    if prompt is not None and labels is not None:
        raise ValueError("give a prompt or labels, not both")
    if prompt is None and labels is None:
        return Condition(drop=torch.ones(batch, dtype=torch.bool, device=device))
    if gen.cond == "none":
        raise ValueError(f"the {gen.style} generator is unconditional: it takes neither prompts nor labels")
    if labels is not None:
        labels = repeat_rows(spec.class_ids(gen, labels), batch)
        if gen.cond == "class":
            return Condition(labels=torch.tensor(labels, device=device))
        if not spec.config.class_names:
            raise ValueError("this text-conditional model has no class_names to turn labels into prompts")
        prompt = [spec.config.class_names[lab] for lab in labels]
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a list of strings, got {prompt!r}")
    if gen.cond != "text":
        raise ValueError(f"the {gen.style} generator is {gen.cond}-conditional and takes labels, not prompts")
    feats = text_encoder.encode(repeat_rows(list(prompts), batch))
    return Condition(text=feats.features.to(device), text_mask=feats.mask.to(device))
