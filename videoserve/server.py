"""Loading the pipeline once and serving it with uvicorn: the work behind ``tokvid-serve``."""

from __future__ import annotations

import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch

from core.files import check_dir_target, hold_lock, release_lock, remove_empty_folder
from pipelines import VideoPipeline
from pipelines.generate import GenerationRequest, generate_with
from videoserve.store import OutputStore
from videoserve.worker import GenerationWorker

log = logging.getLogger(__name__)


def check_host(host: str, public: bool) -> None:
    """Refuses an address other than the loopback unless ``public`` says so on purpose."""
    if host not in ("127.0.0.1", "localhost", "::1") and not public:
        raise ValueError(f"--host {host} would serve other machines: add --public to do that on purpose")


def check_port(host: str, port: int) -> None:
    """Refuses a port outside [1, 65535] or one that something already listens on, before the model loads."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port must be in [1, 65535], got {port}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # as uvicorn binds: without it a port left in TIME_WAIT by the last run's connections was "in use" for ~60 s
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def load_for_serving(model: str | os.PathLike, device: torch.device | str, worker: GenerationWorker) -> VideoPipeline:
    """Loads the pipeline and runs one default generation (not kept), on ``worker``'s thread, so the first request
    is already warm and every torch call of the server runs on that one thread (see :mod:`videoserve.worker`)."""

    def load() -> VideoPipeline:
        start = time.perf_counter()
        pipe = VideoPipeline.from_pretrained(model).to(device)
        with tempfile.TemporaryDirectory() as tmp:
            generate_with(pipe, GenerationRequest(), [Path(tmp) / "warmup.mp4"], progress=False)
        log.info("loaded and warmed %s in %.1f s", model, time.perf_counter() - start)
        return pipe

    return worker.submit(load).result()


def serve(
    model: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    out: str | os.PathLike = "outputs/serve",
    device: torch.device | str = "cpu",
    public: bool = False,
    max_waiting: int = 4,
    max_frames: int = 65,
    max_output_mb: float = 500.0,
    max_upload_mb: float = 32.0,
    ready: Callable[[], None] | None = None,
) -> None:
    """Loads ``model`` once and serves the demo until interrupted; ``ready`` is called once every check has passed
    and the model is loaded and warm, just before the server starts listening.

    Raises:
        ValueError: a non-loopback host without ``public``, a model that does not load, bad limits.
    """
    import uvicorn  # the optional serve extra

    from videoserve.app import LOOPBACK_HOSTS, create_app

    check_host(host, public)
    if max_frames < 1 or max_waiting < 0:
        raise ValueError("--max-frames must be positive, --max-waiting >= 0")
    check_dir_target(out, "--out")  # before the model loads and warms; it was "[Errno 20] Not a directory" after
    for flag, mb in (("--max-output-mb", max_output_mb), ("--max-upload-mb", max_upload_mb)):
        if not (math.isfinite(mb) and mb > 0):  # int(inf) was an OverflowError traceback
            raise ValueError(f"{flag} must be a positive number of megabytes, got {mb}")
    for flag, mb in (("--max-output-mb", max_output_mb), ("--max-upload-mb", max_upload_mb)):
        if int(mb * 1024 * 1024) < 1:  # an upload limit of 0 bytes refused every upload with a 413
            raise ValueError(f"{flag} must be at least one byte, got {mb}")
    if max_upload_mb > max_output_mb:  # one such upload dropped every result and left the folder over its cap
        raise ValueError(f"--max-upload-mb ({max_upload_mb:g}) must not exceed --max-output-mb ({max_output_mb:g})")
    check_port(host, port)
    made = not Path(out).exists()
    lock = hold_output_folder(Path(out))
    try:
        worker = GenerationWorker(max_waiting)
        pipe = load_for_serving(model, torch.device(device), worker)
        store = OutputStore(out, int(max_output_mb * 1024 * 1024))
        app = create_app(
            pipe, store, max_frames=max_frames, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            model_name=Path(model).name, worker=worker, allowed_hosts=None if public else LOOPBACK_HOSTS,
        )  # fmt: skip
        if ready is not None:
            ready()
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        release_lock(lock)
        if made:
            remove_empty_folder(out)


def hold_output_folder(out: Path) -> IO[bytes]:
    """Makes ``out`` and holds its ``.serve.lock`` while the server runs: two servers on one folder (the default
    ``outputs/serve``, a second model on another port) each capped the folder by their own in-memory view and
    deleted the other's held uploads and half-written videos."""
    out.mkdir(parents=True, exist_ok=True)
    busy = (f"another tokvid server uses --out {str(out)!r} (it holds .serve.lock): give this one its own --out, "
            "or stop the other")  # fmt: skip
    return hold_lock(out / ".serve.lock", busy)
