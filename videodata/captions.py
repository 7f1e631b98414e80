"""Caption augmentation for text-conditional training: word dropout, word substitution and rotation.

A generator trained on a few caption templates learns to read its attributes from where the templates put them,
and misreads prompts phrased otherwise (new verbs, the direction first, trailing clauses). Each training caption
is therefore perturbed before it is encoded: every word outside ``keep`` (the words that carry the attributes)
may be dropped or replaced by a filler word, and the whole caption may be rotated at a random word boundary
("a red square moving left" -> "moving left a red square"). No augmentation makes a caption longer in words,
and every filler is a single word piece, so a caption that fit the text encoder still fits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")
_POSSESSIVE = re.compile(r"['\u2019]s\b")  # "square's", "square\u2019s"
_JOINERS = re.compile(r"[\W_]+")  # hyphens, slashes, dashes, commas: "red-circle", "red\u2014square", "red,square"

# Generic single-piece words with no attribute meaning. None of them appears in the evaluation phrasings
# (videoeval/phrasings.py), and none contains a color, shape or direction word (tests/unit/test_captions.py).
DEFAULT_FILLERS: tuple[str, ...] = (
    "quick", "fast", "calm", "plain", "simple", "clean", "clear", "nice", "large", "tiny", "big", "little",
    "bold", "vivid", "neat", "soft", "sharp", "smooth", "quiet", "gentle", "empty", "runs", "walks", "jumps",
    "passes", "crosses", "appears", "seems", "shows", "object", "thing",
    "item", "figure", "animation", "picture", "scene", "sequence", "film", "movie", "quickly", "gently",
    "smoothly", "calmly", "simply", "clearly", "really", "very", "just", "also", "then", "now", "here",
    "again", "always", "often", "this", "with", "while", "by", "at",
)  # fmt: skip
# Left out, though generic: "from" (it turned "moving to the left" into "from the left", the other direction),
# "sits" and "stays" (no motion at all), "turns" and "spins" (another motion than the caption's).


@dataclass(frozen=True, kw_only=True)
class CaptionAugmentConfig:
    """How training captions are perturbed (all probabilities 0: off, the default).

    Attributes:
        drop: probability that each word outside ``keep`` is dropped.
        substitute: probability that each word outside ``keep`` (and not dropped) is replaced by a filler.
        rotate: probability that the caption is rotated at a uniformly drawn word boundary.
        keep: lowercase words never dropped or replaced (a domain's attribute words), compared without
            surrounding punctuation.
        fillers: the single-piece words substitutions draw from.
    """

    drop: float = 0.0
    substitute: float = 0.0
    rotate: float = 0.0
    keep: tuple[str, ...] = ()
    fillers: tuple[str, ...] = DEFAULT_FILLERS

    def __post_init__(self) -> None:
        for name in ("drop", "substitute", "rotate"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"caption_augment.{name} must lie in [0, 1], got {p}")
        if self.substitute > 0 and not self.fillers:
            raise ValueError("caption_augment.substitute needs fillers")
        if any(not w or w != w.strip().lower() or " " in w for w in self.keep + self.fillers):
            raise ValueError("caption_augment.keep and fillers must be single lowercase words")

    @property
    def enabled(self) -> bool:
        return self.drop > 0 or self.substitute > 0 or self.rotate > 0


def _is_kept(word: str, keep: set[str]) -> bool:
    bare = _EDGE_PUNCTUATION.sub("", word).lower()  # '"red"' -> 'red', '(moving' -> 'moving', 'left…' -> 'left'
    bare = _POSSESSIVE.sub("", bare)
    return bare in keep or any(part in keep for part in _JOINERS.split(bare))  # 'red-circle'


def augment_caption(caption: str, cfg: CaptionAugmentConfig, generator: torch.Generator) -> str:
    """``caption`` perturbed as ``cfg`` says, with every draw from ``generator``; at least one word survives.

    Words are whitespace-separated; a word is kept when its lowercase form stripped of punctuation (any
    non-word character at either end: quotes, brackets, an ellipsis) and of a possessive "'s", or one of its parts
    joined by other non-word characters (a hyphen, slash, dash or comma), is in ``cfg.keep``.
    """
    words = caption.split()
    if not cfg.enabled or not words:
        return caption
    keep = set(cfg.keep)
    out = []
    for word in words:
        u_drop, u_sub, u_pick = torch.rand(3, generator=generator).tolist()
        if _is_kept(word, keep):
            out.append(word)
        elif u_drop < cfg.drop:
            continue
        elif u_sub < cfg.substitute:
            out.append(cfg.fillers[min(int(u_pick * len(cfg.fillers)), len(cfg.fillers) - 1)])
        else:
            out.append(word)
    if not out:  # everything was dropped: keep the first word
        out = words[:1]
    if len(out) > 1 and float(torch.rand((), generator=generator)) < cfg.rotate:
        k = int(torch.randint(1, len(out), (), generator=generator))
        out = out[k:] + out[:k]
    return " ".join(out)
