"""A bounded load test of the web demo on localhost: 40 concurrent requests, three times over.

Every request is answered 200 or 503; every 200 names a finished, readable mp4 of its own; nothing is lost or
corrupted; and the server's memory stays flat from the second round to the third.
"""

import json
import threading
import urllib.error
import urllib.request

import psutil
import pytest

pytest.importorskip("fastapi")

from core.video_io import read_video  # noqa: E402
from pipelines import VideoPipeline  # noqa: E402
from pipelines.video import DEFAULT_MODEL_DIR  # noqa: E402
from tests.helpers.live_server import live_server  # noqa: E402
from videoserve.app import create_app  # noqa: E402
from videoserve.store import OutputStore  # noqa: E402

pytestmark = pytest.mark.slow

CONCURRENT = 40


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _round(base: str, offset: int) -> list[tuple[int, dict]]:
    answers: list = [None] * CONCURRENT
    barrier = threading.Barrier(CONCURRENT)

    def one(i: int) -> None:
        barrier.wait()
        answers[i] = _post(f"{base}/api/generate", {"prompt": "a cyan circle moving right", "seed": offset + i})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return answers


def test_forty_concurrent_requests_three_times(tmp_path):
    pipe = VideoPipeline.from_pretrained(DEFAULT_MODEL_DIR)
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    process = psutil.Process()
    rss, ok = [], []
    with live_server(create_app(pipe, store, max_waiting=4)) as base:
        for r in range(3):
            answers = _round(base, 1000 * r)
            assert all(a is not None for a in answers)
            codes = [code for code, _ in answers]
            assert set(codes) <= {200, 503}, codes
            assert codes.count(200) >= 5  # the running one and the four waiting behind it
            for code, body in answers:
                if code == 503:
                    assert "busy" in body["error"]
                else:
                    ok.append(body)
            rss.append(process.memory_info().rss)
        for body in ok:
            with urllib.request.urlopen(base + body["video"], timeout=60) as r:
                data = r.read()
            path = tmp_path / f"{body['id']}.mp4"
            path.write_bytes(data)
            assert read_video(path).shape == (17, 64, 64, 3)
    ids = [b["id"] for b in ok]
    assert len(set(ids)) == len(ids)  # no result handed to two requests
    assert {r["id"] for r in store.recent(1000)} == set(ids)  # none lost
    seeds = sorted(b["seed"] for b in ok)
    assert len(set(seeds)) == len(seeds)
    growth = (rss[2] - rss[1]) / 2**20
    print(f"served {len(ok)} of {3 * CONCURRENT}; RSS after each round (MiB): {[round(x / 2**20) for x in rss]}")
    assert growth < 64, f"RSS grew {growth:.0f} MiB from round 2 to round 3"
