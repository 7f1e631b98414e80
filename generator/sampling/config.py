"""How tokens are drawn: the one settings object every sampler and the pipeline take."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Real

from core.checks import is_int
from generator.schedules import SCHEDULES

MAX_FIRST_FRAME_CANDIDATES = 16  # each is sampled as a row of its own: the batch grows by this factor
MAX_CFG_SCALE = 100.0  # guidance weights in use are 1-10; far larger ones overflow the logits
# The settings that only MaskGIT-style decoding reads: a GPT-style generator draws each token once, in order.
MASKGIT_ONLY = ("steps", "mask_schedule", "choice_temperature", "context_choice_temperature", "corrector_rounds",
                "corrector_fraction")  # fmt: skip
# The settings that only GPT-style decoding reads: MaskGIT has no exact likelihood of a frame to rank candidates by.
AR_ONLY = ("first_frame_candidates",)


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How tokens are drawn from logits.

    Attributes:
        temperature: softmax temperature; 0 means greedy (argmax).
        context_temperature: the temperature for grids that continue given context tokens (an image, a
            video, or the frames of an earlier window); None: ``temperature``. Continuing a motion needs
            less randomness than starting one from a prompt.
        top_k: keep the k most likely tokens (0 = off).
        top_p: keep the smallest set with cumulative probability >= p (1.0 = off).
        cfg_scale: classifier-free guidance scale; 1.0 = plain conditional sampling.
        cfg_schedule: "constant", or "linear" (scale ramps from 1 to cfg_scale over generation).
        steps: MaskGIT decoding steps per unit.
        mask_schedule: MaskGIT schedule ("cosine", "linear", "square").
        choice_temperature: MaskGIT Gumbel noise on confidences, annealed to 0 over the steps.
        context_choice_temperature: MaskGIT's choice temperature for grids that continue given context tokens;
            None: ``choice_temperature``. After given frames the confident tokens are the ones the context
            settles, so less noise lets them be committed first.
        corrector_rounds: MaskGIT predictor-corrector rounds after each unit is filled (0 = off). A round
            scores every token the unit generated with the model, a quarter of them masked at a time, re-masks
            the ``corrector_fraction`` it finds least likely and draws them again given all the others.
        corrector_fraction: share of a unit's generated tokens each corrector round draws again.
        first_frame_candidates: GPT-style only: draw this many candidates of the first latent frame per video and
            keep the one its condition explains best, the largest ``log p(x | c) - log p(x | null)`` under the
            model itself (the implicit classifier of guidance); 1 = off. Plain likelihood prefers an empty frame
            (background tokens are the easiest to predict); the contrast prefers the frame the prompt is about.
            Used when the first frame is generated (no given frames) under a condition that is not null.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 1.0
    cfg_schedule: str = "constant"
    steps: int = 8
    mask_schedule: str = "cosine"
    choice_temperature: float = 4.5
    context_temperature: float | None = None
    context_choice_temperature: float | None = None
    corrector_rounds: int = 0
    corrector_fraction: float = 0.05
    first_frame_candidates: int = 1

    def __post_init__(self) -> None:
        # a float reached torch.topk / range() as a TypeError
        for name in ("top_k", "steps", "corrector_rounds", "first_frame_candidates"):
            if not is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in ("cfg_schedule", "mask_schedule"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        numbers = {"temperature": self.temperature, "top_p": self.top_p, "cfg_scale": self.cfg_scale,
                   "choice_temperature": self.choice_temperature, "context_temperature": self.context_temperature,
                   "context_choice_temperature": self.context_choice_temperature,
                   "corrector_fraction": self.corrector_fraction}  # fmt: skip
        for name, value in numbers.items():  # NaN and inf pass `< 0`: NaN probabilities, or every token equal
            if value is not None and (not isinstance(value, Real) or isinstance(value, bool)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            try:  # an int of 400 digits (a JSON request body) raised OverflowError here: a 500 from the server
                finite = value is None or math.isfinite(value)
            except OverflowError:
                raise ValueError(f"{name} must be a finite number, got an integer too large for a float") from None
            if not finite:
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.context_temperature is not None and self.context_temperature < 0:
            raise ValueError(f"context_temperature must be >= 0, got {self.context_temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.cfg_scale <= MAX_CFG_SCALE:  # 1e39 overflowed the guided logits to inf: NaN probabilities
            raise ValueError(f"cfg_scale must be in [0, {MAX_CFG_SCALE:g}], got {self.cfg_scale}")
        if self.cfg_schedule not in ("constant", "linear"):
            raise ValueError(f"cfg_schedule must be 'constant' or 'linear', got {self.cfg_schedule!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.mask_schedule not in SCHEDULES:
            raise ValueError(f"mask_schedule must be one of {sorted(SCHEDULES)}, got {self.mask_schedule!r}")
        if self.corrector_rounds < 0:
            raise ValueError(f"corrector_rounds must be >= 0, got {self.corrector_rounds}")
        if not 0.0 < self.corrector_fraction <= 1.0:
            raise ValueError(f"corrector_fraction must be in (0, 1], got {self.corrector_fraction}")
        if not 1 <= self.first_frame_candidates <= MAX_FIRST_FRAME_CANDIDATES:
            raise ValueError(f"first_frame_candidates must be in [1, {MAX_FIRST_FRAME_CANDIDATES}], got "
                             f"{self.first_frame_candidates}")  # fmt: skip
        if self.first_frame_candidates > 1 and self.cfg_schedule != "constant":  # the first frame is sampled alone
            raise ValueError(
                "first_frame_candidates needs the constant guidance schedule: the candidates are drawn as a grid of "
                "their own, where a linear one would ramp over the first frame alone"
            )
        if self.choice_temperature < 0:
            raise ValueError(f"choice_temperature must be >= 0, got {self.choice_temperature}")
        if self.context_choice_temperature is not None and self.context_choice_temperature < 0:
            raise ValueError(f"context_choice_temperature must be >= 0, got {self.context_choice_temperature}")

    def for_context(self) -> SamplingConfig:
        """The settings for a grid that continues context tokens: ``context_temperature`` as the temperature and
        ``context_choice_temperature`` as the choice temperature, where set."""
        changes: dict[str, float | None] = {"context_temperature": None, "context_choice_temperature": None}
        if self.context_temperature is not None:
            changes["temperature"] = self.context_temperature
        if self.context_choice_temperature is not None:
            changes["choice_temperature"] = self.context_choice_temperature
        return replace(self, **changes)

    def guidance(self, progress: float) -> float:
        """The CFG scale at ``progress`` in [0, 1]."""
        if self.cfg_schedule == "linear":
            return 1.0 + (self.cfg_scale - 1.0) * progress
        return self.cfg_scale
