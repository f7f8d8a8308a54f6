"""A real HTTP endpoint on loopback for webhook tests: records each POST, can fail or hang."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Endpoint:
    """What the endpoint received, and how it answers the next requests."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    failures_left: int = 0
    """Answer HTTP 500 to this many requests first."""
    hang_seconds: float = 0.0
    """Wait this long before answering (longer than a client's timeout: a timeout)."""
    trickle_seconds: float = 0.0
    """Answer one header line every 0.2 s for this long (each read is quick, the answer not)."""
    redirect_to: str = ""
    """Answer 302 with this ``Location``."""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    """The method and headers of every request, redirected ones included."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, **match: Any) -> list[dict[str, Any]]:
        """The JSON bodies received whose ``text`` contains each given value."""
        with self.lock:
            return [b for b in self.received if all(str(v) in b["text"] for v in match.values())]


class _Handler(BaseHTTPRequestHandler):
    endpoint: Endpoint

    def do_GET(self) -> None:  # http.server's naming
        with self.endpoint.lock:
            self.endpoint.requests.append((self.command, dict(self.headers)))
        self.send_response(200)
        self.end_headers()

    def do_POST(self) -> None:  # http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        endpoint = self.endpoint
        with endpoint.lock:
            endpoint.requests.append((self.command, dict(self.headers)))
        if endpoint.redirect_to:
            self.send_response(302)
            self.send_header("Location", endpoint.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if endpoint.trickle_seconds:
            self._trickle(endpoint.trickle_seconds)
            return
        if endpoint.hang_seconds:
            time.sleep(endpoint.hang_seconds)
        with endpoint.lock:
            endpoint.received.append(body)
            failing = endpoint.failures_left > 0
            endpoint.failures_left -= int(failing)
        with contextlib.suppress(ConnectionError):  # a client that timed out has gone
            self.send_response(500 if failing else 200)
            self.end_headers()
            self.wfile.write(b"no" if failing else b"ok")

    def _trickle(self, seconds: float) -> None:
        with contextlib.suppress(ConnectionError):  # a client that gave up has gone
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                self.wfile.write(b"X-Pad: a\r\n")
                self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(b"Content-Length: 0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # the base's name
        """Keep the test output quiet."""


@contextmanager
def webhook_endpoint(
    *,
    failures: int = 0,
    hang_seconds: float = 0.0,
    trickle_seconds: float = 0.0,
    redirect_to: str = "",
) -> Iterator[Endpoint]:
    """Serve an ``Endpoint`` on a free loopback port in a thread, for the ``with`` block."""
    endpoint = Endpoint(
        url="",
        failures_left=failures,
        hang_seconds=hang_seconds,
        trickle_seconds=trickle_seconds,
        redirect_to=redirect_to,
    )
    handler = type("Handler", (_Handler,), {"endpoint": endpoint})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"
