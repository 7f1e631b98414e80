"""The KV cache: cached logits equal recomputation, and the cache's dtype, state, reserve, rewind and reset."""

import pytest
import torch

from generator import make_layout
from generator.kv_cache import KVCache
from generator.sampling import DecodeContext, SamplingConfig
from tests.helpers.tiny_generator import AR_ORDERS, GRID, MG_ORDERS, cond2, tiny


@pytest.mark.parametrize("style,order", [("ar", o) for o in AR_ORDERS] + [("maskgit", o) for o in MG_ORDERS])
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_cached_logits_equal_recomputation(style, order, cfg_scale):
    m = tiny(style)
    layout = make_layout(GRID, order, (1, 2, 2))
    sc = SamplingConfig(cfg_scale=cfg_scale)
    cached = DecodeContext(m, cond2(), sc, max_tokens=49, use_cache=True)
    plain = DecodeContext(m, cond2(), sc, max_tokens=49, use_cache=False)
    g = torch.Generator().manual_seed(1)
    if style == "ar":
        calls = [(torch.full((2, 1), 65), torch.tensor([[-1, -1, -1]]), True)]
        calls += [
            (torch.randint(0, 64, (2, 1), generator=g), layout.coords[i : i + 1], True)
            for i in range(layout.num_tokens - 1)
        ]
    else:
        calls = []
        for a, b in layout.bounds:
            calls.append((torch.randint(0, 65, (2, b - a), generator=g), layout.coords[a:b], False))
            calls.append((torch.randint(0, 64, (2, b - a), generator=g), layout.coords[a:b], True))
    for ids, coords, keep in calls:
        x = cached.logits(ids, coords, keep=keep, progress=0.5)
        y = plain.logits(ids, coords, keep=keep, progress=0.5)
        assert (x - y).abs().max() < 1e-5


def test_kv_cache_takes_the_models_dtype_is_never_saved_and_keeps_a_boolean_key_mask():
    m = tiny("ar").to(torch.bfloat16)
    cache = m.new_cache(2, 8)
    assert cache.k.dtype == cache.v.dtype == torch.bfloat16 and cache.valid.dtype == torch.bool
    assert cache.state_dict() == {}  # a cache is scratch space, never part of a checkpoint
    assert KVCache(1, 1, 1, 4, 2, dtype=torch.float64).k.dtype == torch.float64
    cache.reserve(2, torch.ones(2, 2, dtype=torch.bool))  # validity given, all True: still no key mask needed
    assert cache.all_valid


def test_kv_cache_reserve_rewind_and_reset():
    cache = KVCache(num_layers=1, batch=2, num_heads=1, max_len=6, head_dim=2)
    assert cache.reserve(2) == (0, 2) and cache.all_valid
    assert cache.reserve(2, torch.tensor([[True, False], [True, True]])) == (2, 4) and not cache.all_valid
    assert cache.valid[:, :4].tolist() == [[True, True, True, False], [True, True, True, True]]
    cache.rewind(3)
    assert cache.length == 3
    cache.rewind(3)  # to its own length: nothing to forget, not an error
    assert cache.length == 3
    with pytest.raises(ValueError, match="cannot rewind a cache of length 3 to 4"):
        cache.rewind(4)
    with pytest.raises(ValueError, match="cannot rewind a cache of length 3 to -1"):
        cache.rewind(-1)
    with pytest.raises(ValueError, match="KV cache overflow: 7 positions needed, 6 allocated"):
        cache.reserve(4)
    cache.reset()
    assert cache.length == 0 and cache.all_valid and cache.reserve(6) == (0, 6)
    cache.rewind(2)  # without padding a rewind keeps the cache all-valid: decoding steps need no key mask
    assert cache.all_valid and cache.reserve(1) == (2, 3) and cache.all_valid
