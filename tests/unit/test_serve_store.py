"""The web demo's output folder: the size cap drops the oldest results and never one being written, served or
read, and uploads are held while a request needs them."""

import threading

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

import videoserve.app as app_module  # noqa: E402
from tests.helpers.serving import LOCAL, pipe  # noqa: E402, F401 - the shipped model, loaded once per module
from videoserve.app import create_app  # noqa: E402
from videoserve.store import UPLOADS, OutputStore, new_id  # noqa: E402


def test_cap_drops_oldest_results_first(tmp_path):
    store = OutputStore(tmp_path, max_bytes=2500)
    ids = []
    for _ in range(5):
        rid = store.reserve()
        video, sheet = store.result_paths(rid)
        video.write_bytes(b"v" * 600)
        sheet.write_bytes(b"s" * 300)
        store.finish(rid, {"id": rid})
        ids.append(rid)
    left = {p.name.split(".")[0] for p in tmp_path.glob("*.mp4")}
    assert left == set(ids[-2:])  # 2 x ~920 bytes fit, 3 would not
    assert store.size() <= 2500
    assert [r["id"] for r in store.recent(10)] == ids[:-3:-1]


def test_the_cap_and_the_listing_leave_other_files_in_the_folder_alone(tmp_path):
    """``--out outputs`` (where generate.py also writes) once lost the user's oldest files to the cap, any file
    grouped by the text before its first dot, and ``/api/recent`` served every JSON file there."""
    mine = {
        "old/holiday.mp4": b"h" * 5000,
        "settings.json": b'{"api_key": "secret"}',
        "notes.txt": b"n" * 3000,
        "video.mp4": b"g" * 4000,
        f"{'a' * 32}.txt": b"x" * 2000,
        f"{UPLOADS}/{'b' * 32}.exe": b"e" * 2000,
    }
    for name, data in mine.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    store = OutputStore(tmp_path, max_bytes=1000)
    assert store.size() == 0 and store.recent(10) == []
    ids = []
    for _ in range(3):
        rid = store.reserve()
        store.result_paths(rid)[0].write_bytes(b"v" * 600)
        store.finish(rid, {"id": rid})
        ids.append(rid)
    assert [r["id"] for r in store.recent(10)] == [ids[-1]]  # the cap kept the newest result, and only results listed
    for name, data in mine.items():
        assert (tmp_path / name).read_bytes() == data, name


def test_a_killed_servers_temp_files_count_against_the_cap_and_go_with_it(tmp_path):
    """A server killed while writing left hidden ``.<id>.tmpXXXXXXXX.mp4`` files (and uploads' likewise) that the
    cap neither counted nor removed: they stayed forever. A user's own hidden files are still left alone."""
    dead, gone = "c" * 32, "d" * 32
    leftovers = [tmp_path / f".{dead}.tmp0123abcd.mp4", tmp_path / f".{dead}.tmp89abcdef.png",
                 tmp_path / UPLOADS / f".{gone}.tmp00ff00ff.gif"]  # fmt: skip
    mine = [tmp_path / ".holiday.tmp0123abcd.mp4", tmp_path / f".{dead}.mp4.swp"]
    for path in leftovers + mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"t" * 400)
    store = OutputStore(tmp_path, max_bytes=1000)
    assert store.size() == 3 * 400
    writing = store.reserve()  # a result being written now: its temp file is safe
    live = store.result_paths(writing)[0].with_name(f".{writing}.tmp11223344.mp4")
    live.write_bytes(b"w" * 300)
    done = store.reserve()
    store.result_paths(done)[0].write_bytes(b"v" * 300)
    store.finish(done, {"id": done})
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in mine) and live.exists()


def test_cap_never_drops_a_result_being_written(tmp_path):
    store = OutputStore(tmp_path, max_bytes=100)
    busy = store.reserve()
    store.result_paths(busy)[0].write_bytes(b"v" * 500)
    done = store.reserve()
    store.result_paths(done)[0].write_bytes(b"v" * 500)
    store.finish(done, {"id": done})
    assert store.result_paths(busy)[0].exists() and store.result_paths(done)[0].exists()


