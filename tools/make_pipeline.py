"""Assembles a pipeline directory from a trained tokenizer and exported generators.

    python tools/make_pipeline.py --config configs/pipeline/shapes.yaml \\
        --tokenizer runs/tok/tokenizer --generator maskgit=runs/maskgit/export \\
        --generator ar=runs/ar/export --shapes-dataset data/shapes --dtype float16 --out models/shapes

Every part is loaded strictly (so a mismatched vocabulary or missing text encoder fails here,
not at generation time) and written with ``VideoPipeline.save_pretrained``. With
``--shapes-dataset`` the class names come from the shapes classes and the dataset's held-out
combinations are written to ``holdout.json`` (read by ``tools/eval_shapes.py``). The directory is
built next to ``--out`` and renamed into place, so a half-written model is never visible.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from core.cli import UsageError, run_cli, setup_logging
from core.config import build_config
from generator import Generator
from pipelines import PipelineConfig, VideoPipeline
from tokenizer import VideoTokenizer

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def weights_bytes(directory: Path) -> int:
    """Total size of the safetensors files under ``directory``."""
    return sum(p.stat().st_size for p in directory.rglob("*.safetensors"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", default=[], help="pipeline YAML (PipelineConfig fields), merged in order")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder (config.yaml + model.safetensors)")
    p.add_argument("--generator", action="append", default=[], metavar="MODE=DIR",
                   help="an exported generator for a mode (ar or maskgit); repeat for several")
    p.add_argument("--shapes-dataset", default=None, help="a tools/make_shapes.py folder: class names and holdout.json")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="storage precision of the weights")
    p.add_argument("--out", required=True, help="pipeline directory to create (replaced atomically with --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("overrides", nargs="*", help="dotted overrides such as default_mode=ar")
    args = p.parse_args(argv)
    setup_logging()
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"{out} already exists (use --force to replace it)")
    gens: dict[str, Path] = {}
    for item in args.generator:
        mode, sep, path = item.partition("=")
        if not sep or not path:
            raise UsageError(f"--generator takes MODE=DIR, got {item!r}")
        gens[mode] = Path(path)
    if not gens:
        raise UsageError("give at least one --generator MODE=DIR")
    config = build_config(PipelineConfig, args.config, args.overrides)
    config = replace(config, generators={mode: f"generator_{mode}" for mode in gens})
    holdout = None
    if args.shapes_dataset:
        from tools.make_shapes import NUM_CLASSES, class_caption

        meta_path = Path(args.shapes_dataset) / "dataset.json"
        if not meta_path.is_file():
            raise ValueError(f"{args.shapes_dataset} has no dataset.json: is it a tools/make_shapes.py folder?")
        holdout = json.loads(meta_path.read_text()).get("holdout", [])
        config = replace(config, class_names=tuple(class_caption(i) for i in range(NUM_CLASSES)))
    tokenizer = VideoTokenizer.from_pretrained(args.tokenizer)
    generators = {mode: Generator.from_pretrained(path) for mode, path in gens.items()}
    text_encoder = None
    if config.text_encoder is not None:
        from generator.text_encoders import load_text_encoder

        path = VideoPipeline._text_encoder_path(config, out)
        text_encoder = load_text_encoder(replace(config.text_encoder, path=str(path)))
    pipe = VideoPipeline(tokenizer, generators, text_encoder, config)
    for mode in gens:
        pipe.resolve_mode_order(mode, None)  # the default order must be one the generator supports

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        pipe.save_pretrained(tmp, DTYPES[args.dtype])
        if holdout is not None:
            (tmp / "holdout.json").write_text(json.dumps(holdout, indent=1) + "\n")
        VideoPipeline.from_pretrained(tmp)  # what we ship must load
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {out} ({weights_bytes(out) / 1e6:.1f} MB of weights, {args.dtype}); modes {sorted(gens)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
