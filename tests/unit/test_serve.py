"""The web demo's API through an HTTP client, on the shipped model: results, files, bad input, queue and cap."""

import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

import videoserve.app as app_module  # noqa: E402
from core.video_io import read_video  # noqa: E402
from pipelines import VideoPipeline  # noqa: E402
from pipelines.generate import generate_to_files  # noqa: E402
from pipelines.video import DEFAULT_MODEL_DIR  # noqa: E402
from videoserve.app import KNOBS, create_app  # noqa: E402
from videoserve.server import check_host  # noqa: E402
from videoserve.store import UPLOADS, OutputStore, new_id  # noqa: E402

LOCAL = "http://127.0.0.1:8000"  # the Host a browser on this machine sends


@pytest.fixture(scope="module")
def pipe():
    return VideoPipeline.from_pretrained(DEFAULT_MODEL_DIR)


@pytest.fixture()
def client(pipe, tmp_path):
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    with TestClient(create_app(pipe, store, max_waiting=1, max_frames=33, model_name="shapes"), base_url=LOCAL) as c:
        yield c


@pytest.fixture(scope="module")
def served(pipe, tmp_path_factory):
    """One generation through the API and the same request through the library, for several tests."""
    out = tmp_path_factory.mktemp("served")
    store = OutputStore(out / "out", max_bytes=10**9)
    with TestClient(create_app(pipe, store, model_name="shapes"), base_url=LOCAL) as c:
        r = c.post("/api/generate", json={"prompt": "a blue square moving up", "seed": 3, "mode": "ar"})
        video = c.get(r.json()["video"]) if r.status_code == 200 else None
        sheet = c.get(r.json()["sheet"]) if r.status_code == 200 else None
        recent = c.get("/api/recent").json()
    cli = generate_to_files("a blue square moving up", seed=3, mode="ar", out=out / "cli.mp4", progress=False)
    return {"response": r, "video": video, "sheet": sheet, "recent": recent, "store": store, "cli": cli, "out": out}


def test_generate_returns_the_record_and_playable_files(served, pipe):
    r = served["response"]
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["id"]) == 32 and int(body["id"], 16) >= 0
    assert (body["mode"], body["order"], body["num_frames"], body["size"]) == ("ar", "frame", 17, [64, 64])
    assert body["video"] == f"/outputs/{body['id']}.mp4" and body["sheet"] == f"/outputs/{body['id']}.png"
    assert body["sampling"]["cfg_scale"] == pipe.config.sampling["ar"].cfg_scale and body["seed"] == 3
    assert set(body["timings"]) >= {"queued", "sampling", "decoding", "writing", "total"}
    assert served["video"].status_code == 200 and served["video"].headers["content-type"] == "video/mp4"
    assert served["sheet"].status_code == 200 and served["sheet"].headers["content-type"] == "image/png"
    path = served["out"] / "got.mp4"
    path.write_bytes(served["video"].content)
    frames = read_video(path)
    assert frames.shape == (17, 64, 64, 3)
    # The server runs the library's generation: the same request gives the same video as generate.py.
    cli = read_video(served["cli"].written[0])
    assert np.abs(frames.astype(int) - cli.astype(int)).mean() < 1.0
    assert served["recent"]["results"][0]["id"] == body["id"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": ""}, "the prompt is empty"),
        ({"prompt": "x", "mode": "ar", "order": "clip"}, "supports orders"),
        ({"prompt": "x", "mode": "video"}, "mode 'video' is not available"),
        ({"prompt": "x", "mode": ""}, "mode '' is not available"),  # was read as "the default"
        ({"prompt": "x", "mode": "ar", "order": ""}, "not ''"),
        ({"promt": "a red circle"}, "unknown field(s) ['promt']"),
        ({"x" * 60_000: 1, "y": 2}, "unknown field(s) ['xxxxxxxx"),  # a 60 KB key was echoed whole
        ({"label": "z" * 60_000}, "(60000 characters)"),
        ({"prompt": 5}, "prompt must be a string"),
        ({"prompt": ["a", 3]}, "prompt must be a string or a list of strings"),
        ({"prompt": "x", "seed": -1}, "seed must be in"),
        ({"prompt": "x", "seed": True}, "seed must be an integer"),
        ({"prompt": "x", "num_frames": 1000}, "num_frames must be in [1, 33]"),
        ({"prompt": "x", "cfg": "high"}, "cfg must be a number"),
        ({"prompt": "x", "context_temperature": -1}, "context_temperature must be >= 0, got -1"),
        ({"prompt": "x", "context_choice_temperature": -1}, "context_choice_temperature must be >= 0, got -1"),
        ({"prompt": "x", "choice_temperature": "hot"}, "choice_temperature must be a number"),
        # taken and ignored by GPT-style decoding: the video would not change
        ({"prompt": "x", "mode": "ar", "steps": 4}, "steps: only MaskGIT-style decoding reads this"),
        ({"prompt": "x", "mode": "ar", "choice_temperature": 1}, "choice_temperature: only MaskGIT-style decoding"),
        ({"prompt": "x", "image": "../../etc/passwd"}, "no upload with id"),
        ({"prompt": "x", "label": 3}, "not both"),
        ([1, 2], "must be a JSON object"),
        ({"prompt": "x", "steps": 10**30}, "steps must be in [1, 64] on this server"),  # held the worker for ever
    ],
)
def test_bad_requests_get_400_with_one_line(client, body, message):
    r = client.post("/api/generate", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert message in error and "\n" not in error and len(error) < 600


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"prompt": "x", "temperature": NaN}', "temperature must be a finite number"),  # Starlette reads NaN
        (b'{"prompt": "x", "cfg": Infinity}', "cfg must be a finite number"),
        (b"[" * 5000 + b"]" * 5000, "must be JSON"),  # nested past Python's recursion limit
    ],
)
def test_json_that_python_reads_oddly_is_400_not_500(client, raw, message):
    r = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_a_bad_query_parameter_is_400_with_the_servers_error_shape(client):
    r = client.get("/api/recent?limit=abc")
    assert r.status_code == 400 and "limit" in r.json()["error"] and "\n" not in r.json()["error"]


