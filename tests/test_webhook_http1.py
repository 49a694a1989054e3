"""The webhook sender's HTTP/1.1 client (delivery/http1.py) over the SSRF guard and the
asyncio socket layer: keep-alive reuse, chunked, close-delimited and large bodies, the read
limit, receivers that close or answer garbage, timeouts, refusals, TLS. Loopback only."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import httpx
import pytest

from recalled_lite.delivery.http1 import Http1Pool
from recalled_lite.delivery.netstream import AsyncioBackend
from recalled_lite.delivery.ssrf import DestinationRefusedError, GuardedBackend
from test_webhook_netstream import Handler, needs_openssl, serve, tls_server, unused_port


@pytest.fixture(scope="module")
def plain():
    server = serve()
    yield server
    server.shutdown()


def pool(allow_private: bool = True, ssl_context=None) -> Http1Pool:
    return Http1Pool(GuardedBackend(allow_private, delegate=AsyncioBackend()), ssl_context,
                     max_idle=4, keepalive_expiry=30)


async def post(p: Http1Pool, url: str, body: bytes = b"x", limit: int = 1 << 20):
    response = await p.post(httpx.URL(url), {"content-type": "application/json"}, body, limit)
    return response.status, response.body


def raw_server(script):
    """A one-shot TCP server: for each accepted connection, reads one request head and
    calls script(conn, request_bytes). Returns (port, requests seen)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    seen: list[bytes] = []

    def run():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            seen.append(data)
            script(conn, data)

    threading.Thread(target=run, daemon=True).start()
    return server, server.getsockname()[1], seen


def test_keepalive_chunked_big_and_read_limit(plain):
    url = f"http://127.0.0.1:{plain.server_address[1]}"

    async def main():
        p = pool()
        Handler.connections.clear()
        for i in range(20):
            assert await post(p, url + "/echo", f"m{i}".encode()) == (200, f"echo:m{i}".encode())
        assert len(Handler.connections) == 1  # one connection, reused
        assert await post(p, url + "/chunked") == (200, b"hello chunked world")
        status, body = await post(p, url + "/big", limit=2_000_000)
        assert status == 200 and len(body) == 1_000_000
        # the read limit: read no further, keep at most `limit` bytes, drop the connection
        Handler.connections.clear()
        status, body = await post(p, url + "/big", limit=65536)
        assert status == 200 and len(body) == 65536
        assert await post(p, url + "/echo", b"after") == (200, b"echo:after")
        assert len(Handler.connections) == 2  # the cut connection was not reused
        # limit 0: the status only
        assert await post(p, url + "/echo", b"z", limit=0) == (200, b"")
        await p.aclose()

    asyncio.run(main())


def test_request_head_is_exact():
    def reply(conn, data):
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        conn.close()

    server, port, seen = raw_server(reply)

    async def main():
        p = pool()
        assert await post(p, f"http://127.0.0.1:{port}/hook/a?x=1%20y", b'{"a":1}') == (204, b"")
        await p.aclose()

    asyncio.run(main())
    server.close()
    head, _, _ = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook/a?x=1%20y HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}".encode() in lines
    assert b"Content-Length: 7" in lines
    assert b"content-type: application/json" in lines


def test_receiver_closing_or_answering_garbage():
    cases = {
        "close-delimited body": (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it", (200, b"all of it")),
        "interim responses first": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                                    b"Link: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone",
                                    (201, b"done")),
        "closed before answering": (b"", httpx.RemoteProtocolError),
        "closed mid-head": (b"HTTP/1.1 200 OK\r\nContent-Le", httpx.RemoteProtocolError),
        "garbage": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", httpx.RemoteProtocolError),
        # headers that never end: refused at 16 KiB, not read into memory for the whole timeout
        "endless head": (b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * 200 + b"\r\n" * 1
                         + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(2000)),
                         (httpx.RemoteProtocolError, "head is over 16384 bytes")),
    }
    for name, (answer, expected) in cases.items():
        def reply(conn, data, answer=answer):
            if answer:
                conn.sendall(answer)
            conn.close()

        server, port, _ = raw_server(reply)

        async def main():
            p = pool()
            try:
                if isinstance(expected, tuple) and isinstance(expected[0], int):
                    response = await p.post(httpx.URL(f"http://127.0.0.1:{port}/"), {}, b"x", 1 << 20)
                    assert (response.status, response.body) == expected, name
                    assert response.warning is None, (name, response.warning)
                else:
                    error, match = expected if isinstance(expected, tuple) else (expected, None)
                    with pytest.raises(error, match=match):
                        await post(p, f"http://127.0.0.1:{port}/")
            finally:
                await p.aclose()

        asyncio.run(main())
        server.close()


