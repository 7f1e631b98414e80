"""The web demo under faults a user can cause: a removed output folder, a full disk while a record is written,
an upload that is huge in pixels, a quick restart, and the thread that runs torch for an upload."""

import asyncio
import errno
import shutil
import socket
import threading

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

import videoserve.store as store_module  # noqa: E402
from core.files import hold_lock, release_lock  # noqa: E402
from tests.helpers.serving import LOCAL, pipe  # noqa: E402, F401 - the shipped model, loaded once per module
from videoserve.app import create_app  # noqa: E402
from videoserve.server import check_port  # noqa: E402
from videoserve.store import UPLOADS, OutputStore  # noqa: E402

REQUEST = {"prompt": "a red circle moving left", "num_frames": 5}


def test_removing_the_uploads_folder_while_serving_is_not_a_500(pipe, tmp_path):
    """The cap listed uploads/ after each result: once a user had removed it every request was a 500 that named
    the server's folder, though its result had been made and listed."""
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    with TestClient(create_app(pipe, store, model_name="shapes"), base_url=LOCAL) as c:
        shutil.rmtree(tmp_path / "out" / UPLOADS)
        r = c.post("/api/generate", json=REQUEST)
        assert r.status_code == 200, r.text
        assert c.get(r.json()["video"]).status_code == 200
        up = c.post("/api/uploads?name=still.png", content=_png_bytes(np.zeros((64, 64, 3), np.uint8)))
        assert up.status_code == 200, up.text  # and an upload makes the folder again


def test_a_record_that_cannot_be_written_leaves_no_files_the_cap_cannot_drop(pipe, tmp_path, monkeypatch):
    """A full disk while the record was written: the mp4 and png stayed, unlisted, and the id stayed busy, so the
    cap skipped them for the server's lifetime."""
    real, calls = store_module.atomic_write_json, []

    def full_disk_once(path, data, **kw):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, **kw)

    monkeypatch.setattr(store_module, "atomic_write_json", full_disk_once)
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    with TestClient(create_app(pipe, store, model_name="shapes"), base_url=LOCAL) as c:
        assert c.post("/api/generate", json=REQUEST).status_code == 500
        assert not store._busy
        assert not [p.name for p in (tmp_path / "out").iterdir() if p.is_file()]
        assert c.post("/api/generate", json=REQUEST).status_code == 200


def test_a_result_whose_cap_check_fails_is_removed_with_its_record(pipe, tmp_path, monkeypatch):
    """The files of a failed result were removed but not its record, which then listed a video that was gone."""
    store = OutputStore(tmp_path / "out", max_bytes=10**9)

    def broken_cap(keep=""):
        raise RuntimeError("cap failed")

    monkeypatch.setattr(store, "enforce_cap", broken_cap)
    with TestClient(create_app(pipe, store, model_name="shapes"), base_url=LOCAL) as c:
        assert c.post("/api/generate", json=REQUEST).status_code == 500
        assert c.get("/api/recent").json()["results"] == []
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.is_file()]


def test_an_upload_huge_in_pixels_is_shrunk_before_its_float_resize(pipe, tmp_path, monkeypatch):
    """A one-colour 6000x6000 PNG is a few KB, but its float copies for the resize to 64x64 took gigabytes (1.7 GB at
    9000x9000). It is box-reduced first, so the resize sees at most a few times the target; it runs on the worker
    thread, the one thread that runs torch (a second OpenMP team halves generation speed)."""
    import core.frames

    sizes, threads = [], []
    real = core.frames.F.interpolate

    def spy(x, *a, **kw):
        sizes.append(tuple(x.shape[-2:]))
        threads.append(threading.current_thread().name)
        return real(x, *a, **kw)

    monkeypatch.setattr(core.frames.F, "interpolate", spy)
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    frame = np.zeros((6000, 6000, 3), np.uint8)
    frame[:, 3000:] = (255, 0, 0)
    with TestClient(create_app(pipe, store, model_name="shapes"), base_url=LOCAL) as c:
        r = c.post("/api/uploads?name=big.png", content=_png_bytes(frame))
        assert r.status_code == 200 and r.json()["frames"] == 1, r.text
    assert sizes and max(max(s) for s in sizes) <= 4 * 64, sizes
    assert set(threads) == {"tokvid-generate_0"}, threads


