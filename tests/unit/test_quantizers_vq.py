"""Unit tests for the VQ quantizer: its EMA and learned codebooks, dead-code restarts, the sphere and saved
state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tests.helpers.tiny_quantizers import (
    SHAPE,
    _seed,  # noqa: F401
    flat,
    latent,
    make,
)
from tokenizer.quantizers import VQ, VQConfig


def ema_vq(**kw: object) -> VQ:
    base = dict(codebook_size=8, dim=3, l2_normalize=False, ema_decay=0.5, dead_code_threshold=0.0)
    return VQ(VQConfig(**{**base, **kw}))


def test_vq_ema_update_moves_codes_toward_assigned_latents() -> None:
    q = ema_vq(ema_decay=0.75).train()
    before = q.codebook.clone()
    z = latent(q)
    ids = q(z).ids.reshape(-1)
    x = flat(z)
    counts = torch.bincount(ids, minlength=8).float()
    sums = torch.zeros(8, 3).index_add_(0, ids, x)
    # Reference: EMA with decay 0.75 from counts 1 and sums = initial codes, Laplace smoothed.
    size = 0.75 * 1.0 + 0.25 * counts
    smoothed = (size + 1e-5) / (size.sum() + 8 * 1e-5) * size.sum()
    torch.testing.assert_close(q.codebook, (0.75 * before + 0.25 * sums) / smoothed[:, None])
    torch.testing.assert_close(q.ema_cluster_size, size)
    used = counts > 0
    assert used.sum() >= 2
    means = sums[used] / counts[used, None]
    assert ((q.codebook[used] - means).norm(dim=1) < (before[used] - means).norm(dim=1)).all()


@pytest.mark.parametrize("use_ema", [True, False])
def test_vq_dead_code_restarted_in_training_only(use_ema: bool) -> None:
    q = ema_vq(use_ema=use_ema, dead_code_threshold=1e-3)
    with torch.no_grad():
        q.codebook[5] = 100.0  # far from every latent: never assigned
        if use_ema:
            q.ema_embed_sum[5] = 100.0
        q.ema_cluster_size[5] = 0.0
    state = {k: v.clone() for k, v in q.state_dict().items()}
    z = latent(q)
    out = q.eval()(z)
    assert out.stats["restarted"] == 0 and (out.ids != 5).all()
    for key, value in q.state_dict().items():
        assert torch.equal(value, state[key]), key
    out = q.train()(z)
    assert out.stats["restarted"] == 1
    assert q.codebook[5].norm() < 10
    # The restarted code counts as used once, then takes this batch's EMA step (decay 0.5).
    torch.testing.assert_close(q.ema_cluster_size[5], 0.5 + 0.5 * (out.ids == 5).sum().float())
    if not use_ema:  # no EMA update of a parameter: only the dead row changed, to a latent
        assert torch.equal(q.codebook[:5], state["codebook"][:5])
        # an exact copy of a latent row (cdist's matrix-product path is ~3e-4 off on some CPU kernels)
        assert (flat(z) == q.codebook[5].detach()).all(dim=1).any()
    assert q.train()(z).stats["restarted"] == 0  # alive again


@pytest.mark.parametrize("use_ema", [True, False])
def test_vq_a_threshold_above_one_does_not_restart_live_codes_for_ever(use_ema: bool) -> None:
    """A restart set the count to 1.0: with dead_code_threshold=2 (a count per batch, which the config accepts) the
    code was dead again at the next forward, and 50 of 64 well-used codes were still restarted at step 300."""
    torch.manual_seed(0)
    q = VQ(VQConfig(codebook_size=64, dim=4, dead_code_threshold=2.0, use_ema=use_ema)).train()
    centres = torch.randn(64, 4)
    restarted = []
    for _ in range(60):  # 1,536 latents from 64 tight clusters: 24 per code per batch, far above the threshold
        z = centres[torch.randint(0, 64, (1536,))] + 0.05 * torch.randn(1536, 4)
        restarted.append(int(q(z.T.reshape(4, 2, 3, 16, 16).transpose(0, 1)).stats["restarted"]))
    assert restarted[0] == 64 and sum(restarted[-20:]) <= 2  # every code at the start (counts start at 1)


def test_vq_restarts_draw_no_random_numbers_and_put_dead_codes_on_distinct_latents() -> None:
    """Restarts are reproducible without the global RNG (a resumed run restarts as the original did), and codes
    that die together are not restarted onto one latent (they would stay duplicates)."""
    q = ema_vq(use_ema=False, dead_code_threshold=1e-3).train()
    with torch.no_grad():
        q.ema_cluster_size.zero_()  # all 8 codes dead
    z = torch.randn(2, 3, 2, 2, 2, generator=torch.Generator().manual_seed(0))  # N = 16 latents
    rng = torch.get_rng_state()
    assert q(z).stats["restarted"] == 8
    assert torch.equal(torch.get_rng_state(), rng)
    same = (q.codebook.detach()[:, None, :] == flat(z)[None]).all(dim=2)  # (8 codes, 16 latents): exact copies
    assert same.any(dim=1).all()  # every code is now a latent of the batch
    assert len(set(same.float().argmax(dim=1).tolist())) == 8  # and no two are the same one


def test_vq_training_takes_an_empty_batch_and_restarts_from_a_single_position() -> None:
    """An empty batch (e.g. the last shard of a split) is a no-op, not a crash; one position is enough to restart."""
    q = ema_vq(dead_code_threshold=1e-3).train()
    out = q(torch.randn(0, 3, 1, 1, 1))
    assert out.ids.shape == (0, 1, 1, 1) and out.stats["restarted"] == 0
    with torch.no_grad():
        q.ema_cluster_size[5] = 0.0
    z = torch.randn(1, 3, 1, 1, 1)
    assert q(z).stats["restarted"] == 1
    assert torch.equal(q.ema_embed_sum[5], z.flatten())  # the dead code restarted at that position


@pytest.mark.parametrize("use_ema", [True, False])
def test_vq_l2_normalized_codes_have_unit_norm(use_ema: bool) -> None:
    q = VQ(VQConfig(codebook_size=16, dim=4, use_ema=use_ema))
    with torch.no_grad():
        q.codebook.mul_(3.0)  # lookup must normalize whatever is stored
    z = latent(q, scale=5.0)
    for mode in (True, False):
        out = q.train(mode)(z)
        torch.testing.assert_close(out.codes.norm(dim=1), torch.ones(SHAPE))
    torch.testing.assert_close(q.ids_to_codes(out.ids).norm(dim=1), torch.ones(SHAPE))
    if use_ema:  # the EMA update stores unit rows
        torch.testing.assert_close(q.codebook.norm(dim=1), torch.ones(16))


def test_vq_learned_codebook_gets_gradient_and_ema_codebook_has_no_parameters() -> None:
    learned = make("vq_learned").train()
    out = learned(latent(learned))
    out.losses["codebook"].backward()
    assert learned.codebook.grad is not None and learned.codebook.grad.abs().sum() > 0
    ema = make("vq").train()
    assert list(ema.parameters()) == [] and set(ema(latent(ema)).losses) == {"commit"}


@pytest.mark.parametrize("use_ema", [True, False])
def test_vq_state_round_trips_through_safetensors(use_ema: bool, tmp_path) -> None:
    q = VQ(VQConfig(codebook_size=16, dim=4, use_ema=use_ema)).train()
    q(latent(q))  # move the EMA state away from its initial value
    save_file({k: v.contiguous() for k, v in q.state_dict().items()}, tmp_path / "vq.safetensors")
    torch.manual_seed(123)
    fresh = VQ(VQConfig(codebook_size=16, dim=4, use_ema=use_ema))
    fresh.load_state_dict(load_file(tmp_path / "vq.safetensors"), strict=True)
    expected = {"codebook", "ema_cluster_size"} | ({"ema_embed_sum"} if use_ema else set())
    assert set(q.state_dict()) == expected
    z = latent(q)
    a, b = q.eval()(z), fresh.eval()(z)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.codes, b.codes)
    assert torch.equal(q.ema_cluster_size, fresh.ema_cluster_size)


def test_vq_on_the_sphere_commits_to_the_normalized_latent_and_codes_to_ids_agrees() -> None:
    """l2_normalize (ViT-VQGAN): each latent row is normalized on its own, the code is the row's most similar unit
    code, the commitment loss is measured against the normalized row, and codes_to_ids gives forward's ids."""
    q = VQ(VQConfig(codebook_size=16, dim=4, commitment_weight=0.25)).eval()
    z = latent(q, scale=5.0) + 1.0  # rows of very different norms
    out = q(z)
    x = F.normalize(flat(z), dim=1)
    codebook = F.normalize(q.codebook, dim=1)
    ref = (x @ codebook.T).argmax(dim=1)
    assert torch.equal(out.ids.reshape(-1), ref)
    torch.testing.assert_close(out.losses["commit"], 0.25 * (x - codebook[ref]).pow(2).mean())
    assert torch.equal(q.codes_to_ids(z), out.ids)
    z.requires_grad_(True)
    q(z).codes.sum().backward()  # straight-through to the row-normalized latent
    torch.testing.assert_close(z.grad, torch.func.vjp(lambda v: F.normalize(v, dim=1), z)[1](torch.ones_like(z))[0])


