"""README quick start, as a new user runs it: `make serve`, copy the printed key, curl an event."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port

EXAMPLE = {
    "action": "invoice.paid",
    "organization": "org_acme",
    "actor": {"type": "user", "id": "user_123", "name": "Ada", "email": "ada@example.com"},
    "targets": [{"type": "invoice", "id": "inv_42"}],
    "metadata": {"amount": 4200, "currency": "EUR"},
}


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("curl") is None, reason="needs make and curl")
def test_make_serve_prints_a_key_that_curl_can_use(tmp_path: Path):
    port = free_port()
    db = tmp_path / "recalled.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(ROOT), "serve", f"ARGS=--port {port} --db {db}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    output = b""
    key = None
    try:
        deadline = time.monotonic() + 120  # first run may install the virtualenv
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        while time.monotonic() < deadline and key is None:
            chunk = proc.stdout.read() or b""
            output += chunk
            match = re.search(rb"(rec_live_[A-Za-z0-9]{8}_[A-Za-z0-9]{32,})", output)
            if match:
                key = match.group(1).decode()
            elif proc.poll() is not None:
                break
            time.sleep(0.1)
        assert key, f"no key printed:\n{output.decode(errors='replace')[-2000:]}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        curl = subprocess.run(
            ["curl", "-sS", "-w", "\n%{http_code}", "-X", "POST", f"http://127.0.0.1:{port}/v1/events",
             "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
             "-d", json.dumps(EXAMPLE)],
            capture_output=True, text=True, timeout=30,
        )
        body, status = curl.stdout.rsplit("\n", 1)
        assert status == "200", curl.stdout + curl.stderr
        event = json.loads(body)["data"]
        # seq 2: the first event of the log is the server's own record of the admin key it made.
        assert event["action"] == "invoice.paid" and event["seq"] == 2
        first = httpx.get(f"http://127.0.0.1:{port}/v1/events", params={"action": "recalled.key.created"},
                          headers={"Authorization": f"Bearer {key}"}).json()["data"]
        assert [(e["seq"], e["actor"]["type"], e["metadata"]["scopes"]) for e in first] == [(1, "cli", ["admin"])]
        assert (tmp_path / "recalled.db.secret").stat().st_mode & 0o777 == 0o600
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    # Second start on the same database: no new key is printed.
    again = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(ROOT), "serve", f"ARGS=--port {port} --db {db}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        os.killpg(again.pid, signal.SIGTERM)
        out, _ = again.communicate(timeout=30)
    assert b"rec_live_" not in out