def test_a_large_grey_or_rgb_image_reads_as_the_same_picture_after_the_box_reduction(tmp_path):
    """The box reduction changes pixels only by rounding: halves of two colours stay those colours."""
    from core.video_io import read_video

    for mode, frame in (("RGB", np.zeros((1200, 1600, 3), np.uint8)), ("L", np.zeros((1200, 1600), np.uint8))):
        frame[:, 800:] = 200
        Image.fromarray(frame, mode).save(tmp_path / f"{mode}.png")
        got = read_video(tmp_path / f"{mode}.png", size=64)[0].astype(int)  # (64, 64, 3): the centre crop
        assert np.abs(got[:, :28] - 0).max() <= 1 and np.abs(got[:, 36:] - 200).max() <= 1


def test_a_port_left_in_time_wait_by_the_last_run_is_not_refused():
    """check_port bound without SO_REUSEADDR: after a served connection, a restart within ~60 s was refused with
    "Address already in use" although uvicorn (which sets it) could listen there."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first: its end of the connection waits in TIME_WAIT
        client.close()
    check_port("127.0.0.1", port)


def test_an_upload_limit_under_one_byte_is_refused_at_start(capsys):
    from tools.serve import main

    assert main(["--port", "1", "--model", "/nonexistent", "--max-upload-mb", "1e-7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --max-upload-mb must be at least one byte, got 1e-07"]


def _png_bytes(frame: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def test_a_second_server_on_one_output_folder_is_refused_before_its_model_loads(tmp_path, capsys):
    """Two servers on one --out (the default outputs/serve, a second model on another port) each capped the folder
    by their own in-memory view: one deleted the other's held uploads and its videos while they were written."""
    from tests.helpers.faults import free_port
    from tools.serve import main

    out = tmp_path / "serve"
    out.mkdir()
    held = hold_lock(out / ".serve.lock", "held")  # a server running on it
    try:
        assert main(["--port", str(free_port()), "--model", "/nonexistent", "--out", str(out)]) == 2
    finally:
        release_lock(held)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another tokvid server uses --out" in err[0]  # not the model's error: it never loaded
    # let go, the folder serves again; a server that fails (here its model) leaves no folder it made
    assert main(["--port", str(free_port()), "--model", "/nonexistent", "--out", str(tmp_path / "new")]) == 2
    assert "another tokvid server" not in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert main(["--port", str(free_port()), "--model", "/nonexistent", "--out", str(out)]) == 2
    assert "another tokvid server" not in capsys.readouterr().err and list(out.iterdir()) == []


@pytest.mark.parametrize("path", ["/api/uploads?name=a.png", "/api/generate"])
def test_a_client_that_disconnects_while_sending_leaves_no_file_and_no_traceback(pipe, tmp_path, caplog, path):
    """A client that hung up mid-body raised Starlette's ClientDisconnect out of the handler: a ~60-line "Exception
    in ASGI application" traceback in the server's log for each one."""
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    app = create_app(pipe, store, model_name="shapes")
    target, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": target, "raw_path": target.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"localhost"), (b"content-length", b"1000")], "client": ("127.0.0.1", 5),
             "server": ("127.0.0.1", 8000)}  # fmt: skip
    messages = iter([{"type": "http.request", "body": b"{" * 10, "more_body": True}, {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages, {"type": "http.disconnect"})

    async def send(message):
        sent.append(message)

    with caplog.at_level("ERROR"):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.exc_info] and "Traceback" not in caplog.text
    assert not list(store.uploads.iterdir())  # the partial upload was removed
