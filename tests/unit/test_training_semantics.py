"""Training pieces pinned by their maths: EMA, activation checkpointing, label smoothing, context_mask_ratio."""

import dataclasses
import os
import re
import signal

import pytest
import torch
import torch.nn.functional as F

from generator import Condition, Generator, ObjectiveConfig, generator_loss, make_layout
from generator.objectives import ar_loss, maskgit_loss
from generator.sampling import DecodeContext, SamplingConfig
from generator.sampling.ar import START_COORDS
from generator.schedules import gamma, training_mask
from generator.units import causal_mask
from tests.unit.test_generator import GRID, cond2, tiny, tiny_all
from videotrain.ema import EMA
from videotrain.guards import GradientCheck, NonFiniteGuard, StopSignals


def test_ema_is_an_exponential_moving_average_of_the_parameters():
    model = torch.nn.Linear(3, 2)
    p0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(2.0)
    ema.update(model)
    for k in p0:
        first = 0.9 * p0[k] + 0.1 * (p0[k] + 1)
        expected = 0.9 * first + 0.1 * (p0[k] + 3)
        assert torch.allclose(ema.shadow[k], expected, atol=1e-6), k
        assert torch.allclose(ema.weights(model)[k], expected, atol=1e-6)
    state = ema.state_dict()
    other = EMA(model, decay=0.9)
    other.load_state_dict(state)
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    ids = torch.randint(0, 64, (2, *GRID), generator=torch.Generator().manual_seed(0))
    grads = []
    for ckpt in (False, True):
        m = tiny("maskgit", activation_checkpointing=ckpt).train()
        out = generator_loss(m, ids, cond2(), ObjectiveConfig(cond_dropout=0.0), torch.Generator().manual_seed(1))
        out.loss.backward()
        grads.append((out.loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}))
    (la, ga), (lb, gb) = grads
    assert torch.allclose(la, lb, atol=1e-6) and ga.keys() == gb.keys() and len(ga) > 10
    assert all(torch.allclose(ga[k], gb[k], atol=1e-6, rtol=1e-4) for k in ga)


def test_label_smoothing_mixes_the_uniform_distribution_into_the_target():
    m = tiny("ar")
    ids = torch.randint(0, 64, (2, *GRID), generator=torch.Generator().manual_seed(0))
    lay = make_layout(GRID, "token")
    seq = lay.to_sequence(ids)
    start = torch.full((2, 1), m.config.start_id)
    coords = torch.cat([torch.full((1, 3), -1), lay.coords[:-1]])
    with torch.no_grad():
        logits = m(torch.cat([start, seq[:, :-1]], 1), cond2(), coords=coords, mask=causal_mask(lay.num_tokens))
        logp = logits.float().log_softmax(-1)  # (2, L, V)
        nll = -logp.gather(-1, seq[..., None])[..., 0].mean()
        uniform = -logp.mean(-1).mean()  # cross-entropy against the uniform distribution over V
        for eps in (0.0, 0.1, 0.3):
            got = ar_loss(m, ids, cond2(), "token", ObjectiveConfig(label_smoothing=eps)).loss
            assert torch.allclose(got, (1 - eps) * nll + eps * uniform, atol=1e-5), eps


def test_context_mask_ratio_masks_that_share_of_the_clean_stream_only(monkeypatch):
    m = tiny("maskgit")
    ids = torch.randint(0, 64, (64, *GRID), generator=torch.Generator().manual_seed(0))
    L = ids[0].numel()
    seen = _spy_forward(monkeypatch)
    mask_id = m.config.mask_id
    for ratio in (0.0, 0.3):
        seen.clear()
        cfg = ObjectiveConfig(cond_dropout=0.0, context_mask_ratio=ratio)
        with torch.no_grad():
            maskgit_loss(m, ids, Condition(labels=torch.zeros(64, dtype=torch.long)), "frame", cfg,
                         torch.Generator().manual_seed(2))  # fmt: skip
        clean, noisy = seen[0][0][:, :L], seen[0][0][:, L:]
        share = (clean == mask_id).float().mean().item()
        assert abs(share - ratio) < 0.03, (ratio, share)  # 3,072 draws: binomial std < 0.01
        kept = clean != mask_id
        seq = make_layout(GRID, "frame").to_sequence(ids)
        assert torch.equal(clean[kept], seq[kept])  # unmasked context tokens are the clean tokens
        assert (noisy == mask_id).any() and ((noisy == mask_id) | (noisy == seq)).all()  # the masked stream


