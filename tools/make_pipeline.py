"""Assembles a pipeline directory from a trained tokenizer and exported generators.

    python tools/make_pipeline.py --config configs/pipeline/shapes.yaml \\
        --tokenizer runs/tok/tokenizer --generator maskgit=runs/maskgit/export \\
        --generator ar=runs/ar/export --shapes-dataset data/shapes --dtype float16 --out models/shapes

The work is :func:`pipelines.assemble.assemble_pipeline`: every part is loaded strictly and the
directory is renamed into place only once it loads. With ``--shapes-dataset`` the class names
are the shapes classes' captions and the dataset's held-out combinations go to ``holdout.json``
(read by ``tools/eval_shapes.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli import CliParser, UsageError, run_cli, setup_logging
from core.files import check_not_over_inputs
from pipelines.assemble import DTYPES, assemble_pipeline, weights_bytes
from videodata.shapes.dataset import dataset_holdout
from videodata.shapes.render import NUM_CLASSES, class_caption


def _generators(items: Sequence[str]) -> dict[str, Path]:
    gens: dict[str, Path] = {}
    for item in items:
        mode, sep, path = item.partition("=")
        if not sep or not mode or not path:
            raise UsageError(f"--generator takes MODE=DIR, got {item!r}")
        if mode in gens:
            raise UsageError(f"--generator {mode}=... is given twice")
        gens[mode] = Path(path)
    if not gens:
        raise UsageError("give at least one --generator MODE=DIR")
    return gens


def _main(argv: Sequence[str] | None) -> int:
    p = CliParser(prog="make_pipeline.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", default=[], help="pipeline YAML (PipelineConfig fields); repeatable")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder (config.yaml + model.safetensors)")
    p.add_argument(
        "--generator",
        action="append",
        default=[],
        metavar="MODE=DIR",
        help="an exported generator for a mode (ar or maskgit); repeat for several",
    )
    p.add_argument("--shapes-dataset", default=None, help="a tools/make_shapes.py folder: class names and holdout.json")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="storage precision of the weights")
    p.add_argument(
        "--out", required=True,
        help="pipeline directory to create; --force swaps a whole new one in (a pipeline loading it then starts over)",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("overrides", nargs="*", help="dotted overrides such as default_mode=ar")
    args = p.parse_args(argv)
    setup_logging()
    generators = _generators(args.generator)
    shapes = args.shapes_dataset is not None
    check_not_over_inputs(args.out, {"the shapes dataset": args.shapes_dataset}, "--out")
    out = assemble_pipeline(
        args.out, tokenizer=args.tokenizer, generators=generators, configs=args.config, overrides=args.overrides,
        class_names=[class_caption(i) for i in range(NUM_CLASSES)] if shapes else None,
        holdout=dataset_holdout(args.shapes_dataset) if shapes else None, dtype=args.dtype, force=args.force,
    )  # fmt: skip
    print(f"wrote {out} ({weights_bytes(out) / 1e6:.1f} MB of weights, {args.dtype}); modes {sorted(generators)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0, or 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
