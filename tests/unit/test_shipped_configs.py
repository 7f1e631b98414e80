"""Every shipped config parses into its dataclass and builds (typos in configs fail here)."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core.config import build_config, from_dict, load_yaml
from generator import Generator
from tokenizer import VideoTokenizer
from videotrain.distributed import deepspeed_config
from videotrain.generator_task import GeneratorTrainConfig as TrainConfig
from videotrain.tokenizer_config import TokenizerTrainConfig

ROOT = Path(__file__).resolve().parents[2]


# Overlays are merged after a base config (scripts/train_shapes.sh): each is checked on top of its bases, with the
# overrides the script passes alongside it.
TOKENIZER_OVERLAYS = {
    "shapes_full_length.yaml": (["shapes.yaml"], []),
    "shapes_decoder.yaml": (["shapes.yaml", "shapes_full_length.yaml"], ["run.init_from=previous/tokenizer"]),
}
GENERATOR_OVERLAYS = {
    "shapes_captions.yaml": [["shapes_ar.yaml"], ["shapes_maskgit.yaml"]],
    "shapes_finetune.yaml": [
        ["shapes_ar.yaml", "shapes_captions.yaml"],
        ["shapes_maskgit.yaml", "shapes_captions.yaml"],
    ],
}


@pytest.mark.parametrize("path", sorted((ROOT / "configs/tokenizer").glob("*.yaml")), ids=lambda p: p.name)
def test_tokenizer_configs(path):
    bases, overrides = TOKENIZER_OVERLAYS.get(path.name, ([], []))
    cfg = build_config(TokenizerTrainConfig, [path.parent / b for b in bases] + [path], overrides)
    with torch.device("meta"):
        tok = VideoTokenizer(cfg.model)
    assert tok.latent_shape(cfg.data.num_frames, cfg.data.size, cfg.data.size)


@pytest.mark.parametrize("path", sorted((ROOT / "configs/generator").glob("*.yaml")), ids=lambda p: p.name)
def test_generator_configs(path):
    overrides = ["data.text_encoder.path=unused"] if "shapes" in path.name else []
    for bases in GENERATOR_OVERLAYS.get(path.name, [[]]):
        cfg = build_config(TrainConfig, [path.parent / b for b in bases] + [path], overrides)
        with torch.device("meta"):
            model = Generator(cfg.model)
        assert model.num_params() > 0
    if cfg.run.deepspeed:
        assert deepspeed_config(
            str(ROOT / cfg.run.deepspeed),
            micro_batch=1,
            grad_accum=1,
            grad_clip=1.0,
            precision=cfg.run.precision,
            zero_stage=None,
        )["zero_optimization"]["stage"] in (0, 1, 2, 3)


def test_ucf101_config_is_300m_without_embeddings():
    cfg = build_config(TrainConfig, [ROOT / "configs/generator/ucf101_maskgit_300m.yaml"])
    with torch.device("meta"):
        model = Generator(cfg.model)
    body = model.num_params() - model.tok_emb.weight.numel() - model.head.weight.numel()
    assert 280e6 < body < 320e6


@pytest.mark.parametrize("path", sorted((ROOT / "configs/deepspeed").glob("*.json")), ids=lambda p: p.name)
def test_deepspeed_jsons_hold_engine_keys_only(path):
    cfg = deepspeed_config(str(path), micro_batch=4, grad_accum=2, grad_clip=1.0, precision="bf16", zero_stage=None)
    assert cfg["train_micro_batch_size_per_gpu"] == 4
    # On the CPU accelerator (DS_ACCELERATOR=cpu in tests) bf16 trains through autocast: fp32 weights.
    assert cfg["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"} and not cfg["bf16"]["enabled"]


def test_deepspeed_json_may_not_set_batch_size(tmp_path):
    (tmp_path / "bad.json").write_text('{"train_micro_batch_size_per_gpu": 8}')
    with pytest.raises(ValueError, match="come from the training config"):
        deepspeed_config(
            str(tmp_path / "bad.json"), micro_batch=4, grad_accum=1, grad_clip=1.0, precision="fp32", zero_stage=None
        )


@pytest.mark.parametrize("path", sorted((ROOT / "configs/pipeline").glob("*.yaml")), ids=lambda p: p.name)
def test_pipeline_configs(path):
    from pipelines import PipelineConfig

    cfg = build_config(PipelineConfig, [path])
    assert cfg.default_mode in cfg.default_orders and cfg.sampling


def test_shipped_pipeline_settings_come_from_the_pipeline_config():
    """scripts/train_shapes.sh writes pipeline.yaml from configs/pipeline/shapes.yaml (make_pipeline adds the
    generator folders and class names): a setting changed in the shipped copy alone would not be rebuilt."""
    from pipelines import DEFAULT_MODEL_DIR, PipelineConfig

    shipped = from_dict(PipelineConfig, load_yaml(DEFAULT_MODEL_DIR / "pipeline.yaml"))
    built = build_config(PipelineConfig, [ROOT / "configs/pipeline/shapes.yaml"], [])
    assert replace(built, generators=shipped.generators, class_names=shipped.class_names) == shipped