def test_ema_refuses_decays_outside_the_open_unit_interval_and_checkpoints_without_ema_weights():
    model = torch.nn.Linear(3, 2)
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"ema decay must be in \(0, 1\)"):
            EMA(model, decay=bad)
    ema = EMA(model, decay=0.5)
    with pytest.raises(ValueError, match=r"^checkpoint lacks EMA weights for \['bias'\]$"):
        ema.load_state_dict({"ema.weight": torch.zeros(2, 3)})  # no ema.bias
    deep = EMA(torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(4)]), decay=0.5)
    with pytest.raises(ValueError, match=r"^checkpoint lacks EMA weights for \['0.weight', .*'2.weight'\]$") as err:
        deep.load_state_dict({})  # eight missing: the message names the first five
    assert str(err.value).count("'") == 10


def test_ema_weights_are_exported_in_fp32_whatever_the_models_dtype():
    """A bf16 / fp16 engine casts the module; the EMA export was cast back to it, unlike the export without EMA."""
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1e-3)  # a step too small for bf16 to keep in the average's last digits
    ema.update(model)
    assert all(v.dtype == torch.float32 for v in ema.shadow.values())  # the shadow keeps fp32
    weights = ema.weights(model)
    assert all(v.dtype == torch.float32 for v in weights.values())
    assert torch.equal(weights["weight"], ema.shadow["weight"])


@pytest.mark.parametrize("target_positions", [False, True])
@pytest.mark.parametrize("order", ["cube", "frame"])
def test_ar_loss_is_the_cross_entropy_of_what_the_sampler_sees(order, target_positions, monkeypatch):
    """Training and sampling must agree on the layout (the model's cube size, not a default), the start token's
    position and what each input predicts: the loss is the cross-entropy of the logits the cached sampler computes when
    fed the same tokens one at a time, and those logits are the ones training computes, position by position (the
    start token's position moves logits by ~3e-4 in this small model: too little to show in the mean loss)."""
    cfg = dataclasses.replace(tiny("ar").config, cube_size=(3, 2, 2), target_positions=target_positions)
    torch.manual_seed(0)
    m = Generator(cfg).eval()
    ids = torch.randint(0, 64, (2, *GRID), generator=torch.Generator().manual_seed(0))
    seen = _spy_forward(monkeypatch)
    with torch.no_grad():
        out = ar_loss(m, ids, cond2(), order, ObjectiveConfig(cond_dropout=0.0))
    monkeypatch.undo()
    train_logits = seen[0][1]
    layout = make_layout(GRID, order, cfg.cube_size)
    seq = layout.to_sequence(ids)
    ctx = DecodeContext(m, cond2(), SamplingConfig(), max_tokens=1 + layout.num_tokens)
    prev = torch.full((2, 1), cfg.start_id)
    prev_coords, steps = torch.tensor([START_COORDS]), []
    for i in range(layout.num_tokens):
        targets = layout.coords[i : i + 1] if target_positions else None
        steps.append(ctx.logits(prev, prev_coords, keep=True, progress=0.0, targets=targets)[:, -1])
        prev, prev_coords = seq[:, i : i + 1], layout.coords[i : i + 1]
    logits = torch.stack(steps, dim=1)  # (B, L, V)
    assert torch.allclose(out.loss, F.cross_entropy(logits.flatten(0, 1), seq.flatten()), atol=1e-5)
    # measured: <= 1.2e-7 here with 1 and 2 threads; a start token at a rotated position moves them by >= 2.5e-4
    assert torch.allclose(train_logits.float(), logits, atol=2e-5)


