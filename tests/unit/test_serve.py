"""The web demo's API through an HTTP client, on the shipped model: results, files, bad input, uploads and the
checks of host, site and length. The output store's cap: test_serve_store.py; the queue, worker and CLI:
test_serve_cli.py."""

from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from core.video_io import read_video  # noqa: E402
from pipelines.generate import generate_to_files  # noqa: E402
from tests.helpers.serving import LOCAL, client, pipe  # noqa: E402, F401 - fixtures
from videoserve.app import KNOBS, create_app  # noqa: E402
from videoserve.store import OutputStore  # noqa: E402


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
        ({"prompt": "x", "mode": "ar", "steps": 4}, "steps: only MaskGIT-style decoding reads it"),
        (
            {"prompt": "x", "mode": "ar", "choice_temperature": 1, "steps": 4},
            "steps, choice_temperature: only MaskGIT-style decoding reads them",
        ),
        ({"prompt": "x", "mode": "maskgit", "first_frame_candidates": 2}, "first_frame_candidates: only GPT-style"),
        ({"prompt": "x", "first_frame_candidates": 1.5}, "first_frame_candidates must be an integer, got 1.5"),
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
    for control in "prompt mode order seed cfg frames upload temperature ctxtemp choicerow choice ctxchoice".split():
        assert f'id="{control}"' in page
    assert "<video" in page and 'id="gallery"' in page


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


def test_requests_for_another_host_or_from_another_site_are_refused(pipe, tmp_path):
    """Binding 127.0.0.1 did not stop a web page the user visits: a DNS-rebinding page (Host: its own name) read
    /api/recent, and a cross-site text/plain POST started generations."""
    store = OutputStore(tmp_path, max_bytes=10**9)
    with TestClient(create_app(pipe, store, max_frames=9), base_url=LOCAL) as c:
        r = c.get("/api/recent", headers={"host": "attacker.example"})
        assert r.status_code == 400 and "attacker.example" in r.json()["error"]
        assert c.get("/api/health", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/api/health", headers={"host": "[::1]:8000"}).status_code == 200
        for odd in ("[::1]evil.example", "[::1].evil.example:80", "localhost:80x", "[::1"):  # read as ::1 or localhost
            r = c.get("/api/health", headers={"host": odd})
            assert r.status_code == 400 and "not " + repr(odd) in r.json()["error"], odd
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
