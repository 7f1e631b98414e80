"""HTTP pieces of the web demo that know nothing of the pipeline: the JSON error shape, the same-site guard, and
byte ranges of result files."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import Headers


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def host_name(host: str) -> str:
    """The name in a ``Host`` header, without its port: ``[::1]:8000`` -> ``::1``. One that is not a name, optionally
    followed by ``:digits``, comes back whole, so it matches no allowed name (``[::1]evil.example`` read as ``::1``)."""
    if host.startswith("["):
        name, closed, port = host[1:].partition("]")
        if not closed or (port and not port.startswith(":")):
            return host
        port = port[1:]
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:  # a name without a port, or a bare IPv6 address
        return host
    return name if port.isascii() and (port.isdigit() or not port) else host


class SameSiteOnly:
    """Refuses a request addressed to a host name other than ``allowed_hosts`` (DNS rebinding; None: any) and a
    cross-origin POST. Plain ASGI: Starlette's ``@app.middleware("http")`` wraps ``receive``, and behind it
    ``Request.is_disconnected()`` never saw a client leave, so a queued job whose client had gone still ran."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...] | None) -> None:
        self.app, self.allowed_hosts = app, allowed_hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            host, origin = headers.get("host", ""), headers.get("origin")
            problem = None
            if self.allowed_hosts is not None and host_name(host) not in self.allowed_hosts:
                allowed = ", ".join(self.allowed_hosts)
                problem = error_response(400, f"this server answers requests addressed to {allowed}, not {host!r}")
            elif scope["method"] == "POST" and origin is not None and origin.split("://", 1)[-1] != host:
                problem = error_response(403, f"cross-origin requests are refused (Origin {origin!r}, Host {host!r})")
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self.app(scope, receive, send)


class HeldFileResponse(FileResponse):
    """A file response that calls ``release`` once it is sent, or the client is gone (the store keeps the file until
    then)."""

    def __init__(self, path: Path, release: Callable[[], None], *, whole: bool = False, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._release, self._whole = release, whole

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._whole:  # a Range in a unit we do not serve is ignored: the whole file (RFC 9110 14.2)
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


# At most 18 digits (10^18 bytes): Python's int() refuses over 4,300, a 500 (and a result held from the cap for good).
RANGE = re.compile(r"\s*(\d{0,18})\s*-\s*(\d{0,18})\s*")


def range_problem(header: str | None, size: int) -> tuple[int, str] | None:
    """(status, message) for a ``Range`` header that a file of ``size`` bytes cannot answer, else None: 400 for a
    malformed one, 416 for one that starts past the end (RFC 9110 14.1.2: ``bytes=first-last``, ``bytes=-suffix``)."""
    if header is None or not bytes_range(header):
        return None
    spec = header.partition("=")[2]
    if not spec.strip():
        return 400, f"the Range header must be bytes=first-last, got {header[:80]!r}"
    for part in spec.split(","):
        match = RANGE.fullmatch(part)
        first, last = (match.group(1), match.group(2)) if match else ("", "")
        if not (first or last) or (first and last and int(first) > int(last)):
            return 400, f"the Range header must be bytes=first-last, got {header[:80]!r}"
        if first and int(first) >= size:
            return 416, f"the Range header starts past the file's {size} bytes"
        if not first and int(last) == 0:  # Starlette answered "bytes=-0" with an empty plain-text 416
            return 416, "the Range header asks for the last 0 bytes"
    return None


def bytes_range(header: str | None) -> bool:
    """Whether a ``Range`` header is in bytes, the one unit served; another is ignored (RFC 9110 14.2)."""
    return header is not None and header.partition("=")[0].strip().lower() == "bytes"