def test_bad_input_matches_the_cli_message(client):
    with pytest.raises(ValueError) as cli:
        generate_to_files("   ", out="unused.mp4")
    r = client.post("/api/generate", json={"prompt": "   "})
    assert r.status_code == 400 and r.json()["error"] == str(cli.value)


def test_not_json_is_400(client):
    r = client.post("/api/generate", content=b"{prompt", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "must be JSON" in r.json()["error"]


@pytest.mark.parametrize("name", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "x.mp4", "0" * 32 + ".json"])
def test_a_name_that_is_no_result_of_the_server_is_404(served, client, name):
    """Paths out of the folder, a name that is no result id, and a result's JSON record are never served (with a
    finished result in the store; an unfinished one is the next test)."""
    r = client.get(f"/outputs/{name}")
    assert r.status_code == 404 and "error" in r.json()


def test_an_unfinished_or_foreign_file_is_not_served(tmp_path):
    store = OutputStore(tmp_path, max_bytes=10**6)
    rid = store.reserve()
    video, _ = store.result_paths(rid)
    video.write_bytes(b"partial")
    assert store.served_file(video.name) is None  # no record yet
    store.finish(rid, {"id": rid})
    assert store.served_file(video.name) == video
    (tmp_path / "secret.mp4").write_bytes(b"x")
    assert store.served_file("secret.mp4") is None


def test_the_choice_temperatures_of_a_request_reach_its_sampling_settings(tmp_path):
    """choice_temperature and context_choice_temperature are fields as generate.py's options are; a body with them
    was refused as unknown fields, so a client could not set MaskGIT's choice noise at all."""
    from videoserve.requests import parse_request

    body = {"prompt": "x", "mode": "maskgit", "choice_temperature": 2.0, "context_choice_temperature": 0.5}
    request = parse_request(body, lambda upload: tmp_path, max_frames=33, default_frames=17)
    assert request.sampling["choice_temperature"] == 2.0 and request.sampling["context_choice_temperature"] == 0.5


def test_health_lists_modes_and_orders(client, pipe):
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["default_mode"] == pipe.config.default_mode
    for mode, gen in pipe.generators.items():
        assert body["modes"][mode]["orders"] == list(gen.config.orders)
        assert body["modes"][mode]["sampling"]["context_temperature"] == pipe.config.sampling[mode].context_temperature
        for order in gen.config.orders:  # what the page shows as the defaults once an order is chosen
            own = asdict(pipe.config.sampling_for(mode, order))
            assert body["modes"][mode]["sampling_by_order"][order] == {k: own[k] for k in KNOBS[gen.config.style]}
    clip = body["modes"]["maskgit"]["sampling_by_order"]["clip"]  # the shipped model's own clip-order entry
    assert (clip["steps"], clip["temperature"]) != (body["modes"]["maskgit"]["sampling"]["steps"],
                                                    body["modes"]["maskgit"]["sampling"]["temperature"])  # fmt: skip
    assert body["queue"] == {"pending": 0, "max": 2}


