"""Long videos are planned window by window before anything is sampled: the plan keeps the windows it always made,
and a model whose cubes span latent frames gets windows its units tile, or one line before the first window (it
sampled the first windows and was then refused, with advice to use frame order that a shorter window made moot)."""

from pathlib import Path

import pytest
import torch

import pipelines.video as video_module
from core.config import build_config
from generator import Generator, GeneratorConfig
from generator.sampling import SamplingConfig
from pipelines import PipelineConfig, VideoPipeline
from pipelines.rollout import default_overlap, plan_windows
from tokenizer import TokenizerConfig, VideoTokenizer

ROOT = Path(__file__).resolve().parents[2]


def even(t: int, t_c: int) -> bool:
    """Cubes of 2 latent frames that also split the frame: windows and context boundaries at even latents only."""
    return t % 2 == 0 and t_c % 2 == 0


def test_without_constraints_the_plan_is_the_window_arithmetic_of_before():
    assert plan_windows(5, None, 5, None, 3) == [(0, 5)]
    assert plan_windows(11, None, 5, None, 3) == [(0, 5), (3, 2), (3, 2), (3, 2)]
    assert plan_windows(12, None, 5, None, 3) == [(0, 5), (3, 2), (3, 2), (3, 2), (3, 1)]
    assert plan_windows(5, 2, 5, None, 3) == [(2, 3)]  # two given latents, all read
    assert plan_windows(9, 4, 5, None, 3) == [(4, 1), (3, 2), (3, 2)]  # the first reads max_latents - 1 ...
    assert plan_windows(9, 4, 5, 1, 3) == [(1, 4), (3, 1)]  # ... or its cap (a story's handoff)
    assert default_overlap(5) == 3


def test_units_that_span_latent_frames_get_windows_they_tile_or_one_line_before_sampling():
    assert plan_windows(10, None, 4, None, default_overlap(4), even) == [(0, 4), (2, 2), (2, 2), (2, 2)]
    assert plan_windows(8, 2, 4, None, 2, even) == [(2, 2), (2, 2), (2, 2)]  # 3 latents would fit but not tile
    for total, done in ((5, 4), (11, 10)):
        with pytest.raises(ValueError, match=rf"^{total} latent frames cannot be made in windows of at most 4 that "
                                             rf"this order's units tile \(stuck after {done}\)"):  # fmt: skip
            plan_windows(total, None, 4, None, 2, even)
    with pytest.raises(ValueError, match=r"stuck after 0"):
        plan_windows(1, None, 3, None, 1, even)  # no first window either


@pytest.fixture(scope="module")
def pipe() -> VideoPipeline:
    """A GPT-style model of 4 latent frames whose cubes are (2, 2, 2): it continues only from an even number of them."""
    torch.manual_seed(0)
    tok = VideoTokenizer(build_config(TokenizerConfig, [ROOT / "configs/tiny/tokenizer.yaml"]))
    gen = Generator(GeneratorConfig(style="ar", orders=("cube", "frame"), vocab_size=tok.codebook_size,
                                    max_grid=(4, 4, 4), cube_size=(2, 2, 2), dim=32, depth=2, num_heads=2, cond="none",
                                    target_positions=True))  # fmt: skip
    cfg = PipelineConfig(generators={"ar": "generator_ar"}, default_mode="ar", num_frames=13, fps=8, class_names=(),
                         text_encoder=None, sampling={"ar": SamplingConfig(top_k=20)})  # fmt: skip
    return VideoPipeline(tok, {"ar": gen}, None, cfg)


def test_a_long_video_in_cube_order_is_planned_before_its_first_window(pipe, monkeypatch):
    calls, real = [], video_module.sample_ar

    def spy(model, cond, grid, **kw):
        calls.append((grid, None if kw.get("context") is None else kw["context"].shape[1]))
        return real(model, cond, grid, **kw)

    monkeypatch.setattr(video_module, "sample_ar", spy)
    out = pipe(None, order="cube", num_frames=29, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape[1] == 29  # 8 latents: 4, then 2 more twice after 2 of context (3 would not tile)
    assert calls == [((4, 4, 4), None), ((4, 4, 4), 2), ((4, 4, 4), 2)]
    calls.clear()
    with pytest.raises(ValueError, match=r"^9 latent frames cannot be made in windows of at most 4"):
        pipe(None, order="cube", num_frames=33, generator=torch.Generator().manual_seed(0))
    assert calls == []  # refused before sampling anything
    with pytest.raises(ValueError, match=r"^first_frame_candidates needs units within one latent frame"):
        pipe(None, order="cube", num_frames=29, sampling=SamplingConfig(first_frame_candidates=2))  # not a plan's
    assert calls == []
    out = pipe(None, order="frame", num_frames=33, generator=torch.Generator().manual_seed(0))  # frame order: any
    assert out.frames.shape[1] == 33
