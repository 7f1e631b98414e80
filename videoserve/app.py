"""The FastAPI app of ``tokvid-serve``: a page, a JSON API and the finished files, around one loaded pipeline.

Routes:
    ``GET /``                    the demo page
    ``GET /api/health``          the model's modes, orders and defaults, and the queue
    ``GET /api/recent``          records of the newest results (the page's gallery)
    ``POST /api/uploads``        an image or video as the raw body (``?name=clip.mp4``) -> ``{"id": ...}``
    ``POST /api/generate``       JSON in (see :mod:`videoserve.requests`), the result's record out
    ``GET /outputs/<id>.mp4``    a finished video (and ``<id>.png``, its contact sheet)

Errors are JSON ``{"error": "<one line>"}``: 400 for bad input (the CLI's message), 404, 413 for a body over
the limit, 503 when the queue is full. Unless the server is public, a request must be addressed to a loopback name
(``Host``), so a web page cannot reach it through DNS rebinding; a POST whose ``Origin`` is another site (a page
the user visits posting to the demo) gets 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from core.files import atomic_path
from core.video_io import PIL_EXTS
from core.video_probe import frame_count, image_frames_at_most
from pipelines import VideoPipeline
from pipelines.context import frame_indices, read_kept
from pipelines.generate import GeneratedFiles, GenerationRequest, generate_with
from pipelines.io import OutputWriteError
from videoserve.requests import parse_request
from videoserve.store import OutputStore, file_id, new_id
from videoserve.worker import Busy, ClientGone, GenerationWorker, result_unless_gone

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 * 1024
MAX_IMAGE_FRAMES = 4096  # an animated upload's frames: Pillow walks them all, on the one worker, to count and time
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
KNOBS = {  # shown per style
    "ar": ("cfg_scale", "temperature", "context_temperature"),
    "maskgit": ("cfg_scale", "steps", "temperature", "context_temperature"),
}


class _TooLarge(Exception):
    """An upload passed the size limit."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _host_name(host: str) -> str:
    """The name in a ``Host`` header, without its port: ``[::1]:8000`` -> ``::1``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _SameSiteOnly:
    """Refuses a request addressed to a host name other than ``allowed_hosts`` (DNS rebinding; None: any) and a
    cross-origin POST. Plain ASGI: Starlette's ``@app.middleware("http")`` wraps ``receive``, and behind it
    ``Request.is_disconnected()`` never saw a client leave, so a queued job whose client had gone still ran."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...] | None) -> None:
        self.app, self.allowed_hosts = app, allowed_hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            host, origin = headers.get("host", ""), headers.get("origin")
            problem = None
            if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
                allowed = ", ".join(self.allowed_hosts)
                problem = _error(400, f"this server answers requests addressed to {allowed}, not {host!r}")
            elif scope["method"] == "POST" and origin is not None and origin.split("://", 1)[-1] != host:
                problem = _error(403, f"cross-origin requests are refused (Origin {origin!r}, Host {host!r})")
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes while it arrives (a chunked body has no Content-Length to check)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


