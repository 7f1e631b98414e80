"""MaskGIT predictor-corrector rounds: each generated token is scored with its own position masked, the least
likely are drawn again given all the others, and context tokens are never touched."""

from types import SimpleNamespace

import pytest
import torch

from generator.sampling import SamplingConfig, sample_maskgit
from generator.sampling.maskgit import CORRECTOR_GROUPS, _correct
from tests.helpers.tiny_generator import GRID, cond2, tiny

V, MASK = 8, 8  # a vocabulary of 8 codes; the mask id is the next one


class FixedModel:
    """Stands in for a DecodeContext: every position prefers code 0, finds code 1 plausible and code 5 unlikely,
    whatever it sees. Records the ids of every call."""

    model = SimpleNamespace(config=SimpleNamespace(mask_id=MASK))

    def __init__(self):
        self.calls: list[torch.Tensor] = []

    def logits(self, ids, coords, *, keep, progress):
        self.calls.append(ids.clone())
        out = torch.full((*ids.shape, V), -20.0)
        out[..., 0], out[..., 1], out[..., 5] = 0.0, -1.0, -10.0
        return out


def _unit() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A filled unit of 2 rows x 64 tokens: the first 4 positions are context; codes 0 and 1 everywhere, and
    code 5 (unlikely) at three generated and two context positions of each row."""
    g = torch.Generator().manual_seed(0)
    cur = torch.randint(0, 2, (2, 64), generator=g)
    free = torch.ones(64, dtype=torch.bool)
    free[:4] = False
    bad = torch.tensor([[9, 30, 61], [12, 13, 50]])
    cur = cur.scatter(1, bad, 5)
    cur[:, :2] = 5  # unlikely context tokens
    return cur, free, bad


def test_a_round_redraws_exactly_the_least_likely_generated_tokens():
    ctx, (cur, free, bad) = FixedModel(), _unit()
    sc = SamplingConfig(temperature=0.0, corrector_rounds=1, corrector_fraction=3 / 60)  # 3 of 60 generated
    out = _correct(ctx, cur, free, torch.zeros(64, 3), sc, torch.Generator().manual_seed(1), 1.0)
    for row in range(2):
        assert out[row, bad[row]].tolist() == [0, 0, 0]  # the unlikely ones are drawn again (greedy: code 0)
    changed = (out != cur).nonzero().tolist()
    assert sorted(changed) == sorted([r, int(p)] for r in range(2) for p in bad[r])  # nothing else moved,
    assert out[:, :2].tolist() == [[5, 5], [5, 5]]  # the plausible code 1s and the context included


def test_each_generated_token_is_scored_once_with_its_own_position_masked():
    ctx, (cur, free, _) = FixedModel(), _unit()
    sc = SamplingConfig(temperature=0.0, corrector_rounds=1, corrector_fraction=0.05)
    _correct(ctx, cur, free, torch.zeros(64, 3), sc, torch.Generator().manual_seed(2), 1.0)
    probes = ctx.calls[:CORRECTOR_GROUPS]
    masked = torch.stack([p[0] == MASK for p in probes])  # (G, 64)
    assert masked.sum(0)[4:].tolist() == [1] * 60  # every generated position in exactly one probe
    assert not masked[:, :4].any()  # context positions never masked
    assert masked.sum(1).tolist() == [15] * CORRECTOR_GROUPS  # a quarter at a time
    # the draw that follows sees only the re-masked tokens masked
    assert int((ctx.calls[CORRECTOR_GROUPS][0] == MASK).sum()) == 3


@pytest.mark.parametrize(
    ("generated", "sizes"), [(5, [2, 1, 1, 1]), (6, [2, 2, 1, 1]), (3, [1, 1, 1]), (9, [3, 2, 2, 2])]
)
def test_a_unit_whose_generated_count_is_not_a_multiple_of_four_is_still_scored_a_quarter_at_a_time(generated, sizes):
    """chunk(4) of 5 positions made groups of 2, 2 and 1 (40% masked at once) and of 6 three groups of 2."""
    ctx, (cur, _, _) = FixedModel(), _unit()
    free = torch.zeros(64, dtype=torch.bool)
    free[4 : 4 + generated] = True
    sc = SamplingConfig(temperature=0.0, corrector_rounds=1, corrector_fraction=0.05)
    _correct(ctx, cur, free, torch.zeros(64, 3), sc, torch.Generator().manual_seed(2), 1.0)
    probes = ctx.calls[: len(sizes)]
    assert sorted((int((p[0] == MASK).sum()) for p in probes), reverse=True) == sizes
    assert torch.stack([p[0] == MASK for p in probes]).sum(0)[4 : 4 + generated].tolist() == [1] * generated


@pytest.mark.parametrize("order", ["clip", "frame"])
def test_corrector_keeps_the_context_and_returns_codes(order):
    m = tiny("maskgit")
    context = torch.randint(0, 64, (2, 1, *GRID[1:]), generator=torch.Generator().manual_seed(7))
    sc = SamplingConfig(temperature=1.0, steps=3, cfg_scale=2.0, corrector_rounds=2, corrector_fraction=0.25)
    kw = dict(order=order, context=context, sampling=sc)
    a = sample_maskgit(m, cond2(), GRID, generator=torch.Generator().manual_seed(3), **kw)
    b = sample_maskgit(m, cond2(), GRID, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    assert torch.equal(a[:, :1], context) and int(a.max()) < 64 and int(a.min()) >= 0
    assert torch.equal(a, b)  # cached and recomputed contexts agree with the corrector too
    plain = sample_maskgit(
        m, cond2(), GRID, generator=torch.Generator().manual_seed(3), order=order, context=context,
        sampling=SamplingConfig(temperature=1.0, steps=3, cfg_scale=2.0),
    )  # fmt: skip
    assert not torch.equal(a, plain)  # the rounds ran and changed something
