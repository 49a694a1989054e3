"""No input, however broken, gets a 500 or a dropped connection (SPEC §1)."""

from __future__ import annotations

import socket

import httpx
import pytest

CASES = [
    ("bad json", b'{"action": "a",', 400, "VALIDATION_ERROR"),
    ("not an object", b'[1, 2, 3]', 400, "VALIDATION_ERROR"),
    ("string", b'"hello"', 400, "VALIDATION_ERROR"),
    ("empty", b"", 400, "VALIDATION_ERROR"),
    ("invalid utf-8", b'{"action": "\xff\xfe"}', 400, "VALIDATION_ERROR"),
    ("lone surrogate", b'{"action": "\\ud800"}', 400, "VALIDATION_ERROR"),
    ("nan", b'{"action": "a", "metadata": {"x": NaN}}', 400, "VALIDATION_ERROR"),
    ("huge number", b'{"action": "a", "metadata": {"x": 1e999}}', 400, "VALIDATION_ERROR"),
    ("100k nested arrays", b"[" * 100_000 + b"]" * 100_000, 400, "VALIDATION_ERROR"),
    ("100k nested objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "VALIDATION_ERROR"),
    ("33 nested in metadata", b'{"action":"a","metadata":' + b'{"a":' * 33 + b"1" + b"}" * 34, 400, "VALIDATION_ERROR"),
    ("wrong types everywhere", b'{"action": [], "actor": 7, "targets": "x", "metadata": 1}', 400, "VALIDATION_ERROR"),
    ("null body", b"null", 400, "VALIDATION_ERROR"),
    ("10 MB body", b'{"action": "a", "metadata": {"x": "' + b"a" * 10_000_000 + b'"}}', 413, "REQUEST_TOO_LARGE"),
]


@pytest.mark.parametrize("name,body,status,code", CASES, ids=[c[0] for c in CASES])
def test_malformed_bodies_get_clean_errors(server, name, body, status, code):
    with server.client() as c:
        for path in ("/v1/events", "/v1/events/batch"):
            r = c.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == status, (path, r.text[:300])
            assert r.json()["error"]["code"] == code
            assert "x-request-id" in r.headers


def test_huge_integer_and_million_keys_are_handled(server):
    with server.client() as c:
        big_int = c.post("/v1/events", content=b'{"action": "a", "metadata": {"n": ' + b"9" * 4000 + b"}}")
        assert big_int.status_code in (200, 400), big_int.text[:200]
        keys = b"{" + b",".join(b'"k%d":1' % i for i in range(1_000_000)) + b"}"
        million = c.post("/v1/events", content=b'{"action":"a","metadata":' + keys + b"}")
        assert million.status_code == 413
        assert million.json()["error"]["code"] in ("REQUEST_TOO_LARGE", "EVENT_TOO_LARGE")
        assert c.get("/healthz").status_code == 200


def test_chunked_oversized_body_is_refused(server):
    def chunks():
        for _ in range(120):
            yield b"x" * 65536
    with server.client() as c:
        r = c.post("/v1/events", content=chunks())
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "REQUEST_TOO_LARGE"


def test_raw_socket_garbage_does_not_crash_the_server(server):
    for payload in (b"\x00\xff\x13garbage\r\n\r\n", b"POST /v1/events HTTP/1.1\r\nContent-Length: -5\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(payload)
            try:
                sock.recv(4096)
            except (ConnectionResetError, socket.timeout):
                pass
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_error_shape_on_unknown_routes_and_methods(server):
    with server.client() as c:
        r = c.get("/v1/nope", headers={"x-request-id": "trace-123"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        assert r.headers["x-request-id"] == "trace-123"
        r = c.delete("/v1/events")
        assert r.status_code == 405 and r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
