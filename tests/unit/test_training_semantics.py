"""The training objectives pinned by their maths: GPT-style and MaskGIT losses, label smoothing,
context_mask_ratio, training masks, condition dropout and activation checkpointing."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from generator import Condition, Generator, ObjectiveConfig, generator_loss, make_layout
from generator.objectives import ar_loss, maskgit_loss
from generator.sampling import DecodeContext, SamplingConfig
from generator.sampling.context import START_COORDS
from generator.schedules import gamma, training_mask
from generator.units import causal_mask
from tests.helpers.tiny_generator import GRID, cond2, tiny, tiny_all


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
