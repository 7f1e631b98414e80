"""A tiny random text-conditional pipeline (tiny T5, tiny tokenizer, AR + MaskGIT generators)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from core.config import build_config
from generator import Generator, GeneratorConfig
from generator.sampling import SamplingConfig
from generator.text_encoders import TextEncoderConfig, load_text_encoder
from pipelines import PipelineConfig, VideoPipeline
from tests.helpers.tiny_text import make_tiny_t5
from tokenizer import TokenizerConfig, VideoTokenizer

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("a red circle moving left", "a blue square moving up", "a green triangle moving down")


def make_tiny_pipeline(
    root: Path,
    tokenizer_yaml: str = "configs/tiny/tokenizer.yaml",
    size: tuple[int, int] = (4, 4),
    cond: str = "text",
    num_classes: int = 0,
) -> Path:
    """Writes a complete pipeline directory at ``root`` (9-frame videos, 3x4x4 token grid by default); ``cond``
    "class" makes class-conditional generators of ``num_classes`` classes and no text encoder."""
    text = cond == "text"
    source = Path(tempfile.mkdtemp(prefix="tiny-t5-"))  # save_pretrained copies it in: the pipeline's folder is new
    if text:
        make_tiny_t5(source)
    te_cfg = TextEncoderConfig(kind="t5", path="text_encoder", max_length=48) if text else None
    torch.manual_seed(0)
    tok = VideoTokenizer(build_config(TokenizerConfig, [ROOT / tokenizer_yaml]))
    common = dict(
        vocab_size=tok.codebook_size,
        max_grid=(3, *size),
        cube_size=(1, 2, 2),
        dim=32,
        depth=2,
        num_heads=2,
        cond=cond,
        **({"text_dim": 32, "max_text_len": 48} if text else {"num_classes": num_classes}),
    )
    gens = {
        "ar": Generator(
            GeneratorConfig(style="ar", orders=("token", "cube", "frame"), target_positions=True, **common)
        ),
        "maskgit": Generator(GeneratorConfig(style="maskgit", orders=("clip", "frame", "cube"), **common)),
    }
    cfg = PipelineConfig(
        generators={"ar": "generator_ar", "maskgit": "generator_maskgit"},
        default_mode="maskgit",
        num_frames=9,
        fps=8,
        class_names=CLASSES,
        text_encoder=te_cfg,
        sampling={"maskgit": SamplingConfig(steps=4, cfg_scale=2.0), "ar": SamplingConfig(top_k=20)},
    )
    te = load_text_encoder(replace(te_cfg, path=str(source))) if text else None
    try:
        VideoPipeline(tok, gens, te, cfg).save_pretrained(root)
    finally:
        shutil.rmtree(source, ignore_errors=True)
    return root
