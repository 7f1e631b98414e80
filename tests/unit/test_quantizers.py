"""Unit tests for the VQ, FSQ, LFQ and BSQ quantizers, against formulas written out here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from core.config import from_dict
from tests.helpers.refusals import refused_exactly
from tokenizer.quantizers import (
    BSQ,
    FSQ,
    LFQ,
    QUANTIZERS,
    VQ,
    BSQConfig,
    FSQConfig,
    LFQConfig,
    Quantizer,
    VQConfig,
)

SHAPE = (2, 3, 4, 4)  # (B, t, h, w)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make(name: str) -> Quantizer:
    """Tiny quantizers; group sizes below D so that the grouped path is exercised."""
    return {
        "vq": lambda: VQ(VQConfig(codebook_size=64, dim=4)),
        "vq_learned": lambda: VQ(VQConfig(codebook_size=64, dim=4, use_ema=False, l2_normalize=False)),
        "fsq": lambda: FSQ(FSQConfig(levels=(2, 3, 4, 5))),
        "lfq": lambda: LFQ(LFQConfig(dim=6, entropy_group_size=4)),
        "bsq": lambda: BSQ(BSQConfig(dim=6, entropy_group_size=4)),
    }[name]()


NAMES = ["vq", "vq_learned", "fsq", "lfq", "bsq"]


def latent(q: Quantizer, scale: float = 1.0) -> torch.Tensor:
    b, t, h, w = SHAPE
    return torch.randn(b, q.dim, t, h, w) * scale


def sign_grid(dim: int) -> torch.Tensor:
    """(2**dim, dim) all sign vectors; row k has +1 at channel i iff bit i of k is set."""
    rows = [tuple(reversed(bits)) for bits in itertools.product((-1.0, 1.0), repeat=dim)]
    return torch.tensor(rows)  # itertools varies the last element fastest; reversed: channel 0


def flat(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 4, 1).reshape(-1, x.shape[1])  # (B, D, t, h, w) -> (N, D)


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


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


def test_grouped_code_entropy_runs_in_the_latents_precision() -> None:
    """float64 latents get float64 codes: the entropies match full enumeration to double precision."""
    from tokenizer.quantizers.sign import enumerate_signs, grouped_code_entropy

    x = torch.randn(50, 4, dtype=torch.float64)
    per_sample, codebook = grouped_code_entropy(x, enumerate_signs(4), 4, 1.0, 0.5)
    ref = soft_entropies(x, sign_grid(4).double(), 0.5)
    assert per_sample.dtype == torch.float64
    torch.testing.assert_close(per_sample, ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(codebook, ref[1], rtol=1e-12, atol=1e-12)


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


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (2, 3, 4, 5)])
def test_fsq_matches_nearest_neighbour_over_enumerated_grid(levels: tuple[int, ...]) -> None:
    q = FSQ(FSQConfig(levels=levels))
    z = latent(q, scale=2.0)
    out = q(z)
    # The paper's bound, written out per channel.
    bounded = torch.empty_like(z)
    for i, level in enumerate(levels):
        half_l = (level - 1) * (1 - 1e-3) / 2
        offset = 0.5 if level % 2 == 0 else 0.0
        bounded[:, i] = torch.tanh(z[:, i] + math.tan(offset / half_l)) * half_l - offset
    # Implicit codebook, row k = id k with channel 0 the fastest digit, in normalized units.
    axes = [[(v - level // 2) / (level // 2) for v in range(level)] for level in levels]
    grid = torch.tensor([tuple(reversed(c)) for c in itertools.product(*reversed(axes))])
    assert grid.shape == (math.prod(levels), len(levels))
    scale = torch.tensor([level // 2 for level in levels], dtype=torch.float)
    nearest = torch.cdist(flat(bounded) / scale, grid).argmin(dim=1)  # (N,)
    assert torch.equal(out.ids.reshape(-1), nearest)
    torch.testing.assert_close(flat(out.codes), grid[nearest], rtol=0, atol=1e-6)
    assert out.losses == {} and out.codes.abs().max() <= 1.0


def soft_entropies(x: torch.Tensor, codes: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample and codebook entropy of softmax(-||x - c||^2 / T) over all codes."""
    p = (-torch.cdist(x, codes).pow(2) / temperature).softmax(dim=1)  # (N, K)
    return entropy(p).mean(), entropy(p.mean(dim=0))


