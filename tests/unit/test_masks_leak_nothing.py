"""No logit depends on a token it must not see: gradients through the real model, for every mask the
generator trains and samples with, and the MaskGIT schedule reveals the right number of tokens per step."""

import pytest
import torch

from generator import make_layout
from generator.sampling import SamplingConfig, sample_maskgit
from generator.schedules import num_masked_after_step
from generator.units import block_causal_mask, causal_mask, two_stream_mask
from tests.helpers.tiny_generator import GRID, cond2, tiny
from tests.unit.test_sampling_semantics import _fixed_logits


def dependence(model, ids: torch.Tensor, coords: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(L, L) bool: entry (i, j) is True when some logit at position i has a non-zero gradient w.r.t. the
    embedding of input position j."""
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["emb"] = output

    handle = model.tok_emb.register_forward_hook(keep)
    try:
        logits = model(ids, cond2(), coords=coords, mask=mask)  # (2, L, V)
    finally:
        handle.remove()
    L = ids.shape[1]
    deps = torch.zeros(L, L, dtype=torch.bool)
    for i in range(L):
        model.zero_grad(set_to_none=True)
        captured["emb"].grad = None
        logits[:, i].sum().backward(retain_graph=True)
        deps[i] = captured["emb"].grad.abs().sum(dim=(0, 2)) > 0
    return deps


@pytest.mark.parametrize("style,order", [("ar", "token"), ("ar", "cube"), ("ar", "frame"), ("maskgit", "frame"),
                                         ("maskgit", "cube"), ("maskgit", "clip")])  # fmt: skip
def test_sampling_masks_leak_nothing(style, order):
    """Block-causal across units; causal inside a GPT-style unit, bidirectional inside a MaskGIT one."""
    m = tiny(style).train(False)
    lay = make_layout(GRID, order, (1, 2, 2))
    mask = block_causal_mask(lay.unit_of)
    if style == "ar":
        mask &= causal_mask(lay.num_tokens)
    ids = torch.randint(0, 64, (2, lay.num_tokens), generator=torch.Generator().manual_seed(0))
    deps = dependence(m, ids, lay.coords, mask)
    assert torch.equal(deps, mask)  # depends on exactly what it may see: no leak, nothing blocked


@pytest.mark.parametrize("order", ["frame", "cube"])
def test_two_stream_training_mask_leaks_nothing(order):
    """Masked tokens of unit u see clean units < u and masked tokens of u, never their own clean copy."""
    m = tiny("maskgit")
    lay = make_layout(GRID, order, (1, 2, 2))
    L = lay.num_tokens
    mask = two_stream_mask(lay.unit_of)
    ids = torch.randint(0, 64, (2, 2 * L), generator=torch.Generator().manual_seed(0))
    deps = dependence(m, ids, torch.cat([lay.coords] * 2), mask)
    assert torch.equal(deps, mask)
    own_clean = torch.arange(L)
    assert not deps[L + own_clean, own_clean].any()  # no masked token sees its own clean token


@pytest.mark.parametrize("schedule", ["cosine", "linear", "square"])
@pytest.mark.parametrize("steps", [2, 5, 8, 20])
def test_each_maskgit_step_reveals_what_the_schedule_says(monkeypatch, schedule, steps):
    n = 16
    seen = _fixed_logits(monkeypatch, torch.arange(n).float() / 8)
    sc = SamplingConfig(temperature=0.0, steps=steps, choice_temperature=0.0, cfg_scale=1.0, mask_schedule=schedule)
    mask_id = tiny("maskgit").config.mask_id
    out = sample_maskgit(tiny("maskgit"), cond2(), (1, 4, 4), order="frame", sampling=sc)
    masked = [int((ids[0] == mask_id).sum()) for ids in seen]  # what each probe still had to fill
    expected, left = [], n
    for s in range(steps):
        if left == 0:
            break
        expected.append(left)
        left = min(num_masked_after_step(s, steps, n, schedule), left - 1)  # every step reveals at least one
    assert masked == expected
    assert not (out == mask_id).any()
