"""The tokenizer training run's configuration (``train_config.yaml``) and its checks that need no data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from tokenizer import TokenizerConfig
from tokenizer.losses import LossConfig, PatchDiscriminator3d
from videodata.clips import ClipDataConfig
from videotrain.config import RENAMED, RunConfig
from videotrain.optim import OptimConfig

FREEZABLE = ("encoder", "quantizer", "decoder")  # the tokenizer's parts, as attributes of VideoTokenizer


def _tokenizer_optim() -> OptimConfig:
    return OptimConfig(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0, warmup_steps=100)


def _discriminator_optim() -> OptimConfig:
    return OptimConfig(lr=2e-4, betas=(0.5, 0.9), weight_decay=0.0, warmup_steps=0, schedule="constant", grad_clip=0.0)


@dataclass(frozen=True, kw_only=True)
class TokenizerTrainConfig:
    """Everything a tokenizer training run needs; saved as ``train_config.yaml``.

    ``disc_optim`` is the discriminator's optimizer (constant learning rate by default; a schedule runs from
    ``loss.adversarial_start_step`` to the end); its ``grad_accum`` is ignored: both engines accumulate
    ``optim.grad_accum`` micro-batches.
    ``frozen`` names parts of the tokenizer (``encoder``, ``quantizer``, ``decoder``) that a later
    stage keeps as ``run.init_from`` gave them: ``[encoder, quantizer]`` fine-tunes the decoder on
    fixed codes, so the token space (and any token cache made with the earlier stage) stays valid.
    """

    # the discriminator's optimizer has a section of its own (a generator config has no discriminator)
    RENAMED: ClassVar[dict[str, str]] = {
        **RENAMED,
        "optim.disc_lr": "disc_optim.lr",
        "optim.disc_betas": "disc_optim.betas",
    }

    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    optim: OptimConfig = field(default_factory=_tokenizer_optim)
    disc_optim: OptimConfig = field(default_factory=_discriminator_optim)
    run: RunConfig = field(default_factory=lambda: RunConfig(steps=2000, micro_batch=4, sample_every=200))
    frozen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.frozen) - set(FREEZABLE))
        if unknown:
            raise ValueError(f"frozen: unknown tokenizer part(s) {unknown}; choose from {list(FREEZABLE)}")
        if self.frozen and not self.run.init_from:
            raise ValueError("frozen parts need run.init_from: frozen random weights would stay random")
        if set(self.frozen) == set(FREEZABLE):
            raise ValueError("frozen: every part is frozen, so nothing would train")
        if "decoder" in self.frozen and self.loss.adversarial_weight > 0:
            raise ValueError(
                "frozen: [decoder] with loss.adversarial_weight > 0: the adversarial loss's adaptive weight needs "
                "the gradient of the decoder's last layer"
            )


def check_discriminator_input(in_channels: int, loss: LossConfig, num_frames: int, size: int) -> None:
    """ValueError when the 3D discriminator's strided layers would shrink a training clip to nothing (it would
    otherwise fail at the first adversarial step, possibly hours into a run with ``adversarial_start_step``)."""
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        disc = PatchDiscriminator3d(in_channels, loss.discriminator_channels, loss.discriminator_layers)
        try:
            disc(torch.zeros(1, in_channels, num_frames, size, size))
        except RuntimeError:
            raise ValueError(
                f"loss.discriminator_layers={loss.discriminator_layers} is too deep for clips of data.num_frames="
                f"{num_frames} at data.size={size}: use longer or larger clips or fewer layers"
            ) from None