@pytest.mark.parametrize("cls, cfg_cls", [(LFQ, LFQConfig), (BSQ, BSQConfig)])
def test_binary_quantizers_match_full_enumeration(cls: type, cfg_cls: type) -> None:
    dim, temperature = 6, (1.0 if cls is LFQ else 0.2)
    kw = dict(dim=dim, entropy_temperature=temperature, entropy_weight=0.3, codebook_entropy_weight=0.7)
    q = cls(cfg_cls(**kw, entropy_group_size=dim))
    z = latent(q)
    out = q(z)
    x = flat(z) if cls is LFQ else F.normalize(flat(z), dim=1)
    grid = sign_grid(dim) if cls is LFQ else sign_grid(dim) / math.sqrt(dim)
    # LFQ: nearest corner; BSQ: largest inner product with the unit-norm latent.
    ref = torch.cdist(x, grid).argmin(dim=1) if cls is LFQ else (x @ grid.T).argmax(dim=1)
    assert torch.equal(out.ids.reshape(-1), ref)
    torch.testing.assert_close(flat(out.codes), grid[ref], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.losses["commit"], 0.25 * (x - grid[ref]).pow(2).mean())
    per_sample, codebook = soft_entropies(x, grid, temperature)
    assert per_sample > 1e-2 and codebook > 1e-2  # the comparison below is not vacuous
    torch.testing.assert_close(out.stats["per_sample_entropy"], per_sample)
    torch.testing.assert_close(out.stats["codebook_entropy"], codebook)
    torch.testing.assert_close(out.losses["entropy"], 0.3 * (per_sample - 0.7 * codebook))
    # Split into groups of 4 + 2 bits: per-sample entropy stays exact, codebook entropy is
    # the sum of marginal entropies, which can only exceed the joint one.
    grouped = cls(cfg_cls(**kw, entropy_group_size=4))(z)
    torch.testing.assert_close(grouped.stats["per_sample_entropy"], per_sample)
    assert grouped.stats["codebook_entropy"] >= codebook - 1e-5
    if cls is BSQ:
        torch.testing.assert_close(out.codes.norm(dim=1), torch.ones(SHAPE))


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


@pytest.mark.parametrize(
    "cfg_cls, kw",
    [
        (FSQConfig, dict(levels=(1, 5))),
        (FSQConfig, dict(levels=())),
        (FSQConfig, dict(levels=(8, 513))),  # a bf16 decoder merged neighbouring values (1002: outermost never made)
        (LFQConfig, dict(dim=0)),
        (BSQConfig, dict(entropy_group_size=0)),
        (LFQConfig, dict(entropy_temperature=0.0)),
        (VQConfig, dict(ema_decay=1.0)),
        (VQConfig, dict(codebook_size=0)),
        # NaN passed every `x < 0` / `x <= 0` check
        (FSQConfig, dict(bound_range=math.nan)),
        (LFQConfig, dict(entropy_temperature=math.nan)),
        (BSQConfig, dict(entropy_weight=math.nan)),
        (VQConfig, dict(ema_epsilon=math.nan)),
        (VQConfig, dict(commitment_weight=math.nan)),
    ],
)
def test_bad_config_raises_value_error(cfg_cls: type, kw: dict) -> None:
    with pytest.raises(ValueError, match=cfg_cls.__name__):
        cfg_cls(**kw)


@pytest.mark.parametrize("cfg_cls", [LFQConfig, BSQConfig])
def test_binary_config_bounds_are_inclusive_and_errors_name_the_field(cfg_cls: type) -> None:
    """dim in [1, 24], entropy_group_size in [1, 16], weights >= 0: the ends are valid, one past them is not."""
    name = cfg_cls.__name__
    for dim in (1, 24):
        assert cfg_cls(dim=dim, entropy_group_size=1).dim == dim
    assert cfg_cls(dim=16, entropy_group_size=16).entropy_group_size == 16
    zero = dict(commitment_weight=0.0, entropy_weight=0.0, codebook_entropy_weight=0.0)
    assert cfg_cls(**zero).entropy_weight == 0.0
    bad = {
        rf"{name}.dim must lie in \[1, 24\], got 25": dict(dim=25),
        rf"{name}.dim must lie in \[1, 24\], got 0": dict(dim=0),
        rf"{name}.entropy_group_size must lie in \[1, 16\], got 17": dict(dim=20, entropy_group_size=17),
        rf"{name}.entropy_group_size must lie in \[1, 16\], got 0": dict(entropy_group_size=0),
        rf"{name}.entropy_temperature must be > 0, got 0.0": dict(entropy_temperature=0.0),
        rf"{name}.codebook_entropy_weight must be >= 0, got -0.5": dict(codebook_entropy_weight=-0.5),
    }
    refused_exactly(cfg_cls, bad)