def test_cap_keeps_a_result_while_it_is_served(tmp_path):
    """The cap (run by a result finishing or an upload, on other threads) deleted a file between the route finding it
    and the response sending it: a plain-text 500 instead of the file or a JSON 404."""
    store = OutputStore(tmp_path, max_bytes=100)
    served = store.reserve()
    store.result_paths(served)[0].write_bytes(b"v" * 500)
    store.finish(served, {"id": served})  # kept: the caller's own result
    path = store.claim_served(f"{served}.mp4")
    assert path is not None and store.enforce_cap() == [] and path.exists()  # held while it is sent
    store.release([served])
    assert store.enforce_cap() == [served] and not path.exists()


def test_a_served_result_is_released_once_sent(pipe, tmp_path):
    """The hold taken for a response is given back when it is done: a leaked hold kept the file past the cap."""
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    with TestClient(create_app(pipe, store), base_url=LOCAL) as client:
        body = client.post("/api/generate", json={"prompt": "a red circle moving left"}).json()
        assert client.get(body["video"]).status_code == 200
        assert client.get(body["video"], headers={"Range": "bytes=9999999-"}).status_code == 416
    assert not store._held


def test_an_upload_larger_than_the_store_is_refused(pipe, tmp_path):
    """With --max-upload-mb above --max-output-mb one upload dropped every result and left the folder over its cap."""
    store = OutputStore(tmp_path / "out", max_bytes=1000)
    with TestClient(create_app(pipe, store, max_upload_bytes=10**6), base_url=LOCAL) as client:
        r = client.post("/api/uploads?name=big.png", content=b"x" * 1500)
    assert r.status_code == 413 and "limit of 1000 bytes" in r.json()["error"]


def test_cap_keeps_uploads_that_waiting_requests_will_read(tmp_path):
    """An upload named by a queued request was the oldest file, so the cap dropped it before the request ran."""
    store = OutputStore(tmp_path, max_bytes=100)
    upload = new_id()
    store.upload_path(upload, ".png").write_bytes(b"u" * 500)
    store.hold([upload])
    done = store.reserve()
    store.result_paths(done)[0].write_bytes(b"v" * 50)
    store.finish(done, {"id": done})
    assert store.find_upload(upload).exists()
    store.release([upload])
    store.enforce_cap()
    with pytest.raises(ValueError, match="no upload with id"):
        store.find_upload(upload)


def test_claiming_an_upload_holds_it_in_the_same_step(tmp_path, monkeypatch):
    """The request found its upload, then the cap (run by a finishing result) dropped it before the hold: a 400."""
    store = OutputStore(tmp_path, max_bytes=100)
    upload = new_id()
    store.upload_path(upload, ".png").write_bytes(b"u" * 500)
    real_find, cap = store.find_upload, threading.Thread(target=store.enforce_cap)

    def find_then_cap(upload_id):  # another thread's cap runs right after the file was found
        path = real_find(upload_id)
        cap.start()
        cap.join(0.5)  # without the lock it finishes here and drops the file
        return path

    monkeypatch.setattr(store, "find_upload", find_then_cap)
    path = store.claim_upload(upload)
    cap.join()  # it waited for the store's lock, then found the upload held
    assert path.exists()
    store.release([upload])
    store.enforce_cap()
    assert not path.exists()


def test_a_refused_request_releases_the_uploads_it_claimed(pipe, tmp_path):
    store = OutputStore(tmp_path, max_bytes=10**9)
    upload = new_id()
    frame = np.zeros((64, 64, 3), np.uint8)
    Image.fromarray(frame).save(store.upload_path(upload, ".png"))
    with TestClient(create_app(pipe, store), base_url=LOCAL) as c:
        r = c.post("/api/generate", json={"image": upload, "video": "f" * 32, "prompt": "a red square moving right"})
    assert r.status_code == 400 and "no upload with id" in r.json()["error"]
    assert not store._held  # still held, the cap could never drop it


def test_ids_are_not_sequential(tmp_path):
    store = OutputStore(tmp_path, max_bytes=10**6)
    ids = {store.reserve() for _ in range(200)}
    assert len(ids) == 200 and len({i[:6] for i in ids}) > 190


