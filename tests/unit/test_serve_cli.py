"""The web demo's process: the one worker thread and its queue, and tools/serve.py's refusals of a public host, a
busy port and bad limits before the model loads."""

import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

import videoserve.app as app_module  # noqa: E402
from pipelines import VideoPipeline  # noqa: E402
from pipelines.generate import generate_to_files  # noqa: E402
from pipelines.video import DEFAULT_MODEL_DIR  # noqa: E402
from tests.helpers.serving import LOCAL, pipe  # noqa: E402, F401 - the shipped model, loaded once per module
from videoserve.app import create_app  # noqa: E402
from videoserve.server import check_host  # noqa: E402
from videoserve.store import OutputStore  # noqa: E402


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


def test_non_loopback_host_needs_public():
    check_host("127.0.0.1", public=False)
    with pytest.raises(ValueError, match="--public"):
        check_host("0.0.0.0", public=False)
    check_host("0.0.0.0", public=True)


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
