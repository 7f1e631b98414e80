"""What a trained generator's tokens and prompts mean: the tokenizer and text encoder it was trained with.

A generator's ids are only meaningful through the tokenizer whose token cache it trained on, and its text
conditioning only through the encoder that gave its training features. Another tokenizer with the same
vocabulary, or another encoder of the same width, loads and samples without an error and decodes noise or
ignores the prompt. The training export therefore writes ``trained_on.json`` beside the weights, and
:func:`pipelines.assemble.assemble_pipeline` checks the parts it is given against it.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from core.checks import is_int
from core.files import atomic_write_json, read_json

TRAINED_ON_NAME = "trained_on.json"


@dataclass(frozen=True)
class TrainedOn:
    """Fingerprints of the parts a generator was trained with.

    Attributes:
        tokenizer: the token cache's tokenizer fingerprint (:func:`core.weights.folder_fingerprint` of its folder).
        tokenizer_ids: the ids that tokenizer gives a fixed probe clip (:func:`tokenizer.probe.probe_ids`), which
            tell its token space whatever precision it is stored in; None when the training had no tokenizer folder.
        text_encoder: :meth:`generator.text_encoders.TextEncoder.fingerprint` of the training's text encoder, or
            None for a class-conditional or unconditional model.
        num_frames: frames of the training clips (the cache's ``--num-frames``).
        fps: the frame rate the cache cut its clips at (``--fps``), or None when it took every ``stride``-th frame of
            each video at the video's own rate (then the clips have no one rate).
        stride: that step, when ``fps`` is None.
    """

    tokenizer: str
    tokenizer_ids: tuple[int, ...] | None = None
    text_encoder: str | None = None
    num_frames: int | None = None
    fps: float | None = None
    stride: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tokenizer, str) or not self.tokenizer:
            raise ValueError(f"tokenizer must be a fingerprint string, got {self.tokenizer!r}")
        if self.tokenizer_ids is not None:
            if not isinstance(self.tokenizer_ids, (list, tuple)) or not all(
                is_int(i) and i >= 0 for i in self.tokenizer_ids
            ):
                raise ValueError("tokenizer_ids must be a list of token ids or null")
            object.__setattr__(self, "tokenizer_ids", tuple(int(i) for i in self.tokenizer_ids))
        if self.text_encoder is not None and (not isinstance(self.text_encoder, str) or not self.text_encoder):
            raise ValueError(f"text_encoder must be a fingerprint string or null, got {self.text_encoder!r}")
        for name in ("num_frames", "stride"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 or null, got {value!r}")
        if self.fps is not None and (isinstance(self.fps, bool) or not isinstance(self.fps, (int, float))
                                     or not math.isfinite(self.fps) or self.fps <= 0):  # fmt: skip
            raise ValueError(f"fps must be a positive number or null, got {self.fps!r}")


def write_trained_on(directory: str | os.PathLike, trained_on: TrainedOn) -> None:
    """Writes ``trained_on.json`` into ``directory`` (atomically)."""
    atomic_write_json(Path(directory) / TRAINED_ON_NAME, asdict(trained_on))


def read_trained_on(directory: str | os.PathLike) -> TrainedOn | None:
    """The generator folder's :class:`TrainedOn`, or None when it has no ``trained_on.json`` (a folder saved by
    :meth:`Generator.save_pretrained`, or exported before the file existed).

    Raises:
        ValueError: the file is not a JSON object with exactly the fields of :class:`TrainedOn`.
    """
    path = Path(directory) / TRAINED_ON_NAME
    if not path.is_file():
        return None
    data = read_json(path, "trained_on record")
    names = {f.name for f in fields(TrainedOn)}
    if not isinstance(data, dict) or "tokenizer" not in data or not set(data) <= names:
        others = sorted(names - {"tokenizer"})
        raise ValueError(f"{str(path)!r} must be a JSON object with 'tokenizer' and optionally {others}")
    try:
        return TrainedOn(**data)
    except ValueError as err:
        raise ValueError(f"{str(path)!r}: {err}") from None
