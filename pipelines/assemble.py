"""Assembling a pipeline directory from a trained tokenizer and exported generators.

Every part is loaded strictly, so a mismatched vocabulary or a missing text encoder fails here,
not at generation time. The directory is built next to its destination, loaded back, and only
then renamed into place: a half-written model is never visible under the final name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from core.config import build_config, load_yaml, parse_override
from core.files import atomic_dir, atomic_write_json, check_not_over_inputs
from core.weights import folder_fingerprint
from generator import Generator
from generator.provenance import TRAINED_ON_NAME, TrainedOn, read_trained_on
from generator.text_encoders import TextEncoder, load_text_encoder
from pipelines.config import PipelineConfig
from pipelines.folder import HOLDOUT_FILE, check_replaceable
from pipelines.video import VideoPipeline
from tokenizer import VideoTokenizer
from tokenizer.probe import PROBE_AGREEMENT, agreement, probe_ids

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def weights_bytes(directory: str | os.PathLike) -> int:
    """Total size of the safetensors files under ``directory``."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*.safetensors"))


def assemble_pipeline(
    out: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike,
    generators: Mapping[str, str | os.PathLike],
    configs: Sequence[str | os.PathLike] = (),
    overrides: Sequence[str] = (),
    class_names: Sequence[str] | None = None,
    holdout: Sequence[str] | None = None,
    dtype: str = "float32",
    force: bool = False,
) -> Path:
    """Builds, checks and atomically writes a pipeline directory.

    Args:
        out: the pipeline directory to create.
        tokenizer: a tokenizer folder (``config.yaml`` + ``model.safetensors``).
        generators: mode ("ar", "maskgit") -> an exported generator folder.
        configs: pipeline YAML files (:class:`PipelineConfig` fields), merged in order.
        overrides: dotted overrides such as ``default_mode=ar``.
        class_names: one caption per class id (replaces the config's), e.g. the shapes classes.
        holdout: attribute combinations held out of training, written to ``holdout.json``.
        dtype: storage precision of the weights, a key of :data:`DTYPES`.
        force: replace an existing ``out``: a pipeline folder (one with ``pipeline.yaml``) or an empty folder; a
            file or any other folder is refused, as ``--out .`` or ``--out models`` would have been wiped whole.

    Returns:
        ``out``, which now loads with :meth:`VideoPipeline.from_pretrained`.

    Raises:
        ValueError: ``out`` exists without ``force`` (or, with it, is a folder of other files), no generator, an
            unknown dtype, or parts that do not fit together (vocabulary, orders, text encoder; a tokenizer or text
            encoder other than the one a generator's ``trained_on.json`` names).
    """
    out = Path(out)
    if out.exists() and not force:
        raise ValueError(f"{out} already exists (use --force to replace it)")
    if not generators:
        raise ValueError("give at least one generator (--generator MODE=DIR)")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}")
    config = build_config(PipelineConfig, list(configs), list(overrides))
    # a pipeline YAML is a template for every mode (configs/pipeline/shapes.yaml): the settings of modes not given go
    # (its default_mode too, unless an override names it: a maskgit-only build from shapes.yaml failed on "ar")
    chosen = {key for item in overrides for key in parse_override(item)}
    keep_default = config.default_mode in generators or "default_mode" in chosen
    config = replace(
        config,
        generators={mode: f"generator_{mode}" for mode in generators},
        default_mode=config.default_mode if keep_default else next(iter(generators)),
        default_orders={mode: order for mode, order in config.default_orders.items() if mode in generators},
        sampling={key: value for key, value in config.sampling.items() if key.split("/")[0] in generators},
    )
    trained = {mode: read_trained_on(path) for mode, path in generators.items()}
    config = clip_from_training(config, trained, _given_keys(configs, overrides))
    if class_names is not None:
        config = replace(config, class_names=tuple(class_names))
    text_encoder, encoder_source, copied = None, None, False
    if config.text_encoder is not None:
        path, copied = _text_encoder_source(config, out)
        encoder_source = None if copied and out in path.parents else path  # the old pipeline's: copied, then gone
        text_encoder = load_text_encoder(replace(config.text_encoder, path=str(path)))
    check_not_over_inputs(
        out, {"the tokenizer": tokenizer, **{f"the {m} generator": g for m, g in generators.items()},
              "the text encoder": encoder_source}, "--out"
    )  # fmt: skip
    check_replaceable(out, config)
    pipe = VideoPipeline(
        VideoTokenizer.from_pretrained(tokenizer),
        {mode: Generator.from_pretrained(path) for mode, path in generators.items()},
        text_encoder,
        config,
    )
    for mode in generators:
        pipe.resolve_mode_order(mode, None)  # the default order must be one the generator supports
    check_trained_with(generators, trained, tokenizer, pipe.tokenizer, text_encoder)

    pipe.trained_on = {mode: made for mode, made in trained.items() if made is not None}  # written with the weights
    with atomic_dir(out) as tmp:
        pipe.save_pretrained(tmp, DTYPES[dtype])  # with the text encoder's folder when its path is relative
        if holdout is not None:
            atomic_write_json(tmp / HOLDOUT_FILE, list(holdout))
        VideoPipeline.from_pretrained(tmp)  # what we ship must load
    return out


def _given_keys(configs: Sequence[str | os.PathLike], overrides: Sequence[str]) -> set[str]:
    """The top-level fields the pipeline YAML files and overrides set (the rest are PipelineConfig's defaults)."""
    keys: set[str] = set()
    for path in configs:
        keys |= set(load_yaml(path))
    for item in overrides:
        keys |= set(parse_override(item))
    return keys