def test_ar_loss_accuracy_is_the_share_of_positions_whose_argmax_is_the_target(monkeypatch):
    m = tiny("ar")
    ids = torch.ones(2, *GRID, dtype=torch.long)
    ids[:, 0] = 0  # the first of three latent frames: token 0, the only one the stub predicts

    def predicts_zero(self, ids, cond, cache=None, **kw):
        out = torch.zeros(*ids.shape, self.config.vocab_size)
        out[..., 0] = 1.0 + 1e-3 * torch.arange(ids.shape[1])  # the largest logit of all sits at the last position
        return out

    monkeypatch.setattr(Generator, "forward", predicts_zero)
    acc = ar_loss(m, ids, cond2(), "frame", ObjectiveConfig(cond_dropout=0.0)).stats["acc"]
    assert abs(float(acc) - 1 / 3) < 1e-6


def test_nonfinite_guard_skips_until_the_limit_in_a_row_and_a_good_step_resets_the_count(caplog):
    guard = NonFiniteGuard("skip", max_in_a_row=3)
    guard.record("gradient", 7)
    guard.record("loss", 8)
    assert [r.getMessage() for r in caplog.records] == [
        "non-finite gradient at step 7: step skipped",
        "non-finite loss at step 8: micro-batch dropped, the next one takes its place",
    ]
    guard.reset()  # a good step
    guard.record("gradient", 9)
    guard.record("gradient", 10)
    with pytest.raises(FloatingPointError, match=r"non-finite gradient at step 11.*\(3 non-finite in a row\)"):
        guard.record("gradient", 11)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 2.*\(run.nonfinite=stop\)"):
        NonFiniteGuard("stop", max_in_a_row=100).record("loss", 2)


def _grad_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2), torch.nn.Linear(2, 2))


@pytest.mark.parametrize("zero_stage, precision", [(0, "fp32"), (0, "bf16"), (2, "fp32")])
def test_gradient_check_finds_a_nonfinite_gradient_not_only_a_nonfinite_loss(zero_stage, precision):
    """A finite loss whose gradient is not (sqrt at 0): the step must be flagged, on every path that reads it."""
    assert GradientCheck.reads_params(0, "fp32") and not GradientCheck.reads_params(0, "bf16")
    assert not GradientCheck.reads_params(1, "fp32")
    model = _grad_model()
    check = GradientCheck(model, zero_stage, precision, torch.device("cpu"))
    x = torch.randn(5, 3)
    model[1](model[0](x)).sum().backward()  # model[2] gets no gradient
    norm, bad = check.read()
    assert not bad
    if zero_stage == 0:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert torch.allclose(norm, torch.stack([g.norm() for g in grads]).norm())
    if (zero_stage, precision) == (0, "fp32"):  # parameters without a gradient get a zero one, as an all-reduce gives
        assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model[2].parameters())
    model.zero_grad(set_to_none=True)
    loss = model[0](x).sum() + _nonfinite_grad_loss(model[0].weight)  # finite: sqrt(0) = 0
    assert torch.isfinite(loss)
    loss.backward()  # d sqrt(u)/du at u = 0 is inf
    norm, bad = check.read()
    assert bad
    check.clear()
    model.zero_grad(set_to_none=True)
    model[0](x).sum().backward()
    assert not check.read()[1]


def _nonfinite_grad_loss(p: torch.Tensor) -> torch.Tensor:
    """A finite loss (0) whose gradient for ``p`` is NaN: sqrt at 0 times a zero inner derivative."""
    return p.abs().sub(p.abs()).sqrt().sum()


@pytest.mark.parametrize("bad", [0, 1])
def test_gradient_check_hooks_keep_the_flag_whatever_gradients_come_after(bad):
    """Under ZeRO-1+ each gradient is checked by a hook as it is made: a finite gradient made after a non-finite one
    must not clear the flag, whichever of two parameters (made in either order) is the bad one."""
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))])
    check = GradientCheck(model, 2, "fp32", torch.device("cpu"))
    good = 1 - bad
    loss = (model[good] * 2).sum() + _nonfinite_grad_loss(model[bad])
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(model[good].grad).all() and not torch.isfinite(model[bad].grad).all()
    norm, flagged = check.read()
    assert norm is None and flagged  # ZeRO-1+: the norm is DeepSpeed's own


