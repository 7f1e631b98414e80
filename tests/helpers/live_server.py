"""A real uvicorn server for the web demo, in a thread of the test process, on a free localhost port."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from tests.helpers.faults import free_port


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Serves ``app`` on 127.0.0.1 until the block ends; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