def test_vq_starts_from_unit_rows_and_its_learned_codebook_loss_follows_the_formula() -> None:
    assert torch.allclose(VQ(VQConfig(codebook_size=32, dim=4)).codebook.norm(dim=1), torch.ones(32))
    q = VQ(VQConfig(codebook_size=16, dim=4, use_ema=False, l2_normalize=False, commitment_weight=0.3,
                    codebook_weight=0.8)).eval()  # fmt: skip
    z = latent(q)
    out = q(z)
    x, code = flat(z), q.codebook[out.ids.reshape(-1)]
    torch.testing.assert_close(out.losses["commit"], 0.3 * (x - code).pow(2).mean())
    torch.testing.assert_close(out.losses["codebook"], 0.8 * (x - code).pow(2).mean())


def test_vq_dead_codes_k_and_k_plus_n_restart_on_different_latents() -> None:
    """Code k took row (k * hash) mod N, the same row for k and k + N: of two dead codes 1 and 5 over N = 4
    latents one won every tie and the other died again."""
    q = ema_vq(codebook_size=8, dead_code_threshold=0.5).train()
    with torch.no_grad():
        q.ema_cluster_size.fill_(5.0)
        q.ema_cluster_size[[1, 5]] = 0.0
    z = torch.randn(1, 3, 1, 2, 2, generator=torch.Generator().manual_seed(0))  # N = 4 latents
    assert q(z).stats["restarted"] == 2
    rows = torch.cdist(q.ema_embed_sum[[1, 5]] / q.ema_cluster_size[[1, 5], None], flat(z)).argmin(dim=1)
    assert rows[0] != rows[1]


