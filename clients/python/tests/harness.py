"""Real-server fixtures for the client's tests, with no import of recalled_lite.

The server is started exactly as a user would: ``python -m recalled_lite.cli serve --db ...
--port <free>`` with RECALLED_BOOTSTRAP_KEY, against a real SQLite file, on loopback (or, with
RECALLED_TEST_BACKEND=postgres, a fresh PostgreSQL database from the repository's
tests/pg_support.py, as the server suite does). The client under test is the installed ``recalled`` package; counts are checked with plain
httpx, not with the client, so a client bug cannot hide itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import importlib.util
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx

ADMIN_KEY = "rec_live_clienttt_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4"
HERE = Path(__file__).resolve().parent
CHILD = HERE / "child_emitter.py"


def _pg_support():
    """The server suite's tests/pg_support.py (one module, whichever suite imported it first)."""
    if "pg_support" in sys.modules:
        return sys.modules["pg_support"]
    path = HERE.parents[2] / "tests" / "pg_support.py"
    spec = importlib.util.spec_from_file_location("pg_support", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pg_support"] = module
    spec.loader.exec_module(module)
    return module


# PostgreSQL databases the servers below made, dropped by conftest.py when their module ends.
DATABASES: list[str] = []
PG_URL_FILE = ".test-database-url"


def database_location(workdir: Path) -> str:
    """--db for a server in `workdir`: its SQLite file, or (on the PostgreSQL pass) the database
    this workdir was given the first time, so a restart finds the same log."""
    pg = _pg_support()
    if not pg.on_postgres():
        return str(workdir / "recalled.db")
    remembered = workdir / PG_URL_FILE
    if remembered.exists():
        return remembered.read_text().strip()
    url = pg.create_database("cli")
    DATABASES.append(url)
    remembered.write_text(url + "\n")
    return url


def drop_databases(since: int = 0) -> None:
    pg = _pg_support()
    for url in DATABASES[since:]:
        pg.drop_database(url)
    del DATABASES[since:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tag() -> str:
    return uuid.uuid4().hex[:10]


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class Server:
    def __init__(self, workdir: Path, *, config_text: str | None = None, port: int | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.db_location = database_location(workdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = ADMIN_KEY
        self.config_path: Path | None = None
        if config_text is not None:
            self.config_path = workdir / "config.toml"
            self.config_path.write_text(config_text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"

    def start(self, timeout: float = 30.0) -> "Server":
        cmd = [sys.executable, "-m", "recalled_lite.cli", "serve", "--db", self.db_location,
               "--port", str(self.port)]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
        env["RECALLED_BOOTSTRAP_KEY"] = self.key
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not become healthy:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def http(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0,
                            headers={"Authorization": f"Bearer {key or self.key}"})

    def create_key(self, scopes: list[str], organization: str | None = None) -> str:
        body: dict[str, Any] = {"name": "client-test", "scopes": scopes}
        if organization is not None:
            body["organization"] = organization
        with self.http() as c:
            r = c.post("/v1/keys", json=body)
        assert r.status_code == 201, r.text
        return r.json()["data"]["key"]

    def events_of(self, organization: str) -> list[dict[str, Any]]:
        """Every stored event of one organization, by walking the list API with plain httpx."""
        found: list[dict[str, Any]] = []
        with self.http() as c:
            params: dict[str, Any] = {"organization": organization, "limit": 200}
            while True:
                r = c.get("/v1/events", params=params)
                assert r.status_code == 200, r.text
                body = r.json()
                found += body["data"]
                if not body["nextCursor"]:
                    return found
                params = {"cursor": body["nextCursor"], "limit": 200}


def run_child(*args: str, env: dict[str, str] | None = None, timeout: float = 120.0,
              ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(CHILD), *args], env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def spawn_child(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, str(CHILD), *args], env=full_env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def spool_rows(path: Path, sql: str) -> Any:
    """Read the spool file directly (the tests' own view, not the client's)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


class Driver:
    """One client, sync or async, behind one interface, so each scenario runs in both modes.

    The async client runs on one event loop kept for the driver's life (asyncio.Runner), as an
    application's loop would be.
    """

    def __init__(self, mode: str, **kwargs: Any) -> None:
        import recalled

        self.mode = mode
        if mode == "sync":
            self.client: Any = recalled.Recalled(**kwargs)
            self._runner = None
        else:
            self._runner = asyncio.Runner()
            self.client = self._runner.run(self._make_async(kwargs))

    @staticmethod
    async def _make_async(kwargs: dict[str, Any]) -> Any:
        import recalled

        return recalled.AsyncRecalled(**kwargs)

    def call(self, value: Any) -> Any:
        """The value itself (sync), or the coroutine run to completion (async)."""
        if self._runner is None:
            return value
        return self._runner.run(value)

    def emit(self, **fields: Any) -> str:
        return self.call(self.client.events.emit(**fields))

    def flush(self, timeout: float = 60.0) -> int:
        return self.call(self.client.flush(timeout))

    def dead_letters(self) -> list[Any]:
        return self.call(self.client.spool.dead_letters())

    def close(self) -> None:
        if self._runner is None:
            self.client.close(timeout=0)
        else:
            self._runner.run(self.client.aclose(timeout=0))
            self._runner.close()


def json_line(text: str, prefix: str) -> Any:
    for line in text.splitlines():
        if line.startswith(prefix):
            return json.loads(line[len(prefix):])
    raise AssertionError(f"no {prefix!r} line in:\n{text}")



class Receiver:
    """A webhook receiver on loopback: real HTTP/1.1, records each request's raw bytes."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._lock:
                    receiver.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def deliveries(self, path: str, type_: str = "event.created") -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            found = list(self.requests)
        return [(h, b) for p, h, b in found if p == path and json.loads(b).get("type") == type_]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
