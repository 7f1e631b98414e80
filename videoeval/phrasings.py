"""Evaluation prompts for the shapes world that the training captions never use.

The training captions come from :func:`videodata.shapes.render.caption_for` (8 templates, 7 verbs, 3 direction
phrases each). The phrasings below were written for evaluation before the v2 generators were trained, and they
differ from every training caption: new verbs ("rolls", "scoots", "zips", "climbs"), other word orders (the
direction or the shape first, the color after the shape), trailing clauses and keyword lists. Each keeps the color
word, the shape word and exactly one direction word, and fits the text encoder's 16 tokens (14 word pieces with
[CLS] and [SEP]).

Seeds for evaluation are published in :data:`REPORT_SEEDS`; settings are chosen on :data:`SELECTION_SEEDS`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from videodata.shapes.render import attributes_of

# {color}, {shape}, and {dir} (a direction phrase of FRESH_DIRECTIONS) or {ward} ("leftward", ...).
FRESH_TEMPLATES: tuple[str, ...] = (
    "moving {dir}, a small {color} {shape}",
    "a {color} {shape} rolls {dir} and keeps going",
    "watch the {color} {shape} float {dir}",
    "there is a {color} {shape} and it moves {dir}",
    "a single {color} {shape} slowly shifting {dir}",
    "{ward} motion of a {color} {shape}",
    "a still camera sees a {color} {shape} go {dir}",
    "a {shape} in {color}, steadily heading {dir}",
    "{color} {shape} zips {dir}, nothing else in view",
    "{color}, {shape}, {dir}",
    "the {shape} is {color} and it flies {dir}",
    "one {color} {shape} wandering {dir} over a dark backdrop",
    "see the {color} {shape} as it crawls {dir}",
    "{dir}: one {color} {shape} in motion",
    "a {color} {shape} keeps on sailing {dir}",
    "a {color} {shape} that climbs {dir} over time",
)

FRESH_DIRECTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "left": ("left", "toward the left", "leftwards"),
        "right": ("right", "toward the right", "rightwards"),
        "up": ("up", "upward", "upwards"),
        "down": ("down", "downward", "downwards"),
    }
)
_WARD = MappingProxyType({"left": "leftward", "right": "rightward", "up": "upward", "down": "downward"})

SELECTION_SEEDS = (1, 2)  # sampling settings are chosen on these
REPORT_SEEDS = (20_261_202,)  # and reported on these
MAX_SEED = 2**62  # seeds plus the evaluations' offsets (< 10^6) must fit torch.Generator's 64 bits


def fresh_caption(label: int, index: int, rng: np.random.Generator) -> str:
    """The ``index``-th fresh phrasing (cycling through :data:`FRESH_TEMPLATES`) for class ``label``.

    The direction phrase is drawn from ``rng``.

    Raises:
        ValueError: ``label`` is not a class index.
    """
    color, shape, motion = attributes_of(label)
    template = FRESH_TEMPLATES[index % len(FRESH_TEMPLATES)]
    phrases = FRESH_DIRECTIONS[motion]
    direction = phrases[int(rng.integers(len(phrases)))]
    return template.format(color=color, shape=shape, dir=direction, ward=_WARD[motion])


def fresh_captions(labels: Sequence[int], rng: np.random.Generator) -> list[str]:
    """A fresh phrasing of each class in ``labels``, in turn: each direction cycles through the templates (the index
    counts the earlier labels of the same direction), and the direction phrases come from ``rng``."""
    seen: Counter[str] = Counter()
    captions = []
    for label in labels:
        motion = attributes_of(label)[2]
        captions.append(fresh_caption(label, seen[motion], rng))
        seen[motion] += 1
    return captions
