"""The sender's socket layer (delivery/netstream.py) under the SSRF-guarded httpx transport:
plain and TLS exchanges, keep-alive reuse, a keep-alive connection the receiver closed,
chunked and large bodies, slow and refused receivers. Loopback only."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from recalled_lite.delivery.netstream import AsyncioBackend
from recalled_lite.delivery.ssrf import DestinationRefusedError, make_guarded_transport


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    connections: set = set()

    def do_POST(self):  # noqa: N802
        Handler.connections.add(self.client_address)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/big":
            payload = b"y" * 1_000_000
        elif self.path == "/slow":
            time.sleep(1.0)
            payload = b"late"
        elif self.path == "/close":
            payload = b"bye"
            self.close_connection = True
        else:
            payload = b"echo:" + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        if self.path == "/close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # broken pipes are expected: the client stops reading on purpose


def serve(tls_context=None):
    server = QuietServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls_context is not None:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def plain():
    server = serve()
    yield server
    server.shutdown()


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def transport(**kwargs):
    return make_guarded_transport(True, delegate=AsyncioBackend(), max_connections=4,
                                  max_keepalive_connections=4, **kwargs)


async def post(t, url, body=b"x", limit=None, timeout=None):
    request = httpx.Request("POST", url, content=body,
                            extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout,
                                                    "pool": timeout}})
    response = await t.handle_async_request(request)
    try:
        chunks, size = [], 0
        async for chunk in response.stream:
            chunks.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        return response.status_code, b"".join(chunks)
    finally:
        await response.aclose()


def test_exchange_keepalive_and_chunked(plain):
    url = f"http://127.0.0.1:{plain.server_address[1]}"

    async def main():
        t = transport()
        Handler.connections.clear()
        for i in range(20):
            assert await post(t, url + "/echo", f"m{i}".encode()) == (200, f"echo:m{i}".encode())
        assert len(Handler.connections) == 1  # one connection, reused
        assert await post(t, url + "/chunked") == (200, b"hello chunked world")
        status, body = await post(t, url + "/big")
        assert status == 200 and len(body) == 1_000_000
        # the read limit: stop early; the connection is dropped, the next request still works
        status, body = await post(t, url + "/big", limit=65536)
        assert status == 200 and 65536 <= len(body) < 1_000_000
        assert await post(t, url + "/echo", b"after") == (200, b"echo:after")
        await t.aclose()

    asyncio.run(main())


def test_connection_closed_by_the_receiver_is_not_reused(plain):
    url = f"http://127.0.0.1:{plain.server_address[1]}"

    async def main():
        t = transport()
        assert await post(t, url + "/close") == (200, b"bye")
        await asyncio.sleep(0.1)
        # the server closed its end; is_readable (EOF seen by the protocol) retires it
        for i in range(5):
            assert await post(t, url + "/echo", b"again") == (200, b"echo:again")
        await t.aclose()

    asyncio.run(main())


def test_idle_connection_closed_server_side_is_detected():
    """A keep-alive connection the receiver drops while idle is not reused (no error)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted = []

    def run():
        for _ in range(2):
            conn, _ = server.accept()
            accepted.append(conn)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            time.sleep(0.2)
            conn.close()  # idle close, no Connection: close header

    threading.Thread(target=run, daemon=True).start()

    async def main():
        t = transport()
        assert await post(t, f"http://127.0.0.1:{port}/") == (200, b"ok")
        await asyncio.sleep(0.5)
        assert await post(t, f"http://127.0.0.1:{port}/") == (200, b"ok")  # a new connection
        await t.aclose()

    asyncio.run(main())
    assert len(accepted) == 2
    server.close()


def test_timeouts_and_refusals(plain):
    url = f"http://127.0.0.1:{plain.server_address[1]}"
    closed_port = unused_port()

    async def main():
        t = transport()
        with pytest.raises(httpx.ReadTimeout):
            await post(t, url + "/slow", timeout=0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await post(t, url + "/slow")
        assert time.monotonic() - started < 0.6
        with pytest.raises(httpx.ConnectError):
            await post(t, f"http://127.0.0.1:{closed_port}/")
        await t.aclose()
        guarded = make_guarded_transport(False, delegate=AsyncioBackend())
        with pytest.raises(DestinationRefusedError):
            await post(guarded, url + "/echo")
        await guarded.aclose()

    asyncio.run(main())


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="needs the openssl command to make a certificate")


def tls_server(tmp_path):
    """Handler over TLS with a fresh self-signed certificate for 127.0.0.1/localhost.
    Returns (server, port, a client context that trusts exactly that certificate)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = serve(server_ctx)
    return server, server.server_address[1], ssl.create_default_context(cafile=str(cert))


@needs_openssl
def test_tls_with_sni_and_certificate_checks(tmp_path):
    server, port, trusting = tls_server(tmp_path)

    async def main():
        t = transport(ssl_context=trusting)
        for i in range(3):
            assert await post(t, f"https://127.0.0.1:{port}/echo", b"tls") == (200, b"echo:tls")
        assert await post(t, f"https://127.0.0.1:{port}/chunked") == (200, b"hello chunked world")
        await t.aclose()
        # an untrusted certificate is refused
        strict = transport(ssl_context=ssl.create_default_context())
        with pytest.raises(httpx.ConnectError):
            await post(strict, f"https://127.0.0.1:{port}/echo")
        await strict.aclose()

    try:
        asyncio.run(main())
    finally:
        server.shutdown()
