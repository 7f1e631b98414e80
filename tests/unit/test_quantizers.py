"""Unit tests that every quantizer (VQ, FSQ, LFQ, BSQ) must pass: round trips, gradients, dtypes,
usage statistics and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.config import from_dict
from tests.helpers.tiny_quantizers import (
    NAMES,
    SHAPE,
    _seed,  # noqa: F401
    latent,
    make,
)
from tokenizer.quantizers import FSQ, LFQ, QUANTIZERS, VQ, FSQConfig, LFQConfig, Quantizer, VQConfig


@pytest.mark.parametrize("name", NAMES)
def test_ids_codes_round_trip(name: str) -> None:
    q = make(name).eval()
    z = latent(q)
    out = q(z)
    assert out.codes.shape == z.shape and out.ids.shape == SHAPE and out.ids.dtype == torch.long
    assert 0 <= int(out.ids.min()) and int(out.ids.max()) < q.codebook_size
    torch.testing.assert_close(q.ids_to_codes(out.ids), out.codes, rtol=0, atol=1e-6)
    assert torch.equal(q.codes_to_ids(out.codes), out.ids)
    if name != "fsq":  # FSQ re-bounds its input, so only codes_to_ids inverts its codes
        assert torch.equal(q(out.codes).ids, out.ids)
    # Every id maps to a distinct code and back.
    all_ids = torch.arange(q.codebook_size).view(1, -1, 1, 1)
    assert torch.equal(q.codes_to_ids(q.ids_to_codes(all_ids)), all_ids)


@pytest.mark.parametrize("name", NAMES)
def test_codes_come_back_in_the_latents_dtype(name: str) -> None:
    """A bf16 encoder (autocast, ``VideoPipeline.to(dtype=bfloat16)``) gets bf16 codes for its bf16 decoder; the
    quantizer computes in fp32 inside, so the ids are those of the fp32 latent."""
    q = make(name).eval()
    z = latent(q).to(torch.bfloat16)
    out = q(z)
    assert out.codes.dtype == torch.bfloat16
    assert torch.equal(out.ids, q(z.float()).ids)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_flows_through_ste(name: str) -> None:
    q = make(name).train()
    z = latent(q).requires_grad_()
    weight = torch.randn_like(z)
    out = q(z)
    for loss in out.losses.values():
        assert loss.ndim == 0 and torch.isfinite(loss)
    (out.codes * weight).sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    if name in ("lfq", "vq_learned"):  # the STE is the identity on an unnormalized latent
        torch.testing.assert_close(z.grad, weight)
    z.grad = None
    out = q(z)
    if out.losses:
        sum(out.losses.values()).backward()
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def latent_for_ids(q: Quantizer, ids: torch.Tensor) -> torch.Tensor:
    """A latent that quantizes to ``ids``; FSQ only supports the ids 0 and K - 1 here."""
    if isinstance(q, FSQ):
        assert set(ids.unique().tolist()) <= {0, q.codebook_size - 1}
        sign = (ids == q.codebook_size - 1).float() * 2 - 1  # saturate every channel
        return sign[:, None].expand(-1, q.dim, -1, -1, -1) * 10.0
    return q.ids_to_codes(ids)


@pytest.mark.parametrize("name", NAMES)
def test_usage_and_perplexity_on_constructed_batch(name: str) -> None:
    q = make(name).eval()
    k = q.codebook_size
    ids = torch.zeros(SHAPE, dtype=torch.long)
    stats = q(latent_for_ids(q, ids)).stats
    torch.testing.assert_close(stats["usage"], torch.tensor(1 / k))
    torch.testing.assert_close(stats["perplexity"], torch.tensor(1.0))
    ids[0] = k - 1  # half the positions on the last code
    out = q(latent_for_ids(q, ids))
    assert torch.equal(out.ids, ids)
    torch.testing.assert_close(out.stats["usage"], torch.tensor(2 / k))
    torch.testing.assert_close(out.stats["perplexity"], torch.tensor(2.0))
    if name != "fsq":  # counts 1/2, 1/4, 1/4: perplexity 2 ** 1.5
        ids[1, :, :2] = 5
        out = q(latent_for_ids(q, ids))
        torch.testing.assert_close(out.stats["usage"], torch.tensor(3 / k))
        torch.testing.assert_close(out.stats["perplexity"], torch.tensor(2**1.5))


def test_stateless_quantizers_save_nothing() -> None:
    for name in ("fsq", "lfq", "bsq"):
        assert make(name).state_dict() == {}


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_value_error(name: str) -> None:
    q = make(name)
    d, (b, t, h, w) = q.dim, SHAPE
    shape_msg = rf"\(B, {d}, t, h, w\)"
    with pytest.raises(ValueError, match=shape_msg):
        q(torch.randn(b, d, h, w))  # rank 4
    with pytest.raises(ValueError, match=shape_msg):
        q(torch.randn(b, d + 1, t, h, w))
    with pytest.raises(ValueError, match=shape_msg):
        q.codes_to_ids(torch.randn(b, d + 1, t, h, w))
    with pytest.raises(ValueError, match=r"\(B, t, h, w\)"):
        q.ids_to_codes(torch.zeros(b, t, h, dtype=torch.long))
    with pytest.raises(ValueError, match=rf"\[0, {q.codebook_size}\)"):
        q.ids_to_codes(torch.full(SHAPE, q.codebook_size))
    with pytest.raises(ValueError, match=rf"\[0, {q.codebook_size}\)"):
        q.ids_to_codes(torch.full(SHAPE, -1))
    with pytest.raises(ValueError, match="integer"):
        q.ids_to_codes(torch.zeros(SHAPE))


def test_usage_stats_count_a_code_hit_once_and_a_batch_of_one() -> None:
    """usage: the share of codes hit at least once; perplexity: exp of the entropy of the id histogram."""
    from tokenizer.quantizers.base import usage_stats

    stats = usage_stats(torch.tensor([0, 0, 1]), 4)  # code 1 hit once
    torch.testing.assert_close(stats["usage"], torch.tensor(0.5))
    p = torch.tensor([2 / 3, 1 / 3])
    torch.testing.assert_close(stats["perplexity"], (-(p * p.log()).sum()).exp())
    one = usage_stats(torch.tensor([3]), 4)  # a single position
    torch.testing.assert_close(one["usage"], torch.tensor(0.25))
    torch.testing.assert_close(one["perplexity"], torch.tensor(1.0))


def test_a_huge_fsq_codebook_quantizes_without_a_histogram_over_every_code() -> None:
    """FSQ allows codebooks up to 2**62; the usage statistics allocated a bin per code (8 TB at 2**40)."""
    q = FSQ(FSQConfig(levels=(512,) * 5))  # 2**45 codes
    out = q(torch.randn(2, 5, 1, 3, 3))
    n = len(torch.unique(out.ids))
    torch.testing.assert_close(out.stats["usage"], torch.tensor(n / 2**45))
    assert 1 <= float(out.stats["perplexity"]) <= n + 1e-3
    small = usage_stats_both_ways(torch.tensor([5, 5, 7, 9]), 16)
    torch.testing.assert_close(small[0]["usage"], small[1]["usage"])
    torch.testing.assert_close(small[0]["perplexity"], small[1]["perplexity"])


def usage_stats_both_ways(ids: torch.Tensor, codebook_size: int) -> tuple[dict, dict]:
    """usage_stats with a dense histogram and with the sparse count of the codes that occur."""
    import tokenizer.quantizers.base as base

    dense = base.usage_stats(ids, codebook_size)
    limit = base.DENSE_USAGE_MAX
    base.DENSE_USAGE_MAX = 0
    try:
        return dense, base.usage_stats(ids, codebook_size)
    finally:
        base.DENSE_USAGE_MAX = limit


def test_registry_builds_default_quantizers_from_yaml_style_dicts() -> None:
    expected = {"vq": (8, 1024), "fsq": (4, 1000), "lfq": (10, 1024), "bsq": (10, 1024)}
    assert set(QUANTIZERS) == set(expected)
    for name, (cls, cfg_cls) in QUANTIZERS.items():
        q = cls(cfg_cls())
        assert isinstance(q, Quantizer) and (q.dim, q.codebook_size) == expected[name]
    fsq = FSQ(from_dict(FSQConfig, {"levels": [4, 4]}))
    assert fsq.config.levels == (4, 4) and fsq.codebook_size == 16


@pytest.mark.parametrize("name, label", [("vq", "VQ"), ("fsq", "FSQ"), ("lfq", "LFQ"), ("bsq", "BSQ")])
def test_error_messages_name_the_quantizer(name: str, label: str) -> None:
    q = make(name)
    b, t, h, w = SHAPE
    with pytest.raises(ValueError, match=rf"^{label} expects a latent"):
        q(torch.randn(b, q.dim + 1, t, h, w))
    for not_a_tensor in ([[0.0]], np.zeros((b, q.dim, t, h, w), np.float32)):  # an AttributeError (z.device) before
        with pytest.raises(ValueError, match=rf"^{label} expects a latent torch.Tensor"):
            q(not_a_tensor)
    with pytest.raises(ValueError, match=rf"^{label} expects a latent"):
        q.codes_to_ids(torch.randn(b, q.dim + 1, t, h, w))
    with pytest.raises(ValueError, match=rf"^{label} expects ids"):
        q.ids_to_codes(torch.zeros(b, t, h, dtype=torch.long))


def test_quantizers_choose_and_score_codes_in_fp32_under_a_bf16_autocast() -> None:
    """``run.precision=bf16`` on CPU trains through autocast, which ran the VQ distance matmul and the LFQ entropy
    logits (~10^3, where bf16's step is 4-8) in bf16: ~2.5% of VQ ids were not the nearest code, and the LFQ entropy
    loss was off by a factor ~2."""
    g = torch.Generator().manual_seed(0)
    vq = VQ(VQConfig(codebook_size=512, dim=8, l2_normalize=False)).eval()
    lfq = LFQ(LFQConfig(dim=10, entropy_group_size=10)).train()
    z_vq = torch.randn(4, 8, 4, 8, 8, generator=g)
    z_lfq = torch.randn(4, 10, 2, 4, 4, generator=g) * 0.5
    ref_ids, ref_losses = vq(z_vq).ids, lfq(z_lfq).losses
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ids, losses = vq(z_vq).ids, lfq(z_lfq).losses
    assert torch.equal(ids, ref_ids)
    for name, value in ref_losses.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_a_nan_latent_gives_valid_ids_and_a_nan_loss_or_codes(name: str) -> None:
    """FSQ cast a NaN latent to int64's minimum digit, and its usage bincount raised: one overflow in the encoder
    stopped the run, where the trainer's guard drops a batch whose loss is not finite. Every quantizer must return
    ids in range and let the NaN through, to the codes or a loss."""
    q = make(name).train()
    z = latent(q)
    z[0, :, 0, 0, 0] = float("nan")
    out = q(z)
    assert int(out.ids.min()) >= 0 and int(out.ids.max()) < q.codebook_size
    assert not out.codes.isfinite().all() or any(not v.isfinite() for v in out.losses.values())