def test_the_cap_tolerates_a_file_deleted_between_its_listing_and_its_stat(tmp_path, monkeypatch):
    """A failed result's discard and a refused upload delete their files without the store's lock: a cap running
    at that moment listed the file, then stat() raised FileNotFoundError, a 500 for an unrelated request."""
    store = OutputStore(tmp_path, max_bytes=10)
    old, gone = new_id(), new_id()
    (tmp_path / f"{old}.mp4").write_bytes(b"x" * 100)
    (tmp_path / f"{old}.json").write_text("{}")
    listed = store._own_files

    def listing_then_delete():
        groups = listed()
        groups[gone] = [tmp_path / f"{gone}.mp4"]  # listed, then deleted by another thread before its stat
        return groups

    monkeypatch.setattr(store, "_own_files", listing_then_delete)
    assert store.enforce_cap() == [old] and not (tmp_path / f"{old}.mp4").exists()


def test_a_cancelled_waiting_job_releases_the_uploads_it_held(pipe, tmp_path, monkeypatch):
    """A client that disconnects while its job waits cancels the job, which then never ran its own release: the
    cap kept that request's uploads for the server's lifetime."""
    from concurrent.futures import Future

    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    frame = np.zeros((64, 64, 3), np.uint8)
    path = tmp_path / "first.png"
    Image.fromarray(frame).save(path)
    with TestClient(create_app(pipe, store), base_url=LOCAL, raise_server_exceptions=False) as c:
        upload = c.post("/api/uploads?name=first.png", content=path.read_bytes()).json()["id"]

        def cancelled_at_once(job):
            future = Future()
            future.cancel()  # what a disconnect does to a job still in the queue
            return future

        monkeypatch.setattr("videoserve.worker.GenerationWorker.submit", lambda self, job: cancelled_at_once(job))
        c.post("/api/generate", json={"image": upload, "prompt": "a red square moving right"})
    assert not store._held


def test_a_client_gone_while_its_job_waits_cancels_the_job(pipe, tmp_path, monkeypatch):
    """Uvicorn does not cancel an endpoint whose client leaves, so the cancel above never happened in a real server:
    a queued job ran anyway, held a place in the queue and wrote a result that nobody fetched."""
    import threading
    from concurrent.futures import Future

    futures = []

    def queued(job):  # a job that would finish 30 s later (the old code then answered), unless cancelled first
        future = Future()
        futures.append(future)
        finish = lambda: future.set_running_or_notify_cancel() and future.set_result({"id": "ran anyway"})  # noqa: E731
        timer = threading.Timer(30.0, finish)
        timer.daemon = True  # a loaded machine's slow first poll must not let the job finish first
        timer.start()
        return future

    async def gone(self):
        return True

    monkeypatch.setattr("videoserve.worker.GenerationWorker.submit", lambda self, job: queued(job))
    monkeypatch.setattr("starlette.requests.Request.is_disconnected", gone)
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    with TestClient(create_app(pipe, store), base_url=LOCAL) as c:
        r = c.post("/api/generate", json={"prompt": "a red square moving right"})
    assert futures[0].cancelled() and r.status_code == 499


def test_an_upload_is_kept_from_the_cap_while_its_check_waits(pipe, tmp_path, monkeypatch):
    """The upload was in place, unheld, while its check waited behind a generation: the result that generation
    finished was kept by the cap and the upload dropped, and the user was told the file "cannot decode"."""
    import io

    frame = np.zeros((64, 64, 3), np.uint8)
    frame[20:36, 10:26] = (230, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    store = OutputStore(tmp_path / "out", max_bytes=len(buf.getvalue()) + 100)
    real_check = app_module._check_upload

    def a_result_finishes_first(*args):  # what the worker does before it reaches this check
        result = store.reserve()
        store.result_paths(result)[0].write_bytes(b"v" * 150)
        store.finish(result, {"id": result})  # the cap runs, keeping the new result
        return real_check(*args)

    monkeypatch.setattr(app_module, "_check_upload", a_result_finishes_first)
    with TestClient(create_app(pipe, store), base_url=LOCAL) as client:
        r = client.post("/api/uploads?name=first.png", content=buf.getvalue())
    assert r.status_code == 200, r.text
    assert store.find_upload(r.json()["id"]).exists() and not store._held
