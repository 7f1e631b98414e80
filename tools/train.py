"""Train a GPT-style or MaskGIT-style generator on cached token shards with DeepSpeed.

    python tools/train.py --config configs/generator/shapes_maskgit.yaml --out runs/mg \
        data.cache=caches/shapes data.tokenizer=runs/tok/tokenizer data.text_encoder.path=MINILM_DIR
    torchrun --nproc_per_node 2 tools/train.py --config ... --out runs/mg run.zero_stage=2
    deepspeed --hostfile hostfile tools/train.py --config ... --out /shared/runs/mg

One entry point for every style, condition and unit order (also installed as ``tokvid-train``).
It resumes automatically from the newest complete checkpoint under ``<out>/checkpoints`` and
exports the plain safetensors directory that pipelines load to ``<out>/export``. The loop is
:class:`videotrain.generator_task.GeneratorTrainer`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from core.cli import CliParser, add_config_args, run_cli, setup_logging
from core.config import build_config
from videotrain.generator_task import GeneratorTrainConfig, train_generator


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = CliParser(prog="train.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="run directory (checkpoints, metrics, samples, export)")
    add_config_args(parser, example="optim.lr=1e-4")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after options
    setup_logging()
    cfg = build_config(GeneratorTrainConfig, args.config, args.overrides)
    trainer = train_generator(cfg, args.out)
    if trainer.dist.is_main:
        print(f"trained to step {trainer.step}; exported {trainer.out / 'export'}")
        if trainer.stop_message():
            print(trainer.stop_message())
    return trainer.exit_code


if __name__ == "__main__":
    sys.exit(main())
