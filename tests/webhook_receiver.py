"""Loopback webhook receivers for the webhook tests (real HTTP, real sockets).

    Receiver   threaded HTTP/1.1 server; records every request; per-path behaviour
    Sink       a bare TCP listener that only counts connection attempts (SSRF tests)
    wait_until bounded polling helper
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def tag() -> str:
    """A short unique marker, so tests sharing a server do not see each other's data."""
    return uuid.uuid4().hex[:10]


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


@dataclass
class Received:
    at: float  # time.time() when the request arrived
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    verified: dict[str, bool] = field(default_factory=dict)
    status: int = 0

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def type(self) -> str:
        return self.json.get("type", "")

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0  # seconds to wait before answering (a "hanging" receiver)
    # Exact response bytes, written in one send and followed by a close: a sloppy receiver
    # (a body on a 204, data after the end...). status/headers/body are then ignored.
    raw: bytes | None = None


# behaviour(received, n) -> Reply; n = 1-based count of non-test requests on that path so far
Behaviour = Callable[[Received, int], Reply]


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.requests: list[Received] = []
        self.behaviours: dict[str, Behaviour] = {}
        # path -> {name: verify(body, headers) raising on failure}; a failed check answers 401
        self.verifiers: dict[str, dict[str, Callable[[bytes, dict[str, str]], Any]]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                received = Received(time.time(), self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver._lock:
                    now = receiver.in_flight[self.path] = receiver.in_flight.get(self.path, 0) + 1
                    receiver.max_in_flight[self.path] = max(receiver.max_in_flight.get(self.path, 0), now)
                try:
                    reply = receiver._handle(received)
                    received.status = reply.status
                    if reply.delay:
                        time.sleep(reply.delay)
                finally:
                    with receiver._lock:
                        receiver.in_flight[self.path] -= 1
                if reply.raw is not None:
                    self.close_connection = True
                    try:
                        self.wfile.write(reply.raw)
                        self.wfile.flush()
                    except OSError:
                        pass
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the sender gave up (timeout)

            def log_message(self, *args: Any) -> None:
                pass

        # A chosen port: a receiver that comes up where a subscription already points.
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _handle(self, received: Received) -> Reply:
        for name, verify in self.verifiers.get(received.path, {}).items():
            try:
                verify(received.body, received.headers)
                received.verified[name] = True
            except Exception:
                received.verified[name] = False
        with self._lock:
            self.requests.append(received)
            is_test = b'"type":"webhook.test"' in received.body
            if not is_test:
                self._counts[received.path] = n = self._counts.get(received.path, 0) + 1
        if received.verified and not all(received.verified.values()):
            return Reply(401, body=b"signature did not verify")
        behaviour = self.behaviours.get(received.path)
        if is_test or behaviour is None:
            return Reply()
        return behaviour(received, n)

    def on(self, path: str, behaviour: Behaviour) -> str:
        self.behaviours[path] = behaviour
        return self.url(path)

    def received(self, path: str | None = None, type: str | None = "event.created") -> list[Received]:
        with self._lock:
            items = list(self.requests)
        return [r for r in items if (path is None or r.path == path) and (type is None or r.type == type)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Sink:
    """Counts TCP connections to 127.0.0.1:<port>; never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