def test_vq_config_bounds_are_inclusive_and_errors_say_which_setting() -> None:
    """A codebook of one code, dim 1, EMA decay 0 and zero loss weights are valid; past each bound is not."""
    for ok in (dict(codebook_size=1), dict(dim=1), dict(ema_decay=0.0), dict(ema_epsilon=1e-12),
               dict(commitment_weight=0.0, codebook_weight=0.0, dead_code_threshold=0.0)):  # fmt: skip
        VQConfig(**ok)
    bad = {
        r"VQConfig: codebook_size and dim must be >= 1, got 0, 8": dict(codebook_size=0, dim=8),
        r"VQConfig: codebook_size and dim must be >= 1, got 16, 0": dict(codebook_size=16, dim=0),
        r"VQConfig.ema_decay must lie in \[0, 1\), got -0.1": dict(ema_decay=-0.1),
        r"VQConfig.ema_epsilon must be > 0, got 0.0": dict(ema_epsilon=0.0),
        r"VQConfig.codebook_weight must be >= 0, got -1.0": dict(codebook_weight=-1.0),
    }
    refused_exactly(VQConfig, bad)


def test_fsq_config_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"^FSQConfig.bound_loss_weight must be >= 0 and bound_range > 0$"):
        FSQConfig(bound_loss_weight=-1.0)


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


def test_fsq_bound_loss_penalizes_only_saturated_latents():
    from tokenizer.quantizers.fsq import FSQ, FSQConfig

    q = FSQ(FSQConfig(levels=(7, 5), bound_loss_weight=1.0))
    calm = torch.full((1, 2, 1, 2, 2), 0.5)
    assert float(q(calm).losses["bound"]) == 0.0
    hot = torch.full((1, 2, 1, 2, 2), 6.0, requires_grad=True)
    loss = q(hot).losses["bound"]
    loss.backward()
    loss = loss.detach()
    assert loss.item() > 10 and hot.grad.min().item() > 0  # pushes |z| back towards tanh's range
    assert FSQ(FSQConfig(levels=(7, 5))).forward(hot).losses == {}


