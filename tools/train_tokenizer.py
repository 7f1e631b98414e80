"""Train a VideoTokenizer on a folder of videos and/or images with DeepSpeed.

    python tools/train_tokenizer.py --config configs/tokenizer/shapes.yaml \
        --data data/shapes/manifest.jsonl --out runs/tok
    torchrun --nproc_per_node 2 tools/train_tokenizer.py --config ... --out runs/tok run.zero_stage=2
    deepspeed tools/train_tokenizer.py --config ... --out runs/tok

The same training core as ``tools/train.py`` (also installed as ``tokvid-train-tokenizer``): it
resumes from the newest complete checkpoint in ``--out``, logs loss, PSNR and codebook usage,
writes previews (originals over reconstructions) and saves the model with ``save_pretrained`` under
``<out>/tokenizer``. The loop is :class:`videotrain.tokenizer_task.TokenizerTrainer`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace

from core.cli import CliParser, add_config_args, run_cli, setup_logging
from core.config import build_config
from videotrain.tokenizer_config import TokenizerTrainConfig
from videotrain.tokenizer_task import train_tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = CliParser(prog="train_tokenizer.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        help="video/image folder, file or CSV/JSONL manifest (repeatable); overrides data.paths",
    )
    parser.add_argument("--out", required=True, help="run directory (checkpoints, metrics, previews, tokenizer)")
    parser.add_argument("--perceptual", help="TorchScript perceptual network (x, y) -> distance, e.g. a traced LPIPS")
    add_config_args(parser, example="run.steps=100")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after options
    setup_logging()
    cfg = build_config(TokenizerTrainConfig, args.config, args.overrides)
    if args.data:  # set as they are: through a YAML override, json.dumps split an emoji into two lone surrogates
        cfg = replace(cfg, data=replace(cfg.data, paths=tuple(args.data)))
    perceptual = None
    if args.perceptual and cfg.loss.perceptual_weight <= 0:  # it was loaded and never used
        raise ValueError("--perceptual is used only with loss.perceptual_weight > 0 (e.g. loss.perceptual_weight=0.1)")
    if args.perceptual:
        from videoeval.metrics import LPIPS

        perceptual = LPIPS(args.perceptual)
    trainer = train_tokenizer(cfg, args.out, perceptual)
    if trainer.dist.is_main:
        print(f"trained {trainer.step} steps; wrote {trainer.out / 'tokenizer'}")
        if trainer.stop_message():
            print(trainer.stop_message())
    return trainer.exit_code


if __name__ == "__main__":
    sys.exit(main())
