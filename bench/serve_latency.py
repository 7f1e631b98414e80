"""A warm web-demo request against the same generation called in process, on the shipped model.

Goal: a warm ``POST /api/generate`` with the defaults returns in at most 2 s on 2 CPU cores. The server
(uvicorn + the FastAPI app of ``tokvid-serve``, in a thread of this process) loads and warms the pipeline
once; each timed request is a fresh HTTP call over localhost that generates, writes the mp4 and contact sheet,
and answers with the record. The floor is :func:`pipelines.generate.generate_with` on the same loaded
pipeline, writing the same files, without HTTP or the queue. Calls alternate between the two, 5 each
(2 with ``--quick``), and the medians are reported.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.table import check_json_target, format_table, record, write_json
from core.cli import CliParser, run_cli

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "shapes"


def _serve_in_thread(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread


def run(quick: bool, model: Path = DEFAULT_MODEL) -> list[dict]:
    import socket

    from pipelines.generate import GenerationRequest, generate_with
    from videoserve.app import create_app
    from videoserve.server import load_for_serving
    from videoserve.store import OutputStore
    from videoserve.worker import GenerationWorker

    if not (model / "pipeline.yaml").is_file():
        raise ValueError(f"--model {str(model)!r} holds no pipeline.yaml: give a pipeline folder")
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        worker = GenerationWorker(max_waiting=4)
        pipe = load_for_serving(model, "cpu", worker)  # on the worker's thread, as tokvid-serve does
        server, thread = _serve_in_thread(create_app(pipe, OutputStore(Path(tmp) / "out", 10**9), worker=worker), port)
        http, floor = [], []
        try:
            for i in range(2 if quick else 5):

                def served(i=i) -> None:
                    req = urllib.request.Request(
                        f"http://127.0.0.1:{port}/api/generate", json.dumps({"seed": i}).encode(),
                        {"Content-Type": "application/json"},
                    )  # fmt: skip
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(req, timeout=120) as r:
                        json.loads(r.read())
                    http.append(time.perf_counter() - t0)

                def in_process(i=i) -> None:
                    t0 = time.perf_counter()
                    request, paths = GenerationRequest(seed=i), [Path(tmp) / f"floor{i}.mp4"]
                    # on the same thread as the server's generations
                    worker.submit(lambda r=request, p=paths: generate_with(pipe, r, p, progress=False)).result()
                    floor.append(time.perf_counter() - t0)

                for call in (served, in_process) if i % 2 == 0 else (in_process, served):  # ABBA: neither always first
                    call()
        finally:
            server.should_exit = True
            thread.join(30)
    ours, base = statistics.median(http), statistics.median(floor)
    rows = [
        record("serve: warm request, defaults (s) vs the 2 s goal", ours, 2.0, "s", 1.0, "<="),
        record("serve: warm request vs in-process generation (s)", ours, base, "s", None),
    ]
    rows[0]["note"] = f"requests {[round(x, 2) for x in http]}"
    rows[1]["note"] = f"in-process {[round(x, 2) for x in floor]}"
    return rows


def _main(argv: list[str] | None) -> int:
    p = CliParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--json")
    args = p.parse_args(argv)
    check_json_target(args.json, args.model)
    try:
        records = run(args.quick, args.model)
    except ImportError as err:  # the serve extra (fastapi, uvicorn) is not installed
        raise ValueError(f"{err}: pip install -e '.[serve]'") from None
    print(format_table(records, notes=True))
    if args.json:
        write_json(args.json, {"records": records})
    return 0


def main(argv: list[str] | None = None) -> int:
    """0, or 2 with one ``error:`` line on bad input (a model folder without pipeline.yaml, a bad --json)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
