"""The weight products of decoding on CPU: ``DecodingLinear`` against ``F.linear``, per row count.

A decoding step multiplies a few rows by each weight matrix of the transformer (qkv, proj, w13 and w2 of every
layer, and the output head). This times one pass over all of them, in model order and each with a fresh input,
as sampling does, so a weight may leave the core's cache between its uses. Two models: the shipped GPT-style
generator (25 matrices, 14 MB, which stay in a large cache) and ``bench/generator_bench.py``'s (33 matrices,
80 MB, read from memory every step). For each row count:

* ours: the modules in their decoding layout, as ``Generator.from_pretrained`` returns them
  (:class:`generator.layers.DecodingLinear`: a batch of two half products for 1 row, ``W @ x.T`` for 2 to 256
  rows, ``F.linear`` above);
* peer: ``nn.Linear`` modules of the same weights stored column-major (``F.linear``, on the faster layout for
  it), as these layers were before ``DecodingLinear``.

Above 256 rows the two differ only in the weight's layout. Where the rule does not pay on a machine, the ratio
shows it: goal <= 1.05. Each side runs ``passes`` passes per set, alternating sides (ABBA) over ``sets`` sets;
the median per pass is reported, in ms.

    python bench/decoding_products.py [--quick] [--json PATH] [--threads N]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from bench.table import check_json_target, format_table, record, write_json
from core.cli import CliParser, int_at_least, run_cli
from generator import Generator
from generator.layers import DecodingLinear, decoding_layout_

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "shapes" / "generator_ar"
ROWS = (1, 2, 4, 8, 32, 128, 256, 512)
QUICK_ROWS = (1, 2, 8, 128)
GOAL = 1.05


def _passes(rows: int) -> int:
    """Passes per timed set: about the same work per row count."""
    return max(4, 400 // rows)


def _time(fn: Callable[[], None], passes: int) -> float:
    """Seconds per pass of ``fn``, one set of ``passes``."""
    t0 = time.perf_counter()
    for _ in range(passes):
        fn()
    return (time.perf_counter() - t0) / passes


def measure(mods: list[DecodingLinear], rows: int, sets: int, generator: torch.Generator) -> tuple[float, float]:
    """Median ms per pass over ``mods`` with ``rows`` input rows: (DecodingLinear, nn.Linear column-major)."""
    passes = _passes(rows)
    # A fresh input per module and pass (as each decoding step has): (passes, rows, in) per module
    inputs = [torch.randn(passes, rows, m.in_features, generator=generator) for m in mods]
    before = [decoding_layout_(torch.nn.Linear(m.in_features, m.out_features, bias=False)) for m in mods]
    for old, m in zip(before, mods):
        old.weight.data.copy_(m.weight.detach())  # column-major, the values of m's weight
    it = {"ours": 0, "peer": 0}

    def ours() -> None:
        i = it["ours"] % passes
        it["ours"] += 1
        for m, x in zip(mods, inputs):
            m(x[i])

    def peer() -> None:
        i = it["peer"] % passes
        it["peer"] += 1
        for old, x in zip(before, inputs):
            old(x[i])

    times: dict[str, list[float]] = {"ours": [], "peer": []}
    with torch.inference_mode():
        ours(), peer()  # warm-up
        for s in range(sets):
            order = ("ours", "peer") if s % 2 == 0 else ("peer", "ours")
            for side in order:
                times[side].append(_time(ours if side == "ours" else peer, passes))
    return 1e3 * statistics.median(times["ours"]), 1e3 * statistics.median(times["peer"])


def models() -> dict[str, Generator]:
    """The two models, in their decoding layout."""
    from bench.generator_bench import build_ours

    return {"shipped": Generator.from_pretrained(MODEL), "bench model": build_ours("ar")}


def run(quick: bool = False) -> list[dict]:
    """One record per model and row count: ms per pass over its products, DecodingLinear vs nn.Linear (goal <= 1.05)."""
    generator = torch.Generator().manual_seed(0)
    records = []
    for name, model in models().items():
        mods = [m for m in model.modules() if isinstance(m, DecodingLinear)]
        for rows in QUICK_ROWS if quick else ROWS:
            ours, peer = measure(mods, rows, 4 if quick else 8, generator)
            label = f"decoding products, {name} ({len(mods)} matrices), {rows} row(s): DecodingLinear / nn.Linear"
            records.append(record(label, ours, peer, "ms", GOAL, goal_op="<="))
    return records


def _main(argv: Sequence[str] | None) -> int:
    parser = CliParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"rows {QUICK_ROWS}, 4 sets")
    parser.add_argument("--json", metavar="PATH", help="also write the records as JSON")
    parser.add_argument("--threads", type=int_at_least(1), default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)
    check_json_target(args.json)  # before the benchmark, not after it
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    records = run(quick=args.quick)
    print(f"decoding weight products, CPU fp32, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          "median ms per pass over a model's matrices")  # fmt: skip
    print(format_table(records))
    if args.json:
        write_json(args.json, {"benchmark": "decoding_products", "quick": args.quick, "records": records})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0, or 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