def test_vq_ema_state_stays_float32_when_the_module_is_cast() -> None:
    """``.to(bfloat16)`` cast the EMA counts and sums: a 1% step below half a bf16 rounding step was lost, so the
    counts stalled (206 of a true 256 a step); in fp16 their sum overflowed past 65,504 and every code became NaN.
    Here one code takes all 256 latents a step, from a count of 230: each step adds 0.26, under bf16's half step of
    0.5 there, so the old bf16 count stayed at 230 while the fp32 one rose to 234.7 in 20 steps."""
    z = torch.randn(4, 3, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # 256 latents
    ref = ema_vq(codebook_size=1, ema_decay=0.99).train()
    ref.ema_cluster_size.fill_(230.0)
    for dtype in (torch.bfloat16, torch.float16):
        q = ema_vq(codebook_size=1, ema_decay=0.99).to(dtype).train()
        assert q.ema_cluster_size.dtype == q.ema_embed_sum.dtype == torch.float32 and q.codebook.dtype == dtype
        q.ema_cluster_size.fill_(230.0)
        for _ in range(20):
            q(z.to(dtype))
        assert float(q.ema_cluster_size) > 234.0
    for _ in range(20):
        ref(z)
    assert abs(float(q.ema_cluster_size - ref.ema_cluster_size)) < 0.01
    q = ema_vq(codebook_size=4).half().train()
    q.ema_cluster_size.fill_(30_000.0)  # sums to 120,000, above fp16's 65,504
    q(z.half())
    assert q.codebook.isfinite().all()
    assert q.float().ema_cluster_size.dtype == torch.float32