class _HeldFileResponse(FileResponse):
    """A file response that calls ``release`` once it is sent, or the client is gone (the store keeps the file until
    then)."""

    def __init__(self, path: Path, release: Callable[[], None], *, whole: bool = False, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._release, self._whole = release, whole

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._whole:  # a Range in a unit we do not serve is ignored: the whole file (RFC 9110 14.2)
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _check_upload(path: Path, fps: float, frame_size: tuple[int, int]) -> tuple[int, int]:
    """(frames in the file, frames it gives at the model's rate), counted from the file's index, after decoding its
    last one as a request will: an upload of 10^5 frames is not decoded whole just to be counted (a continuation
    reads only its last frames, an image its one). An animated image has no index: one of more than
    :data:`MAX_IMAGE_FRAMES` is refused after that many seeks (a 230 KB GIF of 10^4 frames held the worker 24 s)."""
    image = path.suffix.lower() in PIL_EXTS
    file_frames = image_frames_at_most(path, MAX_IMAGE_FRAMES) if image else frame_count(path)
    if file_frames > MAX_IMAGE_FRAMES and image:
        raise ValueError(f"an animated image of more than {MAX_IMAGE_FRAMES} frames: upload it as an mp4")
    keep = frame_indices(path, fps)  # an animated image's frames walked once more, for their delays
    read_kept(path, keep[-1:], frame_size)  # decoded as a request will: the last frame it gives
    return file_frames, len(keep)


# At most 18 digits (10^18 bytes): Python's int() refuses over 4,300, a 500 (and a result held from the cap for good).
_RANGE = re.compile(r"\s*(\d{0,18})\s*-\s*(\d{0,18})\s*")


def _range_problem(header: str | None, size: int) -> tuple[int, str] | None:
    """(status, message) for a ``Range`` header that a file of ``size`` bytes cannot answer, else None: 400 for a
    malformed one, 416 for one that starts past the end (RFC 9110 14.1.2: ``bytes=first-last``, ``bytes=-suffix``)."""
    if header is None or not _bytes_range(header):
        return None
    spec = header.partition("=")[2]
    if not spec.strip():
        return 400, f"the Range header must be bytes=first-last, got {header[:80]!r}"
    for part in spec.split(","):
        match = _RANGE.fullmatch(part)
        first, last = (match.group(1), match.group(2)) if match else ("", "")
        if not (first or last) or (first and last and int(first) > int(last)):
            return 400, f"the Range header must be bytes=first-last, got {header[:80]!r}"
        if first and int(first) >= size:
            return 416, f"the Range header starts past the file's {size} bytes"
        if not first and int(last) == 0:  # Starlette answered "bytes=-0" with an empty plain-text 416
            return 416, "the Range header asks for the last 0 bytes"
    return None


def _bytes_range(header: str | None) -> bool:
    """Whether a ``Range`` header is in bytes, the one unit served; another is ignored (RFC 9110 14.2)."""
    return header is not None and header.partition("=")[0].strip().lower() == "bytes"


def _model_info(pipe: VideoPipeline) -> dict:
    modes = {}
    for mode, gen in pipe.generators.items():
        by_order = {}
        for order in gen.config.orders:
            settings = asdict(pipe.spec.sampling_for(mode, order))
            by_order[order] = {k: settings[k] for k in KNOBS[gen.config.style]}
        default_order = pipe.resolve_mode_order(mode, None)[1]
        modes[mode] = {
            "cond": gen.config.cond,  # "text" reads the prompt; "class" a label; "none" neither
            "orders": list(gen.config.orders),
            "default_order": default_order,
            "sampling": by_order[default_order],
            "sampling_by_order": by_order,
        }
    return {
        "default_mode": pipe.config.default_mode,
        "modes": modes,
        "num_frames": pipe.config.num_frames,
        "fps": pipe.config.fps,
        "temporal_compression": pipe.tokenizer.config.temporal_compression,
        "num_classes": len(pipe.config.class_names) or max(g.config.num_classes for g in pipe.generators.values()),
        "class_names": list(pipe.config.class_names),
    }


def _run_job(pipe: VideoPipeline, store: OutputStore, request: GenerationRequest, submitted: float) -> dict:
    """Generates one request into the store (in the worker thread); returns the result's record."""
    started = time.perf_counter()
    result_id = store.reserve()
    video, sheet = store.result_paths(result_id)
    try:
        made = generate_with(pipe, request, [video], progress=False)
        record = _record(result_id, video, sheet, made, request, submitted, started)
        store.finish(result_id, record)  # a record that cannot be written (a full disk) discards the files too
    except BaseException:
        store.discard(result_id)
        raise
    return record


def _record(
    result_id: str,
    video: Path,
    sheet: Path,
    made: GeneratedFiles,
    request: GenerationRequest,
    submitted: float,
    started: float,
) -> dict:
    """The JSON record of a finished result: what was asked, what was made, and where the time went."""
    done = time.perf_counter()
    frames = made.output.frames
    return {
        "id": result_id,
        "video": f"/outputs/{video.name}",
        "sheet": f"/outputs/{sheet.name}",
        "prompt": made.prompts,
        "label": made.label,
        "context": "image" if request.image else "video" if request.video else None,
        "context_frames": 1 if request.image else request.context_frames,  # the frames given, None for none
        "segment_frames": request.segment_frames,
        "mode": made.mode,
        "order": made.order,
        "num_frames": int(frames.shape[1]),
        "size": [int(frames.shape[3]), int(frames.shape[2])],
        "fps": made.output.fps,
        "seed": request.seed,
        "sampling": asdict(made.sampling),
        "timings": {
            "queued": round(started - submitted, 3),
            **{k: round(v, 3) for k, v in made.output.timings.items()},
            "writing": round(done - started - sum(made.output.timings.values()), 3),
            "total": round(done - submitted, 3),
        },
        "created": time.time(),
    }


def create_app(
    pipe: VideoPipeline,
    store: OutputStore,
    *,
    max_waiting: int = 4,
    max_frames: int = 65,
    max_upload_bytes: int = 32 * 1024 * 1024,
    model_name: str = "",
    worker: GenerationWorker | None = None,
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS,
) -> FastAPI:
    """The app around a loaded pipeline.

    Args:
        pipe: the pipeline, already on its device; only the worker thread uses it.
        store: the output folder.
        max_waiting: requests that may wait behind the running one; more get 503 (when ``worker`` is None).
        max_frames: the longest video a request may ask for.
        max_upload_bytes: the largest upload.
        model_name: shown by ``/api/health`` and on the page.
        worker: the thread that loaded ``pipe`` (:func:`videoserve.server.load_for_serving`), so that all torch
            work stays on one thread; None starts a new one.
        allowed_hosts: the names a request's ``Host`` may carry; None takes any (a ``--public`` server).
    """
    worker = worker if worker is not None else GenerationWorker(max_waiting)
    max_waiting = worker.max_waiting
    # an upload larger than the whole store would drop every result and still leave the folder over its cap
    max_upload_bytes = min(max_upload_bytes, store.max_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        worker.shutdown()

    app = FastAPI(title="tokvid demo", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    info = {"model": model_name, **_model_info(pipe), "max_frames": max_frames}
    frame_size = pipe.frame_size(pipe.generators[pipe.config.default_mode])  # uploads are checked at this size
    page = resources.files("videoserve").joinpath("page.html").read_text(encoding="utf-8")
    app.state.worker, app.state.store = worker, store

    app.add_middleware(_SameSiteOnly, allowed_hosts=allowed_hosts)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok", **info, "queue": {"pending": worker.pending, "max": max_waiting + 1}}

    @app.get("/api/recent")
    async def recent(limit: int = 12) -> dict:
        return {"results": await asyncio.to_thread(store.recent, max(0, min(limit, 100)))}

    @app.post("/api/uploads")
    async def upload(request: Request, name: str = "") -> JSONResponse:
        upload_id = new_id()
        try:
            path = store.upload_path(upload_id, Path(name).suffix)
        except ValueError as err:
            return _error(400, str(err))
        store.hold([upload_id])  # from before it is in place until the cap has run with it kept: a result finishing
        try:  # while its check waited dropped it, and the user was told the file "cannot decode"
            return await _receive_upload(request, upload_id, path)
        finally:
            store.release([upload_id])

    async def _receive_upload(request: Request, upload_id: str, path: Path) -> JSONResponse:
        size = 0
        try:
            with atomic_path(path) as tmp, tmp.open("wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise _TooLarge
                    f.write(chunk)
        except _TooLarge:  # atomic_path removed the partial file
            return _error(413, f"the upload is larger than this server's limit of {max_upload_bytes} bytes")
        try:  # on the worker: its torch resize runs on the one torch thread, queued like a generation
            future = worker.submit(lambda: _check_upload(path, pipe.config.fps, frame_size))
        except Busy as err:
            path.unlink(missing_ok=True)
            return _error(503, str(err))
        # a client gone while the check waits cancels it: the unchecked file, whose id nobody got, is removed
        future.add_done_callback(lambda f: path.unlink(missing_ok=True) if f.cancelled() else None)
        try:
            file_frames, count = await result_unless_gone(future, request.is_disconnected)
        except ClientGone:
            return _error(499, "the client disconnected before its upload was checked")  # nobody reads it
        except ValueError as err:
            path.unlink(missing_ok=True)
            return _error(400, str(err).replace(str(path), path.name))  # not the server's folders
        except Exception as err:  # a bug: the file it could not check is not kept, and the page gets JSON
            path.unlink(missing_ok=True)
            log.exception("checking upload %s failed", path.name)
            return _error(500, f"checking the upload failed: {type(err).__name__}")
        store.enforce_cap(keep=upload_id)
        return JSONResponse({"id": upload_id, "frames": count, "file_frames": file_frames})

    @app.post("/api/generate")
    async def generate(request: Request) -> JSONResponse:
        try:
            body = json.loads(await _read_body(request, MAX_JSON_BYTES))
        except _TooLarge:
            return _error(413, f"the request body is larger than {MAX_JSON_BYTES} bytes")
        except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
            return _error(400, 'the request body must be JSON, e.g. {"prompt": "a red circle moving left"}')
        held: list[str] = []  # uploads this request reads: the size cap must not drop them until it has run

        def claim(upload_id: object) -> Path:
            path = store.claim_upload(upload_id)
            held.append(file_id(path))
            return path

        try:
            gen_request = parse_request(body, claim, max_frames, pipe.config.num_frames)
        except ValueError as err:
            store.release(held)
            return _error(400, str(err))
        submitted = time.perf_counter()

        def job() -> dict:
            try:
                return _run_job(pipe, store, gen_request, submitted)
            finally:
                store.release(held)

        try:
            future = worker.submit(job)
        except Busy as err:
            store.release(held)
            return _error(503, str(err))
        # A client that disconnects while its job waits cancels the job (result_unless_gone), which then never runs
        # its own release: the cap would have kept its uploads for the server's lifetime.
        future.add_done_callback(lambda f: store.release(held) if f.cancelled() else None)
        try:
            record = await result_unless_gone(future, request.is_disconnected)
        except ClientGone:
            return _error(499, "the client disconnected before its job ran")  # nobody reads it
        except (OutputWriteError, OSError) as err:  # the server's fault (a full disk), not the input's: its folders
            log.error("writing a result failed: %s", err)  # stay out of the answer (an OSError names its file)
            reason = err.reason if isinstance(err, OutputWriteError) else err.strerror or type(err).__name__
            return _error(500, f"the server could not write the result: {reason}")
        except ValueError as err:
            return _error(400, str(err).replace(f"{store.uploads}{os.sep}", ""))  # not the server's folders
        except Exception as err:  # a bug, not the user's input: logged with its traceback
            log.exception("generation failed")
            return _error(500, f"generation failed: {type(err).__name__}: {err}")
        return JSONResponse(record)

    @app.api_route("/outputs/{name}", methods=["GET", "HEAD"])  # players and link checkers ask HEAD first (a 405)
    async def output(name: str, request: Request) -> Response:
        path = store.claim_served(name)  # held from the cap until sent: dropped mid-response, it was a plain 500
        if path is None:
            raise HTTPException(404, f"no finished result named {name!r}")
        release = functools.partial(store.release, [file_id(path)])
        try:
            size = path.stat().st_size
            problem = _range_problem(request.headers.get("range"), size)
        except BaseException:  # not left held from the cap by a failure before the response takes it
            release()
            raise
        if problem is not None:  # Starlette's own answer to these is a plain-text 400
            release()
            response = _error(*problem)
            if problem[0] == 416:  # RFC 9110 15.5.17: a 416 says the file's length
                response.headers["content-range"] = f"bytes */{size}"
            return response
        media = "video/mp4" if path.suffix == ".mp4" else "image/png"
        whole = not _bytes_range(request.headers.get("range"))
        return _HeldFileResponse(path, release, whole=whole, media_type=media)

    return app