def test_gradient_check_tells_an_overflowing_norm_from_a_nonfinite_gradient():
    """fp32 ZeRO-0 reads p.grad: finite gradients whose sum of squares overflows are not a non-finite step."""
    model = _grad_model()
    check = GradientCheck(model, 0, "fp32", torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e30)
    norm, flagged = check.read()
    assert torch.isinf(norm) and not flagged
    model[0].weight.grad[0, 0] = float("nan")
    assert check.read()[1]


def test_gradient_check_without_gradients_reads_no_norm():
    """A mixed-precision ZeRO-0 step whose parameters got no gradient: no norm, nothing flagged (no error)."""
    check = GradientCheck(_grad_model(), 0, "bf16", torch.device("cpu"))
    assert check.read() == (None, False)


def _expected_mask_share(schedule: str, n: int) -> float:
    """E[ceil(gamma(r) n) / n] for r ~ U(0, 1), at least one token: by quadrature."""
    r = (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000
    return float((torch.ceil(gamma(r, schedule) * n).clamp_min(1) / n).mean())


def test_training_mask_masks_the_lowest_draws_of_each_unit_however_many_units():
    """Each unit masks the k tokens with the lowest of its random draws. The sort key was score + 2 * unit in
    float32: with 2**16 units it rounds the scores to 1/64, and tied tokens of a unit were ranked by position."""
    units, size = 2**16, 4
    unit_of = torch.arange(units).repeat(size)  # (L,) units interleaved, not contiguous
    masked = training_mask(unit_of, 2, "cosine", torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the function's draws, in its order
    r = torch.rand(2, units, generator=g)
    score = torch.rand(2, unit_of.numel(), generator=g)
    k = torch.ceil(gamma(r, "cosine") * size).clamp_min(1)  # (B, U)
    per_unit = score.view(2, size, units)  # (B, size, U): position i * units + u is token i of unit u
    rank = per_unit.argsort(1).argsort(1)  # (B, size, U) rank of each token's draw in its unit
    expected = (rank < k[:, None, :]).reshape(2, -1)  # (B, L)
    assert torch.equal(masked, expected)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_training_mask_draws_a_ratio_per_row_and_unit_from_the_schedule(schedule):
    unit_of = make_layout(GRID, "frame").unit_of  # 3 units of 16 tokens
    torch.manual_seed(1)
    masked = training_mask(unit_of, 512, schedule, torch.Generator().manual_seed(5))
    torch.manual_seed(2)  # only the given generator may be used
    assert torch.equal(masked, training_mask(unit_of, 512, schedule, torch.Generator().manual_seed(5)))
    counts = torch.stack([masked[:, unit_of == u].sum(1) for u in range(3)], 1)  # (B, U)
    assert counts.min() == 1 and counts.max() == 16  # at least one per unit; all of them when r is near 0
    # 1,536 (row, unit) draws: the standard error of the mean share is < 0.008
    assert abs(counts.float().mean().item() / 16 - _expected_mask_share(schedule, 16)) < 0.03
    # Positions are drawn per row: rows that mask the same number of unit-0 tokens do not all pick the same ones.
    k = counts[:, 0]
    rows = (k == 8).nonzero().flatten()
    assert len(rows) > 2 and not all(torch.equal(masked[rows[0], :16], masked[r, :16]) for r in rows[1:])


def _spy_forward(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    seen = []
    original = Generator.forward

    def spy(self, x, cond, cache=None, **kw):
        out = original(self, x, cond, cache, **kw)
        seen.append((x.detach().clone(), out.detach().clone()))
        return out

    monkeypatch.setattr(Generator, "forward", spy)
    return seen


def test_maskgit_loss_is_reproducible_from_its_generator_and_draws_context_masks_per_row():
    m = tiny("maskgit")
    ids = torch.randint(0, 64, (8, *GRID), generator=torch.Generator().manual_seed(0))
    cfg = ObjectiveConfig(cond_dropout=0.0, context_mask_ratio=0.3)
    cond = Condition(labels=torch.zeros(8, dtype=torch.long))
    losses = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        with torch.no_grad():
            losses.append(maskgit_loss(m, ids, cond, "frame", cfg, torch.Generator().manual_seed(3)).loss)
    assert torch.equal(losses[0], losses[1])


def test_maskgit_loss_context_masks_differ_between_rows(monkeypatch):
    m = tiny("maskgit")
    seen = _spy_forward(monkeypatch)
    ids = torch.randint(0, 64, (8, *GRID), generator=torch.Generator().manual_seed(0))
    cfg = ObjectiveConfig(cond_dropout=0.0, context_mask_ratio=0.5)
    with torch.no_grad():
        maskgit_loss(m, ids, Condition(labels=torch.zeros(8, dtype=torch.long)), "frame", cfg,
                     torch.Generator().manual_seed(3))  # fmt: skip
    dropped = seen[0][0][:, : ids[0].numel()] == m.config.mask_id  # (B, L) the clean stream's masks
    assert not all(torch.equal(dropped[0], dropped[b]) for b in range(1, 8))


@pytest.mark.parametrize("grid", [(2, 4, 4), (3, 4, 4)])
def test_maskgit_loss_gives_every_multi_unit_layout_a_clean_context_stream(monkeypatch, grid):
    m = tiny("maskgit")
    seen = _spy_forward(monkeypatch)
    ids = torch.randint(0, 64, (2, *grid), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maskgit_loss(m, ids, cond2(), "frame", ObjectiveConfig(cond_dropout=0.0), torch.Generator().manual_seed(1))
        maskgit_loss(m, ids, cond2(), "clip", ObjectiveConfig(cond_dropout=0.0), torch.Generator().manual_seed(1))
    L = ids[0].numel()
    assert seen[0][0].shape[1] == 2 * L  # frame units: clean stream + masked stream
    assert seen[1][0].shape[1] == L  # one unit: the masked stream alone


def test_maskgit_loss_lays_tokens_out_with_the_models_cube_size(monkeypatch):
    """Cube order must use the model's cube size (what the sampler uses), not the default one."""
    cfg = dataclasses.replace(tiny("maskgit").config, cube_size=(3, 2, 2))
    torch.manual_seed(0)
    m = Generator(cfg)
    seen = _spy_forward(monkeypatch)
    ids = torch.randint(0, 64, (2, *GRID), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maskgit_loss(m, ids, cond2(), "cube", ObjectiveConfig(cond_dropout=0.0), torch.Generator().manual_seed(1))
    ours, default = make_layout(GRID, "cube", (3, 2, 2)), make_layout(GRID, "cube")
    assert not torch.equal(ours.to_sequence(ids), default.to_sequence(ids))  # the two layouts differ here
    assert torch.equal(seen[0][0][:, : ours.num_tokens], ours.to_sequence(ids))  # the clean stream, in our layout


def test_maskgit_loss_label_smoothing_accuracy_and_stats(monkeypatch):
    m = tiny("maskgit")
    seen = _spy_forward(monkeypatch)
    ids = torch.randint(0, 64, (2, *GRID), generator=torch.Generator().manual_seed(0))
    L = ids[0].numel()
    outs = {}
    for eps in (0.0, 0.2):
        with torch.no_grad():
            outs[eps] = maskgit_loss(m, ids, cond2(), "frame", ObjectiveConfig(cond_dropout=0.0, label_smoothing=eps),
                                     torch.Generator().manual_seed(1))  # fmt: skip
    inputs, logits = seen[0]
    masked = inputs[:, L:] == m.config.mask_id  # (B, L)
    target = make_layout(GRID, "frame").to_sequence(ids)[masked]
    logp = logits[:, -L:][masked].float().log_softmax(-1)
    nll, uniform = -logp.gather(1, target[:, None]).mean(), -logp.mean()
    assert torch.allclose(outs[0.0].loss, nll, atol=1e-5)
    assert torch.allclose(outs[0.2].loss, 0.8 * nll + 0.2 * uniform, atol=1e-5)
    assert outs[0.0].stats.keys() == {"acc", "mask_ratio"}
    assert torch.allclose(outs[0.0].stats["acc"], (logp.argmax(-1) == target).float().mean())
    assert torch.allclose(outs[0.0].stats["mask_ratio"], masked.float().mean())


def test_maskgit_accuracy_is_the_share_of_masked_tokens_predicted(monkeypatch):
    m = tiny("maskgit")

    def predicts_one(self, ids, cond, cache=None, **kw):
        out = torch.zeros(*ids.shape, self.config.vocab_size)
        out[..., 1] = 1.0 + 1e-3 * torch.arange(ids.shape[1])  # the largest logit of all sits at the last position
        return out

    monkeypatch.setattr(Generator, "forward", predicts_one)
    for token, acc in ((1, 1.0), (2, 0.0)):
        ids = torch.full((2, *GRID), token)
        cfg = ObjectiveConfig(cond_dropout=0.0)
        out = maskgit_loss(m, ids, cond2(), "frame", cfg, torch.Generator().manual_seed(1))
        assert float(out.stats["acc"]) == acc


def test_condition_dropout_drops_that_share_of_rows_keeps_earlier_drops_and_the_text_mask():
    from generator.objectives import drop_condition

    n = 4000
    cond = Condition(labels=torch.zeros(n, dtype=torch.long))
    assert drop_condition(cond, 0.0, torch.Generator()) is cond
    torch.manual_seed(1)
    out = drop_condition(cond, 0.3, torch.Generator().manual_seed(4))
    assert abs(out.drop.float().mean().item() - 0.3) < 0.03  # 4,000 rows: standard error 0.007
    torch.manual_seed(2)  # only the given generator is used
    assert torch.equal(out.drop, drop_condition(cond, 0.3, torch.Generator().manual_seed(4)).drop)
    already = torch.arange(n) % 2 == 0
    again = drop_condition(Condition(labels=cond.labels, drop=already), 0.3, torch.Generator().manual_seed(4))
    assert torch.equal(again.drop, already | out.drop)  # rows dropped before stay dropped
    text = Condition(text=torch.randn(3, 4, 8), text_mask=torch.tensor([[1, 1, 0, 0]] * 3, dtype=torch.bool))
    kept = drop_condition(text, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(kept.text_mask, text.text_mask) and torch.equal(kept.text, text.text)


def test_generator_loss_checks_and_draws_every_configured_order(monkeypatch):
    import generator.objectives as objectives

    m = tiny_all("ar")
    ids = torch.randint(0, 64, (2, *GRID), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"objective orders \['clip'\] are not among the model's orders"):
        generator_loss(m, ids, cond2(), ObjectiveConfig(orders=("clip",)))
    drawn = []
    original = objectives.ar_loss
    monkeypatch.setattr(objectives, "ar_loss", lambda *a: drawn.append(a[3]) or original(*a))
    cfg = ObjectiveConfig(orders=("token", "cube"), cond_dropout=0.5)
    with torch.no_grad():
        losses = []
        for global_seed in (1, 2):
            torch.manual_seed(global_seed)  # only the given generator is used
            g = torch.Generator().manual_seed(3)
            losses.append([generator_loss(m, ids, cond2(), cfg, g).loss for _ in range(24)])
    assert set(drawn) == {"token", "cube"} and 10 < drawn.count("cube") < 38  # 48 fair draws: sd 3.5
    assert torch.equal(torch.stack(losses[0]), torch.stack(losses[1]))


def test_maskgit_generator_loss_is_reproducible_from_its_generator():
    m = tiny("maskgit")
    ids = torch.randint(0, 64, (2, *GRID), generator=torch.Generator().manual_seed(0))
    out = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        with torch.no_grad():
            out.append(generator_loss(m, ids, cond2(), ObjectiveConfig(), torch.Generator().manual_seed(3)).loss)
    assert torch.equal(out[0], out[1])


def test_stop_signals_record_the_first_and_hand_the_second_to_the_previous_handler():
    """The first SIGTERM/SIGINT only sets ``signum`` (the loop stops after its step); SIGINT's handler in force before
    is back at once, so a second Ctrl-C interrupts, while a repeated SIGTERM is ignored (Slurm and systemd send it to
    every process of a job, and train_shapes.sh passes it on too: the second one killed the stage before its save);
    after the block nothing of ours is left installed."""
    # The handler in force before is set here, Python's own (it raises KeyboardInterrupt): what an earlier test or
    # library left installed for SIGINT (once it was SIG_IGN, and the second signal was silently ignored) is not this
    # test's business.
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = {s: signal.getsignal(s) for s in StopSignals.SIGNALS}
        with StopSignals() as stop:
            assert all(signal.getsignal(s) == stop._handle for s in StopSignals.SIGNALS)
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signum == signal.SIGTERM  # Python runs the handler before the next bytecode
            assert signal.getsignal(signal.SIGINT) == before[signal.SIGINT]
            os.kill(os.getpid(), signal.SIGTERM)  # the same signal again, from the launcher: still here
            assert stop.signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) == stop._handle
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # the second one: the previous handler
        assert {s: signal.getsignal(s) for s in StopSignals.SIGNALS} == before
    finally:
        signal.signal(signal.SIGINT, saved)


def test_a_resumed_metrics_log_drops_the_killed_runs_unfinished_record(tmp_path):
    """A kill mid-write leaves a record without its newline; the resumed run's first record was glued onto it and the
    loss-curve plot at the end of every later run raised JSONDecodeError before the export."""
    import json

    from videotrain.outputs import MetricsLog

    first = MetricsLog(tmp_path, enabled=True)
    for step in (1, 2, 3):
        first.write(step, {"loss": 1.0 / step})
    first.file.write('{"step": 4, "lo')  # killed here
    first.file.close()
    resumed = MetricsLog(tmp_path, enabled=True, start_step=2)  # from the checkpoint of step 2
    for step in (3, 4):
        resumed.write(step, {"loss": 1.0 / step})
    resumed.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # step 3 of the killed run is logged again, not twice
    assert (tmp_path / "loss_curve.png").stat().st_size > 0


def test_a_non_finite_logged_value_is_a_warning_not_only_a_nan_in_the_file(tmp_path, caplog):
    """The training loss has its guard, but a held-out loss that overflowed went to metrics.jsonl as NaN and was left
    out of loss_curve.png, with nothing in the log."""
    from videotrain.outputs import MetricsLog

    metrics = MetricsLog(tmp_path, enabled=True)
    with caplog.at_level("WARNING", logger="videotrain.outputs"):
        metrics.write(10, {"eval_loss": 0.5})
        assert not caplog.records
        metrics.write(20, {"eval_loss": float("nan"), "other": float("inf"), "fine": 1.0})
    metrics.close()
    [record] = caplog.records
    assert record.getMessage().startswith("step 20: eval_loss, other not finite (written to metrics.jsonl as NaN")


def test_weight_decay_applies_to_linear_and_convolution_weights_only():
    """ "emb" in a parameter's path kept the linear text projections inside `cond_emb` from being decayed."""
    from generator import Generator, GeneratorConfig
    from videotrain.optim import OptimConfig, build_adamw

    m = Generator(GeneratorConfig(cond="text", text_pooled=True, dim=32, depth=1, num_heads=2, target_positions=True))
    opt = build_adamw(m, OptimConfig(weight_decay=0.05))
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    decayed = sorted(n for n, p in m.named_parameters() if decay[id(p)] > 0)
    assert "cond_emb.text_proj.0.weight" in decayed and "head.weight" in decayed
    assert not [n for n in decayed if "null" in n or "pos" in n or "tok_emb" in n or "target_emb" in n]
    assert not [n for n in decayed if n.endswith("bias") or "norm" in n] and len(decay) == len(list(m.parameters()))


@pytest.mark.parametrize(
    ("override", "message"),
    [("objective.cond_dropout=1.5", "objective.cond_dropout must be in [0, 1]"),
     ("objective.label_smoothing=-2", "objective.label_smoothing must be in [0, 1)"),
     ("objective.context_mask_ratio=4", "objective.context_mask_ratio must be in [0, 1)"),
     ("objective.mask_schedule=bogus", "objective.mask_schedule must be one of"),
     ("objective.orders=[nope]", "objective.orders: unknown order(s) ['nope']"),
     ("data.eval_fraction=7", "data.eval_fraction must be in [0, 1)")],
)  # fmt: skip
def test_generator_objective_and_data_settings_are_checked(override, message):
    """Each was accepted: label_smoothing -2 trained to exit 0 on a nonsense loss, eval_fraction 7 left one clip."""
    from core.config import build_config
    from videotrain.generator_task import GeneratorTrainConfig

    with pytest.raises(ValueError, match=re.escape(message)):
        build_config(GeneratorTrainConfig, [], [override])


def test_objective_orders_the_model_lacks_are_refused_before_the_engine(tmp_path):
    from core.config import build_config
    from videotrain.generator_task import GeneratorTrainConfig, GeneratorTrainer

    cfg = build_config(GeneratorTrainConfig, [], ["data.cache=x", "model.orders=[token]", "objective.orders=[cube]"])
    with pytest.raises(ValueError, match=re.escape("objective.orders ['cube'] are not among model.orders ['token']")):
        GeneratorTrainer(cfg, tmp_path / "run")


@pytest.mark.parametrize("text", ['{"zero_optimization": 2}', "[1, 2]"])
def test_a_deepspeed_json_that_is_not_an_engine_config_is_one_line(tmp_path, text):
    """An AttributeError / TypeError traceback inside the trainer before."""
    from videotrain.distributed import deepspeed_config

    (tmp_path / "ds.json").write_text(text)
    with pytest.raises(ValueError, match="must be a JSON object whose 'zero_optimization' is an object"):
        deepspeed_config(
            str(tmp_path / "ds.json"), micro_batch=1, grad_accum=1, grad_clip=0.0, precision="fp32", zero_stage=None
        )


def test_a_resumed_run_may_change_runtime_settings_but_not_the_model_or_the_split(tmp_path):
    from core.config import build_config, save_config
    from videotrain.checkpoint import check_resumable
    from videotrain.generator_task import GeneratorTrainConfig

    save_config(build_config(GeneratorTrainConfig, [], []), tmp_path / "train_config.yaml")
    keys = ("run.seed", "data.eval_fraction")
    for runtime in ("model.attention_backend=xformers", "model.activation_checkpointing=true", "run.steps=5000"):
        check_resumable(tmp_path, build_config(GeneratorTrainConfig, [], [runtime]), keys)  # another machine: fine
    for changed, shown in (("model.depth=2", "model.depth: 8 -> 2"), ("run.seed=3", "run.seed: 0 -> 3"),
                           ("data.eval_fraction=0.1", "data.eval_fraction: 0.02 -> 0.1")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(shown)):
            check_resumable(tmp_path, build_config(GeneratorTrainConfig, [], [changed]), keys)


@pytest.mark.parametrize("rank", ["-1", "one", "1.0"])
def test_a_run_folder_lock_refuses_a_rank_that_is_no_non_negative_integer_before_making_the_folder(
    tmp_path, rank, monkeypatch
):
    """RANK=-1 was taken as rank -1 (a '.train-rank--01.lock' file in a folder made for it) before the launch
    check refused it; the lock now reads RANK as init_distributed does, naming the variable."""
    from videotrain.outputs import RunFolderLock

    monkeypatch.setenv("RANK", rank)
    with pytest.raises(ValueError, match=f"RANK={rank!r} must be a non-negative integer"):
        RunFolderLock(tmp_path / "run")
    assert not (tmp_path / "run").exists()