def clip_from_training(
    config: PipelineConfig, trained: Mapping[str, TrainedOn | None], given: set[str]
) -> PipelineConfig:
    """``config`` with ``num_frames`` and ``fps`` from the clips the generators trained on, unless ``given`` sets them.

    PipelineConfig's defaults (17 frames, 8 fps) are the shapes model's: a generator trained on 9-frame clips cut at
    25 fps was assembled into a pipeline that rolled out 17 frames and wrote them at 8 fps (3x slow motion), and
    resampled a video to continue to 8 fps first, all without a word.

    Raises:
        ValueError: an ``fps`` other than the rate the clips were cut at; no ``fps`` for clips cut every few frames of
            each video at its own rate (they have no one rate); generators trained on different clips, with
            ``num_frames`` or ``fps`` not given.
    """
    clips = {(t.num_frames, t.fps, t.stride) for t in trained.values() if t is not None and t.num_frames is not None}
    if not clips:
        return config
    if len(clips) > 1 and not {"num_frames", "fps"} <= given:
        shown = "; ".join(f"{n} frames at {f'{f:g} fps' if f else f'stride {s}'}" for n, f, s in sorted(clips, key=str))
        raise ValueError(f"the generators were trained on different clips ({shown}): give num_frames= and fps=")
    num_frames, fps, stride = next(iter(clips))
    if "num_frames" not in given:
        config = replace(config, num_frames=num_frames)
    if fps is None and "fps" not in given:
        raise ValueError(
            f"the generators' token cache took every {stride} frame(s) of each video at the video's own rate, so its "
            "clips have no one frame rate: give fps= (the rate they play at), e.g. as the override fps=25"
        )
    if fps is not None and "fps" not in given:
        config = replace(config, fps=fps)
    elif fps is not None and len(clips) == 1 and config.fps != fps:
        raise ValueError(
            f"fps={config.fps:g}, but the generators trained on clips cut at {fps:g} fps: their videos would play at "
            f"{config.fps / fps:.3g}x their speed; set fps={fps:g} (or leave fps out)"
        )
    return config


def check_trained_with(
    generators: Mapping[str, str | os.PathLike],
    trained: Mapping[str, TrainedOn | None],
    tokenizer_dir: str | os.PathLike,
    tokenizer: VideoTokenizer,
    text_encoder: TextEncoder | None,
) -> None:
    """ValueError when a generator's ``trained_on.json`` says it was trained with another token space or text encoder
    than the parts given: another tokenizer of the same vocabulary decodes its ids to other pictures, another encoder
    of the same width gives its prompts other features, and both load and sample without an error.

    The token space is compared by the ids of a fixed probe clip (:mod:`tokenizer.probe`), so the same tokenizer
    stored in another precision, or with only its decoder fine-tuned, fits. A file without those ids (a training with
    no tokenizer folder) is compared by the folder's fingerprint; a generator folder without the file (saved by
    ``save_pretrained``, or exported before it existed) is only logged.
    """
    ours = None
    for mode, directory in generators.items():
        made = trained[mode]
        if made is None:
            log.warning("the %s generator %s has no %s: its tokenizer, text encoder and clip settings are not "
                        "checked", mode, directory, TRAINED_ON_NAME)  # fmt: skip
            continue
        where = f"the {mode} generator ({os.path.join(directory, TRAINED_ON_NAME)})"
        if made.tokenizer_ids is not None:
            ours = ours if ours is not None else probe_ids(tokenizer)
            share = agreement(made.tokenizer_ids, ours)
            if share < PROBE_AGREEMENT:
                raise ValueError(
                    f"{where} was trained on the tokens of another tokenizer: {str(tokenizer_dir)!r} gives a fixed "
                    f"probe clip {share:.0%} of the ids its training tokenizer ({made.tokenizer[:12]}) gave; give the "
                    "tokenizer its token cache was made with (in any precision, or with only its decoder retrained)"
                )
        elif made.tokenizer != folder_fingerprint(tokenizer_dir, "tokenizer"):  # a training without data.tokenizer
            raise ValueError(
                f"{where} names tokenizer {made.tokenizer[:12]} and no probe ids (its training had no data.tokenizer), "
                f"and {str(tokenizer_dir)!r} is another folder: give the very folder its token cache was made with"
            )
        if made.text_encoder is not None and text_encoder is not None:
            given = text_encoder.fingerprint()
            if made.text_encoder != given:
                raise ValueError(
                    f"{where} was trained with text encoder {made.text_encoder}, but the pipeline's "
                    f"({text_encoder.config.path}, max_length {text_encoder.max_length}) is {given}: give the "
                    "encoder, max_length and weights of its training (data.text_encoder in its train_config.yaml)"
                )


def _text_encoder_source(config: PipelineConfig, out: Path) -> tuple[Path, bool]:
    """(the folder to load the text encoder from, whether it is copied into the pipeline). A relative
    ``text_encoder.path`` names a folder inside the pipeline, so it is copied in: from the pipeline being replaced
    (``--force``) when that has one, else from the working directory."""
    if config.text_encoder_package:
        return VideoPipeline.text_encoder_path(config, out), False
    path = Path(config.text_encoder.path)
    if path.is_absolute():
        return path, False
    if ".." in path.parts or not path.parts:
        raise ValueError(f"text_encoder.path {str(path)!r} must be absolute or a folder inside the pipeline")
    for source in (out / path, path):
        if source.is_dir():
            return source, True
    raise ValueError(
        f"text encoder folder {str(path)!r} not found in the working directory or in {str(out)!r}: give its "
        "folder (it is copied into the pipeline) or an absolute text_encoder.path"
    )
