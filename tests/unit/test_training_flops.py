"""The FLOP count behind the trainer's MFU log: the sequence each order really processes, and the average over the
orders a run draws."""

import types

import pytest
import torch

from generator import (
    Condition,
    Generator,
    GeneratorConfig,
    ObjectiveConfig,
    generator_loss,
    processed_length,
    train_flops_per_clip,
)
from videotrain.generator_task import GeneratorTrainer

GRID = (3, 4, 4)
ORDERS = {"ar": ("token", "cube", "frame"), "maskgit": ("token", "cube", "frame", "clip")}


def tiny(style: str) -> Generator:
    cfg = GeneratorConfig(
        style=style, orders=ORDERS[style], vocab_size=64, max_grid=GRID, dim=32, depth=2, num_heads=2,
        cube_size=(1, 2, 2), cond="class", num_classes=5, target_positions=style == "ar",
    )  # fmt: skip
    torch.manual_seed(0)
    return Generator(cfg)


@pytest.mark.parametrize("style, order", [(s, o) for s, orders in ORDERS.items() for o in orders])
def test_processed_length_is_what_the_training_objective_runs_the_model_on(style, order):
    """The trainer's old estimate counted a clean context stream for MaskGIT's clip order, which has none, counted
    a multi-unit order's second stream only in the attention context, not in the tokens, and left out the prefix."""
    model = tiny(style)
    seen = []
    model.blocks[0].register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[1]))
    labels = torch.tensor([1, 2])
    generator_loss(model, torch.randint(0, 64, (2, *GRID)), Condition(labels=labels), ObjectiveConfig(orders=(order,)))
    assert seen == [processed_length(model, GRID, order)]
    streams = 2 if style == "maskgit" and order != "clip" else 1
    assert seen[0] == model.prefix_len + streams * 48


def test_train_flops_average_the_drawn_orders():
    model = tiny("maskgit")
    clip, frame = (processed_length(model, GRID, o) for o in ("clip", "frame"))
    per_clip = train_flops_per_clip(model, GRID, ("clip", "frame"))
    assert per_clip == pytest.approx((model.flops_per_token(clip) * clip + model.flops_per_token(frame) * frame) / 2)
    assert train_flops_per_clip(model, GRID, ("clip",)) < per_clip < train_flops_per_clip(model, GRID, ("frame",))


@pytest.mark.parametrize("style, orders", [("maskgit", ("clip",)), ("maskgit", ("frame",)), ("ar", ("token",))])
def test_trainer_mfu_is_training_flops_per_clip_times_clips_per_second_over_the_peak(style, orders):
    """The trainer's logged MFU, computed from a trainer's fields (a full run is the integration tests' job)."""
    model = tiny(style)
    run = types.SimpleNamespace(micro_batch=4, peak_tflops=2.0)
    fake = types.SimpleNamespace(
        run=run, optim=types.SimpleNamespace(grad_accum=3), dist=types.SimpleNamespace(world_size=2),
        cache=types.SimpleNamespace(grid=GRID), model=model,
        cfg=types.SimpleNamespace(model=model.config, objective=ObjectiveConfig(orders=orders)),
    )  # fmt: skip
    logs = GeneratorTrainer.throughput(fake, seconds=0.5)
    clips_per_s = 4 * 3 * 2 / 0.5
    assert logs["tokens_per_s"] == pytest.approx(clips_per_s * 48)
    expected = train_flops_per_clip(model, GRID, orders) * clips_per_s / (2.0e12 * 2)
    assert logs["mfu"] == pytest.approx(expected)
