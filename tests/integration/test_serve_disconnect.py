"""A real uvicorn server: a client that leaves while its job waits in the queue cancels that job."""

import json
import socket
import threading
import time
import urllib.request

import pytest

pytest.importorskip("fastapi")

from pipelines import VideoPipeline  # noqa: E402
from pipelines.video import DEFAULT_MODEL_DIR  # noqa: E402
from tests.helpers.live_server import live_server  # noqa: E402
from videoserve import app as app_module  # noqa: E402
from videoserve.store import OutputStore  # noqa: E402


def _wait_until(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_client_gone_while_its_job_waits_cancels_it_on_a_real_server(tmp_path, monkeypatch):
    """Starlette's @app.middleware("http") wrapped receive, and behind it Request.is_disconnected() never saw a client
    leave under uvicorn: the queued job ran anyway, held its place in the queue and wrote a result nobody fetched. A
    unit test that patches is_disconnected cannot see this; a socket closed on a real server can."""
    release, ran = threading.Event(), []

    def job(pipe, store, request, submitted):  # the first job holds the worker until released
        ran.append(request.seed)
        if len(ran) == 1:
            release.wait(60)
        return {"id": f"seed{request.seed}"}

    monkeypatch.setattr(app_module, "_run_job", job)
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    app = app_module.create_app(VideoPipeline.from_pretrained(DEFAULT_MODEL_DIR), store, max_waiting=2)
    worker = app.state.worker
    with live_server(app) as base:
        port = int(base.rsplit(":", 1)[1])
        first = threading.Thread(target=lambda: urllib.request.urlopen(
            urllib.request.Request(f"{base}/api/generate", data=json.dumps({"seed": 1}).encode(),
                                   headers={"Content-Type": "application/json"}), timeout=60).read())  # fmt: skip
        first.start()
        assert _wait_until(lambda: ran == [1])
        body = json.dumps({"seed": 2}).encode()
        with socket.create_connection(("127.0.0.1", port)) as gone:
            gone.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body))  # fmt: skip
            assert _wait_until(lambda: worker.pending == 2)  # queued behind the first
        assert _wait_until(lambda: worker.pending == 1), "the job of the client that left was not cancelled"
        release.set()
        first.join(60)
        assert _wait_until(lambda: worker.pending == 0)
    assert ran == [1]  # the second job never ran
