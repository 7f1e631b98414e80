"""The generator's public entry points refuse malformed inputs with a ValueError, before touching a KV cache.

Each case failed inside torch before (a RuntimeError, an AttributeError), and ``prefill`` left the cache reserved
so that a retry was refused too."""

import pytest
import torch

from generator import Condition, make_layout
from generator.sampling import sample_ar, sample_maskgit
from generator.units import causal_mask
from tests.helpers.tiny_generator import GRID, tiny


@pytest.mark.parametrize("rows", [1, 3])
def test_prefill_refuses_a_condition_whose_rows_differ_from_the_cache_and_leaves_it_empty(rows):
    m = tiny("maskgit")
    cache = m.new_cache(2, 16)
    with pytest.raises(ValueError, match="cache holds 2 rows"):
        m.prefill(Condition(labels=torch.arange(rows)), cache)
    assert cache.length == 0
    m.prefill(Condition(labels=torch.tensor([0, 1])), cache)  # the same cache still serves a right call
    assert cache.length > 0


@pytest.mark.parametrize("dtype", [torch.int16, torch.uint8, torch.int32])
def test_forward_takes_any_integer_ids_and_targets_and_gives_the_int64_logits(dtype):
    m = tiny("ar", target_positions=True)
    layout = make_layout(GRID, "cube", (1, 2, 2))
    L = layout.num_tokens
    ids = torch.randint(0, 16, (2, L))
    coords = torch.cat([torch.full((1, 3), -1), layout.coords[:-1]])
    cond = Condition(labels=torch.tensor([0, 2]))
    ref = m(ids, cond, coords=coords, mask=causal_mask(L), targets=layout.coords)
    out = m(ids.to(dtype), cond, coords=coords, mask=causal_mask(L), targets=layout.coords.to(dtype))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_forward_refuses_targets_that_are_not_integer_positions(dtype):
    m = tiny("ar", target_positions=True)
    layout = make_layout(GRID, "cube", (1, 2, 2))
    L = layout.num_tokens
    coords = torch.cat([torch.full((1, 3), -1), layout.coords[:-1]])
    with pytest.raises(ValueError, match="targets must be integer"):
        m(
            torch.zeros(1, L, dtype=torch.long),
            Condition(labels=torch.tensor([0])),
            coords=coords,
            mask=causal_mask(L),
            targets=layout.coords.to(dtype),
        )


@pytest.mark.parametrize("style", ["ar", "maskgit"])
def test_samplers_refuse_an_empty_batch(style):
    sample = sample_ar if style == "ar" else sample_maskgit
    with pytest.raises(ValueError, match="no rows"):
        sample(tiny(style), Condition(labels=torch.zeros(0, dtype=torch.long)), GRID)


@pytest.mark.parametrize("cond", [None, [0, 1]])
def test_a_condition_that_is_not_a_condition_of_tensors_is_refused(cond):
    m = tiny("ar")
    wrapped = cond if cond is None else Condition(labels=cond)
    with pytest.raises(ValueError, match="must be a Condition|must be a tensor"):
        m(torch.zeros(2, 1, dtype=torch.long), wrapped, coords=torch.tensor([[0, 0, 0]]), mask=causal_mask(1))


def test_a_grid_too_large_for_one_sequence_is_refused_before_its_layouts_are_built():
    """max_grid [1e5]*3 with target_positions off built every order's layout in __post_init__: a RuntimeError
    traceback after trying to allocate 8e15 bytes, from loading a config.yaml alone."""
    from generator import GeneratorConfig

    with pytest.raises(ValueError, match=r"max_grid \[100000, 100000, 100000\] holds 1,000,000,000,000,000 tokens"):
        GeneratorConfig(style="ar", vocab_size=8, max_grid=(100_000,) * 3, orders=("frame", "cube"))
    GeneratorConfig(style="ar", vocab_size=8, max_grid=(16, 256, 256), orders=("frame",))  # 2**20 tokens is allowed
