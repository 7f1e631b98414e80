"""``torch.compile`` for sampling: compiled generators (and a compiled pipeline) sample what eager ones do,
within float tolerance. Slow: inductor compiles C++ kernels on first use."""

import numpy as np
import pytest
import torch

from generator import Condition, Generator, GeneratorConfig
from generator.sampling import SamplingConfig, sample_ar, sample_maskgit
from pipelines import VideoPipeline
from tests.helpers.tiny_pipeline import make_tiny_pipeline

pytestmark = pytest.mark.slow

GRID = (3, 4, 4)


def pair(style: str) -> tuple[Generator, Generator]:
    orders = ("frame", "token") if style == "ar" else ("frame", "clip")
    cfg = GeneratorConfig(style=style, orders=orders, vocab_size=64, max_grid=GRID, dim=32, depth=2, num_heads=2,
                          num_classes=5)  # fmt: skip
    torch.manual_seed(0)
    eager = Generator(cfg).eval()
    compiled = Generator(cfg).eval()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile(dynamic=True)
    return eager, compiled


def test_compiled_forward_matches_eager_with_the_kv_cache():
    """Prefill-style first call, then cached single-token steps of growing length (dynamic shapes)."""
    eager, compiled = pair("ar")
    cond = Condition(labels=torch.tensor([1, 4]))
    caches = [m.new_cache(2, m.prefix_len + 8) for m in (eager, compiled)]
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    coords = torch.tensor([(0, i // 4, i % 4) for i in range(8)])
    with torch.inference_mode():
        for i in range(6):
            n = 3 if i == 0 else 1
            start = 0 if i == 0 else i + 2
            sl = slice(start, start + n)
            mask = torch.tril(torch.ones(n, n, dtype=torch.bool))
            a, b = (m(ids[:, sl], cond, c, coords=coords[sl], mask=mask) for m, c in zip((eager, compiled), caches))
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (i, (a - b).abs().max())


@pytest.mark.parametrize("style", ["ar", "maskgit"])
def test_compiled_sampling_draws_what_eager_draws(style):
    """The same seeds give the same tokens, except where float noise flips a near tie: at least 90% agree
    (greedy GPT-style; MaskGIT with its own Gumbel noise from the same generator)."""
    eager, compiled = pair(style)
    cond = Condition(labels=torch.tensor([0, 1, 2, 3]))
    sampling = SamplingConfig(temperature=1.0, top_k=1, cfg_scale=2.0, steps=4)
    fn = sample_ar if style == "ar" else sample_maskgit
    a, b = (fn(m, cond, GRID, order="frame", sampling=sampling, generator=torch.Generator().manual_seed(3))
            for m in (eager, compiled))  # fmt: skip
    assert (a == b).float().mean() >= 0.9


def test_compiled_pipeline_makes_the_same_video(tmp_path):
    root = make_tiny_pipeline(tmp_path / "p")
    eager = VideoPipeline.from_pretrained(root)
    compiled = VideoPipeline.from_pretrained(root).compile()
    kw = dict(prompt="a red circle moving left", mode="ar", sampling=SamplingConfig(top_k=1))
    a, b = (p(**kw, generator=torch.Generator().manual_seed(0)).frames.astype(int) for p in (eager, compiled))
    assert a.shape == b.shape and np.abs(a - b).mean() < 2.0