def test_page_has_the_controls(client):
    page = client.get("/").text
    for control in "prompt mode order seed cfg frames upload temperature ctxtemp".split():
        assert f'id="{control}"' in page
    assert "<video" in page and 'id="gallery"' in page


def test_full_queue_gets_503(pipe, tmp_path, monkeypatch):
    """With one running and one waiting, a third request is refused at once, and the first two finish."""
    release, started = threading.Event(), threading.Event()
    real = app_module.generate_with

    def slow(*args, **kwargs):
        started.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(app_module, "generate_with", slow)
    store = OutputStore(tmp_path, max_bytes=10**9)
    with TestClient(create_app(pipe, store, max_waiting=1), base_url=LOCAL) as c:
        results = {}

        def post(key):
            results[key] = c.post("/api/generate", json={"prompt": "a red circle moving left", "mode": "ar"})

        first = threading.Thread(target=post, args=("first",))
        first.start()
        assert started.wait(60)
        second = threading.Thread(target=post, args=("second",))
        second.start()
        for _ in range(200):  # until the second one is queued
            if c.get("/api/health").json()["queue"]["pending"] == 2:
                break
            threading.Event().wait(0.05)
        third = c.post("/api/generate", json={"prompt": "a red circle moving left"})
        release.set()
        first.join(60)
        second.join(60)
    assert third.status_code == 503 and "busy" in third.json()["error"]
    assert results["first"].status_code == 200 and results["second"].status_code == 200
    assert results["first"].json()["id"] != results["second"].json()["id"]


def test_upload_an_image_and_animate_it(client, tmp_path):
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[20:36, 10:26] = (230, 30, 30)
    path = tmp_path / "first.png"
    Image.fromarray(frame).save(path)
    up = client.post("/api/uploads?name=first.png", content=path.read_bytes())
    assert up.status_code == 200, up.text
    r = client.post("/api/generate", json={"image": up.json()["id"], "prompt": "a red square moving right"})
    assert r.status_code == 200, r.text
    assert r.json()["context"] == "image" and r.json()["num_frames"] == 17
    assert (r.json()["context_frames"], r.json()["segment_frames"]) == (1, None)  # the record says what was given


def test_a_continued_story_records_its_context_and_segment_frames(client, tmp_path):
    """The record (and the gallery) could not tell a 5-frame from a 9-frame continuation, nor a story's segments."""
    from core.video_write import write_video

    write_video(tmp_path / "c.mp4", np.zeros((9, 64, 64, 3), np.uint8), fps=8)
    video = client.post("/api/uploads?name=c.mp4", content=(tmp_path / "c.mp4").read_bytes()).json()["id"]
    story = {"prompt": ["a red circle moving left"], "video": video, "context_frames": 5, "segment_frames": 9}
    r = client.post("/api/generate", json=story)
    assert r.status_code == 200, r.text
    assert (r.json()["context"], r.json()["context_frames"], r.json()["segment_frames"]) == ("video", 5, 9)


@pytest.mark.parametrize(
    ("name", "content", "status", "message"),
    [
        ("notes.txt", b"hello", 400, "uploads must be one of"),
        ("broken.png", b"not a png at all", 400, "cannot decode"),
        ("big.mp4", b"0" * (3 * 1024 * 1024), 413, "larger than"),
    ],
)
def test_bad_uploads(pipe, tmp_path, name, content, status, message):
    store = OutputStore(tmp_path, max_bytes=10**9)
    with TestClient(create_app(pipe, store, max_upload_bytes=2 * 1024 * 1024), base_url=LOCAL) as c:
        r = c.post(f"/api/uploads?name={name}", content=content)
    assert r.status_code == status and message in r.json()["error"]
    assert not [p for p in store.uploads.iterdir()]  # nothing half-written is left


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


def test_non_loopback_host_needs_public():
    check_host("127.0.0.1", public=False)
    with pytest.raises(ValueError, match="--public"):
        check_host("0.0.0.0", public=False)
    check_host("0.0.0.0", public=True)


def test_ids_are_not_sequential(tmp_path):
    store = OutputStore(tmp_path, max_bytes=10**6)
    ids = {store.reserve() for _ in range(200)}
    assert len(ids) == 200 and len({i[:6] for i in ids}) > 190


