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
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from core.files import atomic_path
from core.video_io import PIL_EXTS
from core.video_probe import frame_count, image_canvas, image_frames_at_most, video_pixels_to_decode
from pipelines import VideoPipeline
from pipelines.context import frame_indices, read_kept
from pipelines.generate import GeneratedFiles, GenerationRequest, generate_with
from pipelines.io import OutputWriteError
from videoserve.requests import parse_request
from videoserve.store import OutputStore, file_id, new_id
from videoserve.web import HeldFileResponse, SameSiteOnly, bytes_range, error_response, range_problem
from videoserve.worker import Busy, ClientGone, GenerationWorker, result_unless_gone

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 * 1024
MAX_IMAGE_FRAMES = 4096  # an animated upload's frames: Pillow walks them all, on the one worker, to count and time
# Pixels an upload's check may decode, on the one worker: an animated image's frames x its canvas (a GIF on a 9000 x
# 9000 canvas is refused after 26 frames, 8-10 s on 2 busy cores; 4,096 frames of 512 x 512 or less pass), or a
# video's frames from the keyframe before the last frame it gives, x the frame size (1,035 1080p frames). A 94 KB GIF
# of 4,096 frames on a 9000 x 9000 canvas would have held it about 50 minutes.
MAX_DECODE_PIXELS = 2**31
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
KNOBS = {  # shown per style
    "ar": ("cfg_scale", "temperature", "context_temperature"),
    "maskgit": (
        "cfg_scale",
        "steps",
        "temperature",
        "context_temperature",
        "choice_temperature",
        "context_choice_temperature",
    ),
}


