"""Generator training: a GPT-style or MaskGIT-style generator on cached token shards.

``tools/train.py`` builds a :class:`GeneratorTrainer` from a :class:`GeneratorTrainConfig` and
calls ``fit()``. One trainer serves every style, condition and unit order; the cache must have
been made by the tokenizer named in ``data.tokenizer`` (its fingerprint, codebook size and grid
are checked).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from core.weights import WEIGHTS_NAME, load_config, load_state, load_strict
from generator import (
    Condition,
    Generator,
    GeneratorConfig,
    ObjectiveConfig,
    generator_loss,
    make_layout,
    train_flops_per_clip,
)
from generator.provenance import TrainedOn
from generator.text_encoders import TextEncoderConfig
from tokenizer import VideoTokenizer
from tokenizer.probe import probe_ids
from videodata.cache.reader import ShuffledSampler, TokenCache, TokenSample, tokenizer_fingerprint
from videodata.captions import CaptionAugmentConfig, augment_caption
from videotrain import checkpoint, distributed, guards
from videotrain.config import RENAMED, RunConfig
from videotrain.generator_data import BatchStream, check_captions_encode, pick_caption, split_by_source
from videotrain.optim import OptimConfig, build_adamw
from videotrain.outputs import check_out_apart, export_generator, write_generator_samples
from videotrain.run import run_training
from videotrain.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Cached token shards.

    Attributes:
        cache: folder written by ``tools/cache_tokens.py``.
        tokenizer: the frozen tokenizer's folder: its fingerprint must match the cache, and it
            decodes sample videos.
        eval_fraction: share of clips held out for the periodic eval loss.
        text_encoder: frozen text encoder for text-conditional models (captions come from the cache).
        caption_augment: how training captions are perturbed before they are encoded (off by default; never
            applied to the eval loss or to sample videos).
    """

    cache: str = ""
    tokenizer: str = ""
    eval_fraction: float = 0.02
    text_encoder: TextEncoderConfig | None = None
    caption_augment: CaptionAugmentConfig = field(default_factory=CaptionAugmentConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:  # 7 left a single training clip; NaN fails too
            raise ValueError(f"data.eval_fraction must be in [0, 1), got {self.eval_fraction}")


@dataclass(frozen=True, kw_only=True)
class GeneratorTrainConfig:
    """Everything a generator training run needs; saved as ``train_config.yaml``."""

    RENAMED: ClassVar[dict[str, str]] = RENAMED

    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


class GeneratorTask(nn.Module):
    """The generator and its objective as one module, so the engine's forward returns the loss."""

    def __init__(self, generator: Generator, objective: ObjectiveConfig) -> None:
        super().__init__()
        self.generator = generator
        self.objective = objective

    def forward(
        self, ids: torch.Tensor, cond: Condition, rng: torch.Generator, objective: ObjectiveConfig | None = None
    ) -> tuple[torch.Tensor, dict]:
        """(scalar loss, stats) of a (B, t, h, w) batch of token ids; ``objective`` replaces the training one (the
        held-out loss runs without condition dropout or context masking)."""
        out = generator_loss(self.generator, ids, cond, objective or self.objective, rng)
        return out.loss, out.stats


# GeneratorConfig fields a warm start may change: they set the attention pattern or the runtime, not the weights.
# Fields that may differ between run.init_from's model and the new one. A GPT-style model's target-position
# tables are left out when a model without them (MaskGIT-style) starts from its weights.
_NOT_ARCHITECTURE = (
    "style", "orders", "cube_size", "attention_backend", "activation_checkpointing", "target_positions"
)  # fmt: skip


DEFAULT_SAMPLE_FPS = 8.0  # sample videos of a cache cut by frame stride rather than a frame rate


class GeneratorTrainer(Trainer):
    """Trains a :class:`~generator.Generator` on a token cache (see :class:`~videotrain.trainer.Trainer`)."""

    task = "generator"
    resume_keys = ("run.seed", "data.eval_fraction")  # they draw the held-out split: a change moves clips across it

    def validate(self) -> None:
        cfg = self.cfg
        if not cfg.data.cache:
            raise ValueError("data.cache is not set: point it at a folder written by tools/cache_tokens.py")
        check_out_apart(self.out, {"data.cache": [cfg.data.cache], "data.tokenizer": [cfg.data.tokenizer]})
        other = [o for o in cfg.objective.orders if o not in cfg.model.orders]
        if other:
            raise ValueError(f"objective.orders {other} are not among model.orders {list(cfg.model.orders)}")
        untrained = [o for o in cfg.model.orders if cfg.objective.orders and o not in cfg.objective.orders]
        if untrained:  # the export lists them as orders the model supports, and the first is its default
            log.warning("model.orders %s are not in objective.orders %s: this run does not train them, though the "
                        "exported config lists them", untrained, list(cfg.objective.orders))  # fmt: skip
        stage = self.engine_config(self.optim.grad_clip)["zero_optimization"]["stage"]
        if self.run.sample_every > 0 and (not cfg.data.tokenizer or stage == 3):  # samples were skipped in silence
            raise ValueError(
                "run.sample_every > 0 needs data.tokenizer (to decode the samples) and ZeRO stage 0-2 (ZeRO-3 "
                "partitions the weights the sampler reads); set run.sample_every=0"
            )

    def build(self) -> None:
        cfg, run = self.cfg, self.run
        fp = tokenizer_fingerprint(cfg.data.tokenizer) if cfg.data.tokenizer else None
        self.cache = TokenCache(cfg.data.cache, expect_fingerprint=fp, expect_codebook_size=cfg.model.vocab_size)
        self.model = Generator(cfg.model)
        if run.init_from and checkpoint.latest_complete(self.ckpt_dir) is None:  # a resumed run has its own weights
            self._init_from(run.init_from)
        self.model.check_grid(self.cache.grid, "clip")
        for order in cfg.objective.orders or cfg.model.orders:  # a bad one failed when a batch first drew it
            try:
                make_layout(self.cache.grid, order, cfg.model.cube_size)
            except ValueError as err:
                raise ValueError(f"objective order {order!r} cannot train on the cache's token grid: {err}") from None
        self._check_labels()
        self.eval_idx, train_idx = split_by_source(self.cache.source_ids(), cfg.data.eval_fraction, run.seed)
        if len(self.eval_idx) == 0 and run.eval_every > 0:  # every eval row read "eval_loss": NaN, unexplained
            log.warning("no held-out clips (data.eval_fraction=%g of %d clips holds none out): no held-out loss is "
                        "computed", cfg.data.eval_fraction, len(self.cache))  # fmt: skip
        elif len(self.eval_idx) > 2 * cfg.data.eval_fraction * len(self.cache):  # whole sources: 0.125 held 50% out
            log.warning("data.eval_fraction=%g holds out %d of %d clips (%.0f%%): whole source videos are held out",
                        cfg.data.eval_fraction, len(self.eval_idx), len(self.cache),
                        100 * len(self.eval_idx) / len(self.cache))  # fmt: skip
        self.stream = BatchStream(
            ShuffledSampler(len(train_idx), run.seed, self.dist.rank, self.dist.world_size), train_idx
        )
        self.text_encoder = None
        if cfg.model.cond == "text":
            from generator.text_encoders import load_text_encoder

            if cfg.data.text_encoder is None:
                raise ValueError("a text-conditional model needs data.text_encoder")
            self.text_encoder = load_text_encoder(cfg.data.text_encoder).to(self.dist.device)
            enc, model = self.text_encoder, cfg.model
            if (enc.dim, enc.max_length) != (model.text_dim, model.max_text_len):
                raise ValueError(
                    f"the text encoder gives {enc.max_length} tokens of width {enc.dim} (data.text_encoder.max_length"
                    f"); the model takes {model.max_text_len} of width {model.text_dim} (model.max_text_len, "
                    f"model.text_dim)"
                )
            empty = self.cache.captionless()  # one such clip stopped the run when a batch drew it
            if empty:
                raise ValueError(
                    f"a text-conditional model needs a caption for every clip; {len(empty)} clip(s) of "
                    f"{cfg.data.cache} have none (the first: {empty[:5]})"
                )
            check_captions_encode(self.cache.all_captions(), self.text_encoder, cfg.data.cache)
        tokenizer = VideoTokenizer.from_pretrained(cfg.data.tokenizer) if cfg.data.tokenizer else None
        self.trained_on = self._trained_on(tokenizer)  # a cache whose clip settings do not read fails now
        self.model.to(self.dist.device)
        opt = build_adamw(self.model, self.optim)
        self.engine = self.make_engine(GeneratorTask(self.model, cfg.objective), opt, self.optim.grad_clip)
        self.rng = torch.Generator().manual_seed(run.seed * 1000 + self.dist.rank)
        sampler = tokenizer is not None and run.sample_every > 0 and self.dist.is_main  # decodes the samples
        self._tokenizer = tokenizer.to(self.dist.device) if sampler else None

    def _trained_on(self, tokenizer: VideoTokenizer | None) -> TrainedOn:
        """What the export records of its tokens, text and clips (see :mod:`generator.provenance`); ``tokenizer``
        is ``data.tokenizer``'s, loaded."""
        clip = self.cache.manifest.get("clip_spec")
        clip = clip if isinstance(clip, dict) else {}
        fps = clip.get("fps")
        ids = probe_ids(tokenizer) if tokenizer is not None else None
        try:
            return TrainedOn(
                self.cache.fingerprint,
                tokenizer_ids=ids,
                text_encoder=self.text_encoder.fingerprint() if self.text_encoder is not None else None,
                num_frames=clip.get("num_frames"), fps=fps, stride=clip.get("stride") if fps is None else None,
            )  # fmt: skip
        except ValueError as err:
            raise ValueError(f"token cache {self.cfg.data.cache}: its manifest's clip_spec: {err}") from None

    def _init_from(self, directory: str) -> None:
        """Loads an exported generator's weights into the fresh model (see ``run.init_from``)."""
        src = load_config(GeneratorConfig, directory)
        arch = [f.name for f in fields(GeneratorConfig) if f.name not in _NOT_ARCHITECTURE]
        diff = [
            f"{k}: {getattr(src, k)} vs {getattr(self.cfg.model, k)}"
            for k in arch
            if getattr(src, k) != getattr(self.cfg.model, k)
        ]
        if diff:
            raise ValueError(f"run.init_from {directory} has another architecture ({'; '.join(diff)})")
        state = load_state(Path(directory) / WEIGHTS_NAME)
        ours = {k: v for k, v in self.model.state_dict().items() if k.startswith("target_emb.")}
        state = {k: v for k, v in state.items() if not k.startswith("target_emb.") or k in ours}
        state = {**ours, **state}  # tables the source lacks keep their fresh initialization
        load_strict(self.model, state, what="generator")
        log.info("initialized from %s (%s-style, orders %s)", directory, src.style, list(src.orders))

    def _check_labels(self) -> None:
        cfg = self.cfg.model
        if cfg.cond == "class":
            labels = self.cache.labels()  # every clip: a bad label late in the cache would stop a long run
            if len(labels) and (labels.min() < 0 or labels.max() >= cfg.num_classes):
                raise ValueError(
                    f"class-conditional model with {cfg.num_classes} classes, but cache labels span "
                    f"{labels.min()}..{labels.max()}"
                )

    # ------------------------------------------------------------------ data
    def condition(self, samples: Sequence[TokenSample], pick: torch.Generator | None = None) -> Condition:
        """The condition of cached samples: their labels, their captions' text features, or none.

        With ``pick`` (training batches) a sample with several captions gives one drawn with it, and the caption
        is augmented as ``data.caption_augment`` says; without it, the first caption as it is.
        """
        kind, device = self.cfg.model.cond, self.dist.device
        if kind == "class":
            return Condition(labels=torch.tensor([s.label for s in samples], device=device))
        if kind == "text":
            captions = [pick_caption(s, pick) for s in samples]
            if pick is not None:
                augmented = [augment_caption(c, self.cfg.data.caption_augment, pick) for c in captions]
                # An augmented caption the encoder refuses (a filler that made it too long) stopped the run when
                # drawn; its clip's caption, checked at the start, takes its place.
                refused = self.text_encoder.refusals(augmented)
                captions = [c if i in refused else a for i, (c, a) in enumerate(zip(captions, augmented))]
            feats = self.text_encoder.encode(captions)
            return Condition(text=feats.features, text_mask=feats.mask)
        return Condition(drop=torch.zeros(len(samples), dtype=torch.bool, device=device))

    def batch(self, indices: Sequence[int], pick: torch.Generator | None = None) -> tuple[torch.Tensor, Condition]:
        """(B, t, h, w) token ids of cached clips ``indices`` and their condition (see :meth:`condition`)."""
        samples = [self.cache[i] for i in indices]
        return torch.stack([s.ids for s in samples]).to(self.dist.device), self.condition(samples, pick)

    # ------------------------------------------------------------------ the step
    def train_step(self) -> dict[str, float] | None:
        """One optimizer step (``optim.grad_accum`` micro-batches); None if a non-finite gradient skipped it.

        A micro-batch whose loss is non-finite on any rank is dropped before its backward and the
        next batch takes its place, so it changes no weight, optimizer state or EMA.
        """
        gas = self.optim.grad_accum
        lr = self.set_lr()
        losses, accs = [], []
        self.grad_norm = None
        while len(losses) < gas:
            ids, cond = self.batch(self.stream.take(self.run.micro_batch), pick=self.rng)
            loss, stats = self.engine(ids, cond, self.rng)
            if self.any_nonfinite(loss):
                self.guard.record(guards.LOSS, self.step)
                continue
            if not self.backward(loss, boundary=len(losses) == gas - 1):
                return None
            self.engine.step()
            losses.append(loss.detach())  # read back once per step, not after each engine.step()
            accs.append(stats["acc"])
        self.finished_step()
        return {
            "loss": float(torch.stack(losses).float().mean()),
            "acc": float(torch.stack(accs).float().mean()),
            "lr": lr,
            "grad_norm": self.grad_norm_value(),
        }

    def throughput(self, seconds: float) -> dict[str, float]:
        tokens = math.prod(self.cache.grid)
        per_s = self.run.micro_batch * self.optim.grad_accum * self.dist.world_size * tokens / seconds
        logs = {"tokens_per_s": per_s}
        if self.run.peak_tflops > 0:
            clips_per_s = per_s / tokens
            orders = self.cfg.objective.orders or self.cfg.model.orders
            flops = train_flops_per_clip(self.model, self.cache.grid, orders) * clips_per_s
            logs["mfu"] = flops / (self.run.peak_tflops * 1e12 * self.dist.world_size)
        return logs

    @torch.no_grad()
    def eval_logs(self) -> dict[str, float]:
        """Mean held-out loss over ``run.eval_batches`` fixed batches (same masks every time); nothing without
        held-out clips (a warning at build says so)."""
        if len(self.eval_idx) == 0:
            return {}
        self.model.eval()
        rng = torch.Generator().manual_seed(12345 + self.dist.rank)
        world, mb = self.dist.world_size, self.run.micro_batch
        mine = self.eval_idx[self.dist.rank :: world]
        # Every rank runs the same number of forward passes (ZeRO-3 gathers parameters in each); a rank whose share
        # has run out repeats a clip with weight 0. The mean is over clips, not over ranks.
        batches = min(self.run.eval_batches, -(-len(self.eval_idx[::world]) // mb))
        # the loss the model is asked to lower on real prompts: no condition dropout, no masked context
        # the held-out negative log-likelihood: with label smoothing a perfect predictor read 5.0 at 0.1, not 0
        objective = replace(self.cfg.objective, cond_dropout=0.0, context_mask_ratio=0.0, label_smoothing=0.0)
        loss_sum, clips = 0.0, 0
        for b in range(batches):
            idx = mine[b * mb : (b + 1) * mb]
            ids, cond = self.batch((idx if len(idx) else self.eval_idx[:1]).tolist())
            loss, _ = self.engine(ids, cond, rng, objective)
            loss_sum, clips = loss_sum + float(loss) * len(idx), clips + len(idx)
        self.model.train()
        totals = distributed.all_reduce_sum(torch.tensor([loss_sum, clips], dtype=torch.float64), self.dist.device)
        return {"eval_loss": float(totals[0] / totals[1])}

    # ------------------------------------------------------------------ state and outputs
    def task_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        state = {"data": self.stream.state_dict(), "cache": self.cache.content_id, "cache_clips": len(self.cache)}
        return state, {"objective_rng": self.rng.get_state()}

    def load_task_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        # Another cache (other clips, or the same clips re-cut) under the same data.cache path, or another path:
        # the held-out split and the data position index its clips, so they would point at other clips. A copy or
        # a moved folder has the same content and resumes.
        saved = state.get("cache")
        if saved is not None and saved != self.cache.content_id:
            raise ValueError(
                f"the checkpoint was written on another token cache ({state.get('cache_clips')} clips, content "
                f"{saved[:12]}) than data.cache={str(self.cfg.data.cache)!r} ({len(self.cache)} clips, content "
                f"{self.cache.content_id[:12]}): resume with the cache it trained on, or use a new --out"
            )
        self.stream.load_state_dict(state["data"])
        self.rng.set_state(tensors["objective_rng"])

    def write_samples(self) -> None:
        """Sample videos of held-out clips' conditions, decoded by ``data.tokenizer`` (rank 0, ZeRO 0-2)."""
        if self._tokenizer is None:  # no data.tokenizer, or not rank 0 (ZeRO-3 with samples is refused)
            return
        n = self.run.num_samples
        held_out = [int(i) for i in self.eval_idx[:n]]
        held = set(held_out)
        rest = (i for i in range(len(self.cache)) if i not in held)
        picks = held_out + list(itertools.islice(rest, n - len(held_out)))  # a small cache: fewer
        samples = [self.cache[int(i)] for i in picks]
        write_generator_samples(
            self.model,
            self._tokenizer,
            self.condition(samples),
            self.cache.grid,
            directory=self.out / "samples" / f"step_{self.step:08d}",
            sample_steps=self.run.sample_steps,
            fps=self.cache.manifest.get("clip_spec", {}).get("fps") or DEFAULT_SAMPLE_FPS,
            order=(self.cfg.objective.orders or self.cfg.model.orders)[0],  # one this run trains
            captions=[{"label": s.label, "caption": s.caption} for s in samples],
        )

    def export(self) -> Path:
        """``<out>/export``: safetensors, ``config.yaml`` (the GeneratorConfig), ``train_config.yaml`` and
        ``trained_on.json`` (see :mod:`generator.provenance`)."""
        directory = self.out / "export"
        state = self.export_state()
        if self.dist.is_main:
            export_generator(state, self.cfg, directory, self.trained_on)
        distributed.barrier()
        return directory


def train_generator(cfg: GeneratorTrainConfig, out: str | Path) -> GeneratorTrainer:
    """Builds a :class:`GeneratorTrainer`, runs it to the end and returns it (see :func:`run_training`)."""
    return run_training(lambda: GeneratorTrainer(cfg, out))
