"""The web demo's test fixtures: the shipped pipeline, loaded once per module, and an API client on a fresh output
folder with the limits the tests assume (one waiting request, 33 frames)."""

import pytest
from starlette.testclient import TestClient

from pipelines import VideoPipeline
from pipelines.video import DEFAULT_MODEL_DIR
from videoserve.app import create_app
from videoserve.store import OutputStore

LOCAL = "http://127.0.0.1:8000"  # the Host a browser on this machine sends


@pytest.fixture(scope="module")
def pipe():
    return VideoPipeline.from_pretrained(DEFAULT_MODEL_DIR)


@pytest.fixture()
def client(pipe, tmp_path):
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    with TestClient(create_app(pipe, store, max_waiting=1, max_frames=33, model_name="shapes"), base_url=LOCAL) as c:
        yield c
