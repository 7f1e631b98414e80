"""Render the synthetic "shapes" dataset, and judge videos of it with the shapes analyzer.

    python tools/make_shapes.py render --out data/shapes --num-clips 7200 --seed 0 \\
        --holdout "green triangle up,blue circle left" --num-workers 4
    python tools/make_shapes.py analyze samples/*.mp4 [--json]
    python tools/make_shapes.py analyze --manifest data/shapes/manifest.jsonl

``render`` calls :func:`videodata.shapes.dataset.render_dataset` (the folder layout and the
manifests are described there). ``analyze`` prints ``PATH  color shape motion  confidence=C`` per
video (``none`` for an attribute it cannot read), or a JSON line per video with ``--json``; with
``--manifest`` it scores :func:`videoeval.shapes_analyzer.analyze` against the manifest's
attributes and prints only the clips it gets wrong, then the accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from core.cli import CliParser, run_cli, setup_logging
from videodata.shapes.dataset import FORMATS, load_clip, read_manifest, render_dataset
from videoeval.shapes_analyzer import Analysis, analyze

ATTRS = ("color", "shape", "motion")


def build_parser() -> CliParser:
    parser = CliParser(prog="make_shapes.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render the dataset and its manifests")
    render.add_argument("--out", required=True, help="output folder")
    render.add_argument("--num-clips", type=int, required=True, help="clips in all; every 72 hold each class once")
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--holdout", help='held-out combinations, e.g. "green triangle up,blue circle left"')
    render.add_argument("--format", choices=FORMATS, default="mp4", help="mp4 files or folders of PNG frames")
    render.add_argument("--num-workers", type=int, default=1, help="parallel render/encode threads")
    render.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    render.add_argument(
        "--captions-per-clip", type=int, default=1,
        help="distinct captions per clip; a text-conditional trainer draws one per step",
    )  # fmt: skip
    an = sub.add_parser("analyze", help="read color, shape and motion from videos")
    an.add_argument("paths", nargs="*", help="video files or folders of frames")
    an.add_argument("--manifest", help="analyze every clip of a manifest .jsonl and report accuracy")
    an.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _describe(path: str, a: Analysis) -> str:
    words = " ".join(v or "none" for v in (a.color, a.shape, a.motion))
    return f"{path}  {words}  confidence={a.confidence:.3f}"


def _analyze(args: argparse.Namespace) -> int:
    if bool(args.paths) == bool(args.manifest):
        raise ValueError("analyze needs video paths or --manifest FILE (not both)")
    rows = read_manifest(args.manifest) if args.manifest else [{"path": p} for p in args.paths]
    if not rows:  # "0/0 clips right" and exit 0 before
        raise ValueError(f"the manifest {args.manifest!r} lists no clips")
    correct = dict.fromkeys((*ATTRS, "all"), 0)
    for row in rows:
        a = analyze(load_clip(row["path"]))  # (T, H, W, 3) uint8 -> attributes
        record = {"path": row["path"], **a.to_dict()}
        if args.manifest:
            hits = {k: getattr(a, k) == row[k] for k in ATTRS}
            hits["all"] = all(hits.values())
            for k, hit in hits.items():
                correct[k] += hit
            record.update(expected=" ".join(row[k] for k in ATTRS), correct=hits["all"])
        if args.json:
            print(json.dumps(record))
        elif not args.manifest:
            print(_describe(row["path"], a))
        elif not record["correct"]:
            print(f"{_describe(row['path'], a)}  WRONG, expected {record['expected']}")
    if args.manifest:
        acc = {k: v / max(len(rows), 1) for k, v in correct.items()}
        if args.json:
            print(json.dumps({"summary": True, "num_clips": len(rows), "accuracy": acc}))
        else:
            parts = ", ".join(f"{k} {acc[k]:.4f}" for k in ATTRS)
            print(f"{correct['all']}/{len(rows)} clips right: accuracy {acc['all']:.4f} ({parts})")
    return 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    if args.command == "analyze":
        return _analyze(args)
    s = render_dataset(
        args.out, args.num_clips, seed=args.seed, holdout=args.holdout, format=args.format,
        num_workers=args.num_workers, overwrite=args.overwrite, captions_per_clip=args.captions_per_clip,
    )  # fmt: skip
    held = f" and {s.num_holdout} held-out clips to {s.holdout_manifest}" if s.holdout_manifest else ""
    print(f"wrote {s.num_train} training clips to {s.manifest}{held}")
    print(f"{(s.num_train + s.num_holdout) / s.seconds:.1f} clips/s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``render ...`` or ``analyze ...``.

    Returns:
        0 on success, 2 on bad input (one ``error:`` line on stderr).
    """
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