def test_fsq_codes_and_ids_follow_the_paper_formulas():
    """FSQ (Mentzer et al. 2023): bound(z) = tanh(z + shift) * half_l - offset with half_l = (L - 1)(1 - eps) / 2,
    offset 0.5 for even L, shift = tan(offset / half_l); codes round(bound) / (L // 2); ids are mixed-radix
    digits (round(bound) + L // 2), first channel least significant."""
    levels = (8, 5, 3)
    q = FSQ(FSQConfig(levels=levels))
    z = torch.tensor([0.3, -1.7, 2.5]).view(1, 3, 1, 1, 1)
    eps = 1e-3
    digits, codes = [], []
    for zi, L in zip(z.flatten().tolist(), levels):
        half_l = (L - 1) * (1 - eps) / 2
        offset = 0.5 if L % 2 == 0 else 0.0
        bounded = math.tanh(zi + math.tan(offset / half_l)) * half_l - offset
        digits.append(round(bounded) + L // 2)
        codes.append(round(bounded) / (L // 2))
    out = q(z)
    assert out.ids.item() == digits[0] + 8 * digits[1] + 8 * 5 * digits[2]
    assert torch.allclose(out.codes.flatten(), torch.tensor(codes))
    assert q.codebook_size == 8 * 5 * 3


def test_lfq_and_bsq_ids_are_sign_bits_and_codes_their_scaled_signs():
    """LFQ (MAGVIT-v2): code = sign(z) in {-1, 1}^D, id = sum_i [z_i > 0] 2^i. BSQ (Zhao et al. 2024): the same
    bits after projecting z onto the unit sphere, code = sign / sqrt(D)."""
    z = torch.tensor([0.4, -2.0, 0.1, -0.3, 5.0]).view(1, 5, 1, 1, 1)
    expected_id = 1 * 1 + 0 * 2 + 1 * 4 + 0 * 8 + 1 * 16
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    lfq = LFQ(LFQConfig(dim=5))
    out = lfq(z)
    assert out.ids.item() == expected_id and torch.equal(out.codes.flatten(), signs)
    bsq = BSQ(BSQConfig(dim=5))
    out = bsq(z)
    assert out.ids.item() == expected_id
    assert torch.allclose(out.codes.flatten(), signs / math.sqrt(5)) and abs(out.codes.norm().item() - 1) < 1e-6
    assert torch.equal(bsq.ids_to_codes(torch.tensor([[[[expected_id]]]])).flatten(), signs / math.sqrt(5))


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


def test_fsq_codes_to_ids_sends_off_grid_codes_to_the_nearest_grid_code() -> None:
    q = FSQ(FSQConfig(levels=(8, 5)))
    codes = torch.tensor([3.0, -3.0]).view(1, 2, 1, 1, 1)  # beyond +1 and -1
    assert q.codes_to_ids(codes).item() == 7 + 8 * 0  # the top digit of the first channel, the bottom of the second
    assert q.codes_to_ids(-codes).item() == 0 + 8 * 4


def test_sign_quantizers_send_an_exact_zero_to_bit_zero() -> None:
    """The documented convention: x_i == 0 counts as bit 0, code -code_scale."""
    z = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1, 1)
    for q in (LFQ(LFQConfig(dim=3)), BSQ(BSQConfig(dim=3))):
        out = q(z)
        assert out.ids.item() == 2
        assert (out.codes.flatten()[[0, 2]] < 0).all()
        assert q.codes_to_ids(z).item() == 2  # the same convention for a latent given to codes_to_ids


def test_fsq_bound_and_bound_loss_follow_their_formulas_for_even_levels() -> None:
    """Even L has offset 0.5 and a non-zero shift: bound(z) = tanh(z + shift) * half_l - offset, and the bound loss
    is weight * mean(relu(|z + shift| - bound_range)^2)."""
    levels, eps, weight, limit = (8, 5), 1e-3, 0.7, 1.5
    q = FSQ(FSQConfig(levels=levels, bound_loss_weight=weight, bound_range=limit))
    z = torch.tensor([[-3.0, 0.2], [2.5, -0.4], [1.7, 3.1]]).T.reshape(1, 2, 1, 1, 3)  # (B, D, t, h, w)
    expected_bound, expected_excess = torch.empty_like(z), torch.empty_like(z)
    for c, L in enumerate(levels):
        half_l = (L - 1) * (1 - eps) / 2
        offset = 0.5 if L % 2 == 0 else 0.0
        shift = math.tan(offset / half_l)
        expected_bound[:, c] = torch.tanh(z[:, c] + shift) * half_l - offset
        expected_excess[:, c] = ((z[:, c] + shift).abs() - limit).clamp_min(0)
    torch.testing.assert_close(q.bound(z), expected_bound)
    torch.testing.assert_close(q(z).losses["bound"], weight * expected_excess.square().mean())


def test_fsq_config_checks_its_bound_settings_and_codebook_size() -> None:
    FSQConfig(levels=(5, 5), bound_range=0.5)  # any positive range is valid
    for kw in (dict(bound_range=0.0), dict(bound_loss_weight=-0.1)):
        with pytest.raises(ValueError, match="FSQConfig.bound_loss_weight must be >= 0 and bound_range > 0"):
            FSQConfig(levels=(5, 5), **kw)
    with pytest.raises(ValueError, match="FSQConfig"):
        FSQConfig(levels=(2,) * 62)  # 2**62 codes: ids would not fit an int64 comfortably


def test_vq_starts_from_unit_rows_and_its_learned_codebook_loss_follows_the_formula() -> None:
    assert torch.allclose(VQ(VQConfig(codebook_size=32, dim=4)).codebook.norm(dim=1), torch.ones(32))
    q = VQ(VQConfig(codebook_size=16, dim=4, use_ema=False, l2_normalize=False, commitment_weight=0.3,
                    codebook_weight=0.8)).eval()  # fmt: skip
    z = latent(q)
    out = q(z)
    x, code = flat(z), q.codebook[out.ids.reshape(-1)]
    torch.testing.assert_close(out.losses["commit"], 0.3 * (x - code).pow(2).mean())
    torch.testing.assert_close(out.losses["codebook"], 0.8 * (x - code).pow(2).mean())


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


def test_fsq_ids_do_not_change_when_the_module_is_cast_to_half_precision() -> None:
    """Its bounds were float buffers, so ``.to(bfloat16)`` rounded half_l (2.997 -> 3.0) and the same fp32 latents
    got other ids (about 0.5% of them for these levels)."""
    q = FSQ(FSQConfig(levels=(7, 5, 5, 5, 5)))
    z = torch.randn(8, 5, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 2
    ref = q(z).ids
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(q.to(dtype)(z).ids, ref), dtype


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