SLOPPY = {
    # Once the status line and headers have arrived the receiver has answered: a framing
    # problem after them is a warning on a response that counts by its status.
    "204 with a body, then close": (
        b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        204, b"", "a 204 response must not have a body"),
    "204 with a body, keep-alive": (
        b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok", 204, b"",
        "a 204 response must not have a body"),
    "304 with a body": (b"HTTP/1.1 304 Not Modified\r\n\r\nxyz", 304, b"", "a 304 response must not have a body"),
    "data after Connection: close": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nokEXTRA", 200, b"ok",
        "more data after the end of the response"),
    "data after the end": (b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nokjunk", 202, b"ok",
                           "more data after the end of the response"),
    "truncated body": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 200, b"abc",
                       "cut short: the receiver closed the connection after 3 of 10 bytes"),
    "truncated chunked body": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 200, b"hel",
                               "chunked response body was cut short"),
    "bad chunking": (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 201, b"",
                     "the response body is malformed (invalid character in chunk size)"),
    "a 500 with a bad body keeps its status": (
        b"HTTP/1.1 500 Oops\r\nContent-Length: 9\r\n\r\nfail", 500, b"fail", "cut short"),
}


@pytest.mark.parametrize("name", list(SLOPPY))
def test_framing_problems_after_the_head_are_warnings(name):
    answer, status, body, warning = SLOPPY[name]

    def reply(conn, data):
        conn.sendall(answer)  # one write: the extra bytes arrive with the head
        conn.close()

    server, port, seen = raw_server(reply)

    async def main():
        p = pool()
        progress: list[int] = []
        response = await p.post(httpx.URL(f"http://127.0.0.1:{port}/"), {}, b"x", 1 << 20, progress)
        assert (response.status, response.body) == (status, body)
        assert response.warning is not None and warning in response.warning, response.warning
        assert progress == [status]
        # the connection is never reused after a framing problem
        response = await p.post(httpx.URL(f"http://127.0.0.1:{port}/"), {}, b"x", 1 << 20)
        assert response.status == status
        await p.aclose()

    asyncio.run(main())
    server.close()
    assert len(seen) == 2


def test_interim_response_in_its_own_packet():
    def reply(conn, data):
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(0.1)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        conn.close()

    server, port, _ = raw_server(reply)

    async def main():
        p = pool()
        progress: list[int] = []
        response = await p.post(httpx.URL(f"http://127.0.0.1:{port}/"), {}, b"x", 1024, progress)
        assert (response.status, response.body, progress) == (200, b"final", [200])
        await p.aclose()

    asyncio.run(main())
    server.close()


def test_connections_the_receiver_closed_are_not_reused(plain):
    url = f"http://127.0.0.1:{plain.server_address[1]}"

    def reply(conn, data):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        time.sleep(0.2)
        conn.close()  # idle close, no Connection: close header

    server, port, seen = raw_server(reply)

    async def main():
        p = pool()
        assert await post(p, url + "/close") == (200, b"bye")  # Connection: close
        for _ in range(3):
            assert await post(p, url + "/echo", b"again") == (200, b"echo:again")
        assert await post(p, f"http://127.0.0.1:{port}/") == (200, b"ok")
        await asyncio.sleep(0.5)
        assert await post(p, f"http://127.0.0.1:{port}/") == (200, b"ok")  # a new connection
        await p.aclose()

    asyncio.run(main())
    assert len(seen) == 2
    server.close()


def test_timeouts_and_refusals(plain):
    url = f"http://127.0.0.1:{plain.server_address[1]}"
    closed_port = unused_port()

    async def main():
        p = pool()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await post(p, url + "/slow")
        assert time.monotonic() - started < 0.6
        with pytest.raises(httpx.ConnectError):
            await post(p, f"http://127.0.0.1:{closed_port}/")
        await p.aclose()
        guarded = pool(allow_private=False)
        with pytest.raises(DestinationRefusedError):
            await post(guarded, url + "/echo")
        await guarded.aclose()

    asyncio.run(main())


@needs_openssl
def test_tls_with_sni_and_certificate_checks(tmp_path):
    server, port, trusting = tls_server(tmp_path)

    async def main():
        p = pool(ssl_context=trusting)
        for _ in range(3):
            assert await post(p, f"https://127.0.0.1:{port}/echo", b"tls") == (200, b"echo:tls")
        assert await post(p, f"https://127.0.0.1:{port}/chunked") == (200, b"hello chunked world")
        await p.aclose()
        strict = pool(ssl_context=ssl.create_default_context())  # does not trust it
        with pytest.raises(httpx.ConnectError):
            await post(strict, f"https://127.0.0.1:{port}/echo")
        await strict.aclose()

    try:
        asyncio.run(main())
    finally:
        server.shutdown()


def test_the_send_path_imports_nothing_per_request(plain):
    """httpcore's pool used to `import sniffio` on every request (a failed import, a sys.path
    scan each time, so service.py faked the module). The send path is http1.py now: after the
    first exchange, no attempt looks up any module - sniffio included."""
    import importlib.abc
    import sys

    url = f"http://127.0.0.1:{plain.server_address[1]}"
    lookups: list[str] = []

    class Probe(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            lookups.append(name)
            return None

    async def main():
        p = pool()
        assert await post(p, url + "/echo", b"warm") == (200, b"echo:warm")  # lazy imports happen here
        await p.aclose()
        probe = Probe()
        sys.meta_path.insert(0, probe)
        try:
            for i in range(60):
                assert (await post(p, url + "/echo", b"x"))[0] == 200
                if i % 20 == 0:
                    await p.aclose()  # new connections too
        finally:
            sys.meta_path.remove(probe)
        await p.aclose()

    asyncio.run(main())
    assert lookups == []
    assert "sniffio" not in sys.modules or sys.modules["sniffio"] is not None  # nobody fakes it any more
