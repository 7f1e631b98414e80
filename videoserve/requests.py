"""JSON bodies of ``POST /api/generate`` -> :class:`pipelines.generate.GenerationRequest`, refusing what is wrong.

Field names follow ``generate.py``'s options (``prompt``, ``label``, ``mode``, ``order``, ``num_frames``, ``seed``,
``cfg``, ``steps``, ``top_k``, ``top_p``, ``temperature``, ``context_temperature``, ``choice_temperature``,
``context_choice_temperature``, ``first_frame_candidates``, ``context_frames``, ``segment_frames``); ``image`` and
``video`` name an earlier upload by its id. Every problem is a :class:`ValueError` with one line, which the server
answers with 400; the checks the pipeline makes itself (an empty prompt, an order the mode lacks, a negative
temperature, a setting the mode's style does not read) keep the CLI's wording.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from core.checks import shown
from pipelines.generate import EMPTY_PROMPT, MAX_SEED, GenerationRequest

MAX_STEPS = 64  # MaskGIT steps per unit: one request must not hold the only worker for hours
# field -> (accepted types, what to call them in an error)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "prompt": ((str, list), "a string or a list of strings"),
    "label": ((int, str), "a class id or class name"),
    "mode": ((str,), "a string"),
    "order": ((str,), "a string"),
    "num_frames": ((int,), "an integer"),
    "seed": ((int,), "an integer"),
    "cfg": ((int, float), "a number"),
    "steps": ((int,), "an integer"),
    "top_k": ((int,), "an integer"),
    "top_p": ((int, float), "a number"),
    "temperature": ((int, float), "a number"),
    "context_temperature": ((int, float), "a number"),
    "choice_temperature": ((int, float), "a number"),
    "context_choice_temperature": ((int, float), "a number"),
    "first_frame_candidates": ((int,), "an integer"),
    "image": ((str,), "an upload id"),
    "video": ((str,), "an upload id"),
    "context_frames": ((int,), "an integer"),
    "segment_frames": ((int,), "an integer"),
}
FIELDS = tuple(_TYPES)


def _checked(body: dict, name: str) -> object:
    value = body.get(name)
    if value is None:
        return None
    types, what = _TYPES[name]
    if isinstance(value, bool) or not isinstance(value, types):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # Starlette's JSON reader takes NaN and Infinity
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if name == "prompt" and isinstance(value, list) and not all(isinstance(p, str) for p in value):
        raise ValueError(f"prompt must be a string or a list of strings, got {value!r}")
    if name == "prompt" and value == []:  # read as no prompt at all: the default prompt's video came back
        raise ValueError(EMPTY_PROMPT)
    return value


def parse_request(
    body: object, find_upload: Callable[[object], Path], max_frames: int, default_frames: int
) -> GenerationRequest:
    """Validates a decoded JSON body and builds the request.

    Args:
        body: the decoded JSON.
        find_upload: upload id -> file (ValueError when unknown).
        max_frames: the server's limit on frames per video, context included.
        default_frames: the model's length, which a request without ``num_frames`` gets.

    Raises:
        ValueError: with one line naming the field and what is wrong.
    """
    if not isinstance(body, dict):
        raise ValueError('the request body must be a JSON object, e.g. {"prompt": "a red circle moving left"}')
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        names = ", ".join(shown(name) for name in unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise ValueError(f"unknown field(s) [{names}]; known fields: {', '.join(FIELDS)}")
    v = {name: _checked(body, name) for name in FIELDS}
    seed = 0 if v["seed"] is None else v["seed"]
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    for name in ("num_frames", "segment_frames", "context_frames"):
        if v[name] is not None and not 1 <= v[name] <= max_frames:
            raise ValueError(f"{name} must be in [1, {max_frames}] on this server, got {v[name]}")
    if v["steps"] is not None and not 1 <= v["steps"] <= MAX_STEPS:
        raise ValueError(f"steps must be in [1, {MAX_STEPS}] on this server, got {v['steps']}")
    prompts = v["prompt"] if isinstance(v["prompt"], list) else ([] if v["prompt"] is None else [v["prompt"]])
    if v["segment_frames"] is not None:  # a story: after a video's context frames, each prompt adds segment - 1
        first = v["context_frames"] if v["video"] is not None and v["context_frames"] is not None else 1
        if first + max(len(prompts), 1) * (v["segment_frames"] - 1) > max_frames:
            raise ValueError(f"this story would be longer than this server's limit of {max_frames} frames")
    elif v["num_frames"] is None and default_frames > max_frames:
        raise ValueError(f"the model's default of {default_frames} frames is longer than this server's limit of "
                         f"{max_frames}: ask for num_frames <= {max_frames}")  # fmt: skip
    return GenerationRequest(
        prompts=tuple(prompts),
        label=None if v["label"] is None else str(v["label"]),
        image=None if v["image"] is None else find_upload(v["image"]),
        video=None if v["video"] is None else find_upload(v["video"]),
        context_frames=v["context_frames"],
        segment_frames=v["segment_frames"],
        mode=v["mode"],
        order=v["order"],
        num_frames=v["num_frames"],
        sampling={
            "cfg_scale": v["cfg"],
            "steps": v["steps"],
            "top_k": v["top_k"],
            "top_p": v["top_p"],
            "temperature": v["temperature"],
            "context_temperature": v["context_temperature"],
            "choice_temperature": v["choice_temperature"],
            "context_choice_temperature": v["context_choice_temperature"],
            "first_frame_candidates": v["first_frame_candidates"],
        },
        seed=seed,
    )