def test_serve_cli_refuses_a_public_host_without_the_flag(capsys):
    from tools.serve import main

    assert main(["--host", "0.0.0.0", "--model", str(Path(DEFAULT_MODEL_DIR))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--public" in err[0]


def test_a_busy_port_is_refused_before_the_model_loads(capsys):
    import socket

    from tools.serve import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["--port", str(port), "--model", "/nonexistent/model"]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and f"cannot listen on 127.0.0.1:{port}" in err
    assert "serving" not in out  # it claimed to serve before any check had run
    assert main(["--port", "0"]) == 2 and "--port must be in" in capsys.readouterr().err


def test_loading_warming_and_generating_all_run_on_the_worker_thread(tmp_path, monkeypatch):
    """A second thread running torch ops halves generation speed on 2 cores (videoserve/worker.py), so the server
    loads, warms up and generates on its one worker thread."""
    import videoserve.server as server_module
    from videoserve.worker import GenerationWorker

    seen = []
    real_load, real_generate = VideoPipeline.from_pretrained, server_module.generate_with
    monkeypatch.setattr(
        server_module.VideoPipeline, "from_pretrained",
        lambda d: seen.append(("load", threading.current_thread().name)) or real_load(d),
    )  # fmt: skip
    monkeypatch.setattr(
        server_module, "generate_with",
        lambda *a, **k: seen.append(("warm", threading.current_thread().name)) or real_generate(*a, **k),
    )  # fmt: skip
    worker = GenerationWorker(max_waiting=2)
    pipe = server_module.load_for_serving(DEFAULT_MODEL_DIR, "cpu", worker)
    with TestClient(
        create_app(pipe, OutputStore(tmp_path / "out", max_bytes=10**9), worker=worker), base_url=LOCAL
    ) as c:
        assert c.get("/api/health").json()["queue"]["max"] == 3  # the given worker's limit
        names = {name for _, name in seen}
        assert [k for k, _ in seen] == ["load", "warm"] and len(names) == 1
        assert names.pop().startswith("tokvid-generate")
        job = worker.submit(lambda: threading.current_thread().name)
        assert job.result().startswith("tokvid-generate")


def test_requests_for_another_host_or_from_another_site_are_refused(pipe, tmp_path):
    """Binding 127.0.0.1 did not stop a web page the user visits: a DNS-rebinding page (Host: its own name) read
    /api/recent, and a cross-site text/plain POST started generations."""
    store = OutputStore(tmp_path, max_bytes=10**9)
    with TestClient(create_app(pipe, store, max_frames=9), base_url=LOCAL) as c:
        r = c.get("/api/recent", headers={"host": "attacker.example"})
        assert r.status_code == 400 and "attacker.example" in r.json()["error"]
        assert c.get("/api/health", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/api/health", headers={"host": "[::1]:8000"}).status_code == 200
        body = b'{"prompt": "a red circle moving left", "num_frames": 5}'
        r = c.post(
            "/api/generate", content=body, headers={"content-type": "text/plain", "origin": "http://evil.example"}
        )
        assert r.status_code == 403 and "cross-origin" in r.json()["error"]
        r = c.post("/api/uploads?name=a.png", content=b"x", headers={"origin": "http://evil.example"})
        assert r.status_code == 403
        assert not list(store.uploads.iterdir()) and store.recent(10) == []
        r = c.post("/api/generate", content=body, headers={"origin": LOCAL})  # the page itself
        assert r.status_code == 200, r.text
    with TestClient(create_app(pipe, store, allowed_hosts=None), base_url="http://demo.example") as c:  # --public
        assert c.get("/api/health").status_code == 200


def test_a_chunked_body_is_held_to_the_same_limit(client):
    """The 64 KiB limit read only Content-Length, so a chunked body of any size was read into memory."""
    big = b'{"prompt": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = client.post("/api/generate", content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]))
    assert r.status_code == 413 and "larger than" in r.json()["error"]


def test_the_frame_limit_counts_the_default_length_and_a_storys_context(pipe, tmp_path):
    """A request without num_frames got the model's 17 frames past --max-frames 9; a story after a video's context
    frames was counted as if it began from one frame."""
    store = OutputStore(tmp_path, max_bytes=10**9)
    clip = np.zeros((9, 64, 64, 3), np.uint8)
    from core.video_write import write_video

    write_video(tmp_path / "c.mp4", clip, fps=8)
    with TestClient(create_app(pipe, store, max_frames=9), base_url=LOCAL) as c:
        r = c.post("/api/generate", json={"prompt": "a red circle moving left"})
        assert r.status_code == 400 and "default of 17 frames" in r.json()["error"]
        video = c.post("/api/uploads?name=c.mp4", content=(tmp_path / "c.mp4").read_bytes()).json()["id"]
        story = {"prompt": "a red circle moving left", "video": video, "context_frames": 9, "segment_frames": 9}
        r = c.post("/api/generate", json=story)
        assert r.status_code == 400 and "longer than this server's limit of 9" in r.json()["error"]


@pytest.mark.parametrize("flag", ["--max-output-mb", "--max-upload-mb"])
@pytest.mark.parametrize("value", ["inf", "nan", "0"])
def test_serve_cli_refuses_limits_that_are_not_positive_numbers(capsys, flag, value):
    from tools.serve import main

    assert main(["--port", "1", "--model", str(Path(DEFAULT_MODEL_DIR)), flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]


def test_serve_cli_refuses_an_upload_limit_above_the_output_cap(capsys):
    from tools.serve import main

    assert main(["--port", "1", "--model", str(Path(DEFAULT_MODEL_DIR)), "--max-upload-mb", "64",
                 "--max-output-mb", "32"]) == 2  # fmt: skip
    assert "--max-upload-mb (64) must not exceed --max-output-mb (32)" in capsys.readouterr().err


def test_a_class_conditional_model_serves_and_its_default_is_unconditional(tmp_path):
    """The warm-up (and generate.py without --prompt) used the text default prompt, which a class-conditional
    generator refuses: tokvid-serve exited 2 on such a model, and the page had no class to give."""
    from tests.helpers.tiny_pipeline import make_tiny_pipeline
    from videoserve.server import load_for_serving
    from videoserve.worker import GenerationWorker

    model = make_tiny_pipeline(tmp_path / "model", cond="class", num_classes=3)
    worker = GenerationWorker(max_waiting=2)
    pipe = load_for_serving(model, "cpu", worker)  # its warm-up generates with the default request
    with TestClient(create_app(pipe, OutputStore(tmp_path / "out", max_bytes=10**9), worker=worker),
                    base_url=LOCAL) as c:  # fmt: skip
        info = c.get("/api/health").json()
        assert info["num_classes"] == 3 and len(info["class_names"]) == 3
        assert {m["cond"] for m in info["modes"].values()} == {"class"}
        plain, labelled = c.post("/api/generate", json={}), c.post("/api/generate", json={"label": 2})
        prompted = c.post("/api/generate", json={"prompt": "a red circle"})
    assert plain.status_code == 200 and plain.json()["prompt"] == [] and plain.json()["label"] is None
    assert labelled.status_code == 200 and labelled.json()["label"] == 2
    assert prompted.status_code == 400 and "takes labels, not prompts" in prompted.json()["error"]
    made = generate_to_files(model=model, out=tmp_path / "cli.mp4", progress=False)  # generate.py, no --prompt
    assert made.prompts == [] and made.label is None and (tmp_path / "cli.mp4").is_file()


def test_a_damaged_gif_upload_is_400_and_a_prompt_that_is_not_unicode_too(client, tmp_path):
    """Pillow raises IndexError or struct.error on some truncated GIFs: the upload got a text/plain 500 (the page
    then failed parsing it as JSON). A lone surrogate in a prompt was a TypeError inside the tokenizer: a 500."""
    frames = [Image.new("RGB", (32, 32), (i * 20, i * 5, 0)) for i in range(12)]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=125, loop=0)
    data = path.read_bytes()
    for cut in (207, 301):  # cuts that raised IndexError / struct.error inside Pillow
        r = client.post("/api/uploads?name=cut.gif", content=data[:cut])
        assert r.status_code == 400 and "cannot decode" in r.json()["error"], (cut, r.status_code, r.text)
    r = client.post("/api/generate", content=b'{"prompt": "a red \\ud800 circle"}')
    assert r.status_code == 400 and "not valid Unicode text" in r.json()["error"]


def test_an_upload_is_counted_from_its_index_and_only_its_last_frame_decoded(client, tmp_path, monkeypatch):
    """The upload check decoded every frame at the model's size to count them: a small mp4 of 10^5 frames held
    gigabytes in the server, outside its one-job queue."""
    import core.video_io
    from core.video_write import write_video

    path = tmp_path / "long.mp4"
    write_video(path, np.zeros((120, 64, 64, 3), np.uint8), fps=8)
    asked = []
    real = core.video_io.read_frames

    def spy(p, indices, **kw):
        asked.append(list(indices))
        return real(p, asked[-1], **kw)

    monkeypatch.setattr("pipelines.context.read_frames", spy)
    r = client.post("/api/uploads?name=long.mp4", content=path.read_bytes())
    assert r.status_code == 200 and r.json()["frames"] == 120
    assert asked == [[119]]


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
