"""HTTPS served directly (server.tls_cert / server.tls_key), with a self-signed certificate made
in the test; the ASGI scope says scheme "https"; a half-configured TLS is a config error."""

from __future__ import annotations

import functools
import json
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest

import conftest
from conftest import ServerProcess, free_port
from recalled_lite.config import load_config
from recalled_lite.errors import ConfigError
from tls_cert import self_signed


def test_https_serves_the_api_with_the_configured_certificate(tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path / "tls")
    trusting = ssl.create_default_context(cafile=str(cert))
    srv = ServerProcess(tmp_path / "srv", config_text=f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    srv.url = f"https://127.0.0.1:{srv.port}"
    # conftest's readiness probe, made to trust this certificate
    monkeypatch.setattr(conftest.httpx, "get", functools.partial(httpx.get, verify=trusting))
    srv.start()
    monkeypatch.undo()
    try:
        with srv.client(verify=trusting) as c:
            created = c.post("/v1/events", json={"action": "tls.event", "metadata": {"over": "tls"}})
            assert created.status_code == 200, created.text
            assert created.http_version == "HTTP/1.1" and "x-request-id" in created.headers
            event_id = created.json()["data"]["id"]
            fetched = c.get(f"/v1/events/{event_id}")
            assert fetched.status_code == 200 and fetched.json()["data"]["metadata"] == {"over": "tls"}
            too_big = c.post("/v1/events", content=b"x" * (6 * 1024 * 1024))
            assert too_big.status_code == 413  # refusals and lingering close work over TLS too
        # the certificate is really checked: an untrusting client is refused
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/healthz", verify=ssl.create_default_context())
        # and plain HTTP on the TLS port is not served
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=3)
        listening = [json.loads(line) for line in srv.log_text().splitlines()
                     if line.startswith("{") and '"recalled-lite listening"' in line]
        assert listening and listening[-1]["scheme"] == "https"
    finally:
        srv.kill()


def test_the_asgi_scope_says_https_over_tls(tmp_path):
    import uvicorn

    from recalled_lite.edge import EdgeSettings, protocol_class

    cert, key = self_signed(tmp_path / "tls")
    seen = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(scope["scheme"])
        body = scope["scheme"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol_class(EdgeSettings()),
                                           ssl_certfile=str(cert), ssl_keyfile=str(key), log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        response = httpx.get(f"https://127.0.0.1:{port}/", verify=ssl.create_default_context(cafile=str(cert)))
        assert response.text == "https" and seen == ["https"]
    finally:
        server.should_exit = True
        thread.join(20)


def test_tls_cert_without_tls_key_is_a_config_error_naming_both(tmp_path):
    for line in ('tls_cert = "/x/cert.pem"', 'tls_key = "/x/key.pem"'):
        path = tmp_path / "c.toml"
        path.write_text(f"[server]\n{line}\n")
        with pytest.raises(ConfigError) as info:
            load_config(str(path), environ={})
        assert "server.tls_cert" in str(info.value) and "server.tls_key" in str(info.value)


def test_an_unreadable_certificate_stops_the_start_with_a_message(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[server]\ntls_cert = "{tmp_path}/missing.pem"\ntls_key = "{tmp_path}/missing.key"\n')
    result = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "serve", "--config", str(config),
                             "--db", str(tmp_path / "r.db"), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "server.tls_cert" in result.stderr and "missing.pem" in result.stderr
    assert "Traceback" not in result.stderr
