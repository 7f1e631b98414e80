"""``tokvid-serve`` / ``python tools/serve.py``: the local web demo.

    tokvid-serve                         # the shipped model on http://127.0.0.1:8000
    tokvid-serve --model runs/shapes/model --port 8080 --out outputs/serve

Needs the optional extra: ``pip install -e .[serve]``. The work is :func:`videoserve.server.serve`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from core.cli import CliParser, UsageError, parse_device, run_cli, setup_logging
from pipelines.video import DEFAULT_MODEL_DIR


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = CliParser(prog="tokvid-serve", description="Serve a pipeline as a local web demo and JSON API.")
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="pipeline directory (default: the shipped model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--public", action="store_true", help="allow a --host other than the loopback")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--out", default="outputs/serve", help="output folder; only its results are served")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--max-waiting", type=int, default=4, help="requests that may wait behind the running one")
    p.add_argument("--max-frames", type=int, default=65, help="longest video a request may ask for")
    p.add_argument(
        "--max-output-mb",
        type=float,
        default=500.0,
        help="size cap of its results and uploads in --out; oldest go first",
    )
    p.add_argument("--max-upload-mb", type=float, default=32.0, help="largest image or video upload")
    return p.parse_args(argv)


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise UsageError("the web demo needs the serve extra: pip install -e .[serve]")
    setup_logging()
    from videoserve.server import serve

    host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address in a URL
    serve(
        args.model, host=args.host, port=args.port, out=args.out, device=parse_device(args.device),
        public=args.public, max_waiting=args.max_waiting, max_frames=args.max_frames,
        max_output_mb=args.max_output_mb, max_upload_mb=args.max_upload_mb,
        ready=lambda: print(f"serving {args.model} on http://{host}:{args.port} (Ctrl-C stops)", flush=True),
    )  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tokvid-serve``: 0, or 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