class _TooLarge(Exception):
    """An upload passed the size limit."""


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes while it arrives (a chunked body has no Content-Length to check)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def _check_upload(path: Path, fps: float, frame_size: tuple[int, int]) -> tuple[int, int]:
    """(frames in the file, frames it gives at the model's rate), counted from the file's index, after decoding its
    last one as a request will: an upload of 10^5 frames is not decoded whole just to be counted (a continuation
    reads only its last frames, an image its one). An animated image has no index: one of more than
    :data:`MAX_IMAGE_FRAMES` frames, or of more than :data:`MAX_DECODE_PIXELS` over its canvas, is refused after that
    many seeks (a 230 KB GIF of 10^4 frames held the worker 24 s); a video whose last frame needs more than
    :data:`MAX_DECODE_PIXELS` decoded from its keyframe is refused from its index."""
    image = path.suffix.lower() in PIL_EXTS
    if image:
        width, height = image_canvas(path)
        limit = max(1, min(MAX_IMAGE_FRAMES, MAX_DECODE_PIXELS // (width * height)))
        file_frames = image_frames_at_most(path, limit)
        if file_frames > limit:
            raise ValueError(f"an animated image of more than {limit} frames on a {width}x{height} canvas: upload it "
                             "as an mp4")  # fmt: skip
    else:
        file_frames = frame_count(path)
    keep = frame_indices(path, fps)  # an animated image's frames walked once more, for their delays
    if not image and keep and video_pixels_to_decode(path, keep[-1]) > MAX_DECODE_PIXELS:
        raise ValueError("the video's last frame lies too far after its keyframe to decode on this server: "
                         "re-encode it with more keyframes (ffmpeg -g 30) or trim it")  # fmt: skip
    read_kept(path, keep[-1:], frame_size)  # decoded as a request will: the last frame it gives
    return file_frames, len(keep)


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

    app.add_middleware(SameSiteOnly, allowed_hosts=allowed_hosts)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg', 'invalid request')}")

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
            return error_response(400, str(err))
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
            return error_response(413, f"the upload is larger than this server's limit of {max_upload_bytes} bytes")
        except ClientDisconnect:  # the same, and no traceback in the log; nobody reads the answer
            return error_response(499, "the client disconnected while sending its upload")
        try:  # on the worker: its torch resize runs on the one torch thread, queued like a generation
            future = worker.submit(lambda: _check_upload(path, pipe.config.fps, frame_size))
        except Busy as err:
            path.unlink(missing_ok=True)
            return error_response(503, str(err))
        # a client gone while the check waits cancels it: the unchecked file, whose id nobody got, is removed
        future.add_done_callback(lambda f: path.unlink(missing_ok=True) if f.cancelled() else None)
        try:
            file_frames, count = await result_unless_gone(future, request.is_disconnected)
        except ClientGone:
            return error_response(499, "the client disconnected before its upload was checked")  # nobody reads it
        except ValueError as err:
            path.unlink(missing_ok=True)
            return error_response(400, str(err).replace(str(path), path.name))  # not the server's folders
        except Exception as err:  # a bug: the file it could not check is not kept, and the page gets JSON
            path.unlink(missing_ok=True)
            log.exception("checking upload %s failed", path.name)
            return error_response(500, f"checking the upload failed: {type(err).__name__}")
        store.enforce_cap(keep=upload_id)
        return JSONResponse({"id": upload_id, "frames": count, "file_frames": file_frames})

    @app.post("/api/generate")
    async def generate(request: Request) -> JSONResponse:
        try:
            body = json.loads(await _read_body(request, MAX_JSON_BYTES))
        except _TooLarge:
            return error_response(413, f"the request body is larger than {MAX_JSON_BYTES} bytes")
        except ClientDisconnect:
            return error_response(499, "the client disconnected while sending its request")
        except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
            return error_response(400, 'the request body must be JSON, e.g. {"prompt": "a red circle moving left"}')
        held: list[str] = []  # uploads this request reads: the size cap must not drop them until it has run

        def claim(upload_id: object) -> Path:
            path = store.claim_upload(upload_id)
            held.append(file_id(path))
            return path

        try:
            gen_request = parse_request(body, claim, max_frames, pipe.config.num_frames)
        except ValueError as err:
            store.release(held)
            return error_response(400, str(err))
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
            return error_response(503, str(err))
        # A client that disconnects while its job waits cancels the job (result_unless_gone), which then never runs
        # its own release: the cap would have kept its uploads for the server's lifetime.
        future.add_done_callback(lambda f: store.release(held) if f.cancelled() else None)
        try:
            record = await result_unless_gone(future, request.is_disconnected)
        except ClientGone:
            return error_response(499, "the client disconnected before its job ran")  # nobody reads it
        except (OutputWriteError, OSError) as err:  # the server's fault (a full disk), not the input's: its folders
            log.error("writing a result failed: %s", err)  # stay out of the answer (an OSError names its file)
            reason = err.reason if isinstance(err, OutputWriteError) else err.strerror or type(err).__name__
            return error_response(500, f"the server could not write the result: {reason}")
        except ValueError as err:
            return error_response(400, str(err).replace(f"{store.uploads}{os.sep}", ""))  # not the server's folders
        except Exception as err:  # a bug, not the user's input: logged with its traceback
            log.exception("generation failed")
            return error_response(500, f"generation failed: {type(err).__name__}: {err}")
        return JSONResponse(record)

    @app.api_route("/outputs/{name}", methods=["GET", "HEAD"])  # players and link checkers ask HEAD first (a 405)
    async def output(name: str, request: Request) -> Response:
        path = store.claim_served(name)  # held from the cap until sent: dropped mid-response, it was a plain 500
        if path is None:
            raise HTTPException(404, f"no finished result named {name!r}")
        release = functools.partial(store.release, [file_id(path)])
        try:
            size = path.stat().st_size
            problem = range_problem(request.headers.get("range"), size)
        except BaseException:  # not left held from the cap by a failure before the response takes it
            release()
            raise
        if problem is not None:  # Starlette's own answer to these is a plain-text 400
            release()
            response = error_response(*problem)
            if problem[0] == 416:  # RFC 9110 15.5.17: a 416 says the file's length
                response.headers["content-range"] = f"bytes */{size}"
            return response
        media = "video/mp4" if path.suffix == ".mp4" else "image/png"
        whole = not bytes_range(request.headers.get("range"))
        return HeldFileResponse(path, release, whole=whole, media_type=media)

    return app
