"""Training pieces pinned by their maths: EMA, activation checkpointing, label smoothing, context_mask_ratio."""

import torch

from generator import Condition, Generator, ObjectiveConfig, generator_loss, make_layout
from generator.objectives import ar_loss, maskgit_loss
from generator.units import causal_mask
from tests.unit.test_generator import GRID, cond2, tiny
from videotrain.ema import EMA


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
    seen = []
    original = Generator.forward

    def spy(self, x, cond, cache=None, **kw):
        seen.append(x.detach().clone())
        return original(self, x, cond, cache, **kw)

    monkeypatch.setattr(Generator, "forward", spy)
    mask_id = m.config.mask_id
    for ratio in (0.0, 0.3):
        seen.clear()
        cfg = ObjectiveConfig(cond_dropout=0.0, context_mask_ratio=ratio)
        with torch.no_grad():
            maskgit_loss(m, ids, Condition(labels=torch.zeros(64, dtype=torch.long)), "frame", cfg,
                         torch.Generator().manual_seed(2))  # fmt: skip
        clean, noisy = seen[0][:, :L], seen[0][:, L:]
        share = (clean == mask_id).float().mean().item()
        assert abs(share - ratio) < 0.03, (ratio, share)  # 3,072 draws: binomial std < 0.01
        kept = clean != mask_id
        seq = make_layout(GRID, "frame").to_sequence(ids)
        assert torch.equal(clean[kept], seq[kept])  # unmasked context tokens are the clean tokens
        assert (noisy == mask_id).any() and ((noisy == mask_id) | (noisy == seq)).all()  # the masked stream
