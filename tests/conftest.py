"""Real-server fixtures: `recalled-lite serve` as a subprocess on a free port, real database.

    server            one server per test module (shared state: use unique orgs/actions)
    make_server(...)  a fresh server with its own database, for tests that need one
    ServerProcess     start / stop (SIGTERM) / kill (SIGKILL) / restart, plus httpx clients

One switch picks the backend for every server: RECALLED_TEST_BACKEND=postgres gives each
ServerProcess a fresh PostgreSQL database (tests/pg_support.py), passed as `--db <url>` and
dropped when the fixture that made it is torn down; unset (or sqlite) keeps the SQLite file
in the server's workdir. `db_location` is what the CLI's --db takes on either backend;
`db_path` is the SQLite file, for tests that inspect it, which carry
`@pytest.mark.sqlite_only("why")` and are skipped on the PostgreSQL pass (docs/testing.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

import pg_support

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "rec_live_testadmn_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Databases made for servers, dropped by the fixture that owns them (make_server), else at the
# end of the module that made them (after its module fixtures), else at session end.
_servers: list["ServerProcess"] = []
_databases: list[str] = []
# Where a workdir remembers its PostgreSQL database, so that a second ServerProcess on the same
# workdir (a restart by hand) finds the same log, as it finds recalled.db on SQLite.
PG_URL_FILE = ".test-database-url"


class ServerProcess:
    def __init__(self, workdir: Path, *, args: list[str] | None = None, env: dict[str, str] | None = None,
                 config_text: str | None = None, bootstrap_key: str | None = ADMIN_KEY,
                 backend: str | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.backend = backend or pg_support.backend()
        if self.backend == "postgres":
            remembered = workdir / PG_URL_FILE
            if remembered.exists():
                self.db_location = remembered.read_text().strip()
            else:
                self.db_location = pg_support.create_database("srv")
                _databases.append(self.db_location)
                remembered.write_text(self.db_location + "\n")
        else:
            self.db_location = str(workdir / "recalled.db")
        _servers.append(self)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = bootstrap_key
        self.extra_args = list(args or [])
        self.env = dict(env or {})
        self.config_path: Path | None = None
        if config_text is not None:
            self.config_path = workdir / "config.toml"
            self.config_path.write_text(config_text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"
        self.restarts = 0

    @property
    def on_postgres(self) -> bool:
        return self.backend == "postgres"

    @property
    def db_path(self) -> Path:
        """The SQLite file itself. Only tests marked sqlite_only may look at it."""
        if self.on_postgres:
            raise AssertionError("db_path is the SQLite file: this test inspects it, so mark it "
                                 "@pytest.mark.sqlite_only(reason), or use db_location / the API")
        return Path(self.db_location)

    @property
    def secret_path(self) -> Path:
        """The server secret file `serve` creates: <db>.secret beside an SQLite file, and
        ./recalled.secret in the working directory for a database URL."""
        if self.on_postgres:
            return self.workdir / "recalled.secret"
        return Path(self.db_location + ".secret")

    @property
    def signing_key_path(self) -> Path:
        if self.on_postgres:
            return self.workdir / "recalled.signing-key"
        return Path(self.db_location + ".signing-key")

    def query(self, sql: str, *params) -> list[tuple]:
        """Read the server's database behind its back, on either backend (the tables and
        columns are named alike): `?` placeholders, rows as tuples. For tests that check what
        is stored, not how SQLite stores it."""
        if self.on_postgres:
            import psycopg

            with psycopg.connect(self.db_location, autocommit=True) as conn:
                return [tuple(row) for row in conn.execute(sql.replace("?", "%s"), params).fetchall()]
        import sqlite3

        conn = sqlite3.connect(f"file:{self.db_location}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def stored_bytes(self) -> bytes:
        """Everything the database holds, for "this never reaches the database" checks: the
        SQLite file and its WAL byte for byte, or every row of every PostgreSQL table as text."""
        if not self.on_postgres:
            return b"".join(p.read_bytes() for p in (Path(self.db_location), Path(self.db_location + "-wal"))
                            if p.exists())
        import psycopg

        with psycopg.connect(self.db_location, autocommit=True) as conn:
            tables = [row[0] for row in conn.execute(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema()")]
            return "\n".join(row[0] for table in tables
                             for row in conn.execute(f"SELECT t::text FROM {table} t")).encode()

    def hold_write_lock(self) -> "WriteLock":
        """Another process holding what every append needs, until .release(): SQLite's one
        write lock (BEGIN IMMEDIATE), or PostgreSQL's chain-head row (FOR UPDATE), which every
        instance's append takes first."""
        return WriteLock(self.db_location, self.on_postgres)

    def drop_database(self) -> None:
        """Kill the server and drop its PostgreSQL database (nothing on SQLite: tmp_path
        holds the file)."""
        self.kill()
        if self.on_postgres and self.db_location in _databases:
            _databases.remove(self.db_location)
            pg_support.drop_database(self.db_location)

    # -- process control -------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "recalled_lite.cli", "serve", "--db", self.db_location,
               "--port", str(self.port)]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        return cmd + self.extra_args

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
        env.update(self.env)
        if self.key is not None:
            env["RECALLED_BOOTSTRAP_KEY"] = self.key
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=env,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
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

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, *, crash: bool = False) -> "ServerProcess":
        self.kill() if crash else self.stop()
        self.restarts += 1
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- clients ---------------------------------------------------------------

    def client(self, key: str | None = "admin", **kwargs) -> httpx.Client:
        headers = dict(kwargs.pop("headers", {}))
        token = self.key if key == "admin" else key
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def async_client(self, key: str | None = "admin", **kwargs) -> httpx.AsyncClient:
        headers = dict(kwargs.pop("headers", {}))
        token = self.key if key == "admin" else key
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def create_key(self, scopes: list[str], organization: str | None = None, name: str = "test") -> str:
        body: dict = {"name": name, "scopes": scopes}
        if organization is not None:
            body["organization"] = organization
        with self.client() as c:
            response = c.post("/v1/keys", json=body)
        assert response.status_code == 201, response.text
        return response.json()["data"]["key"]


class WriteLock:
    def __init__(self, location: str, postgres: bool) -> None:
        self._lock = threading.Lock()
        if postgres:
            import psycopg

            self._conn = psycopg.connect(location)
            self._conn.execute("SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE")
        else:
            import sqlite3

            self._conn = sqlite3.connect(location, isolation_level=None, check_same_thread=False)
            self._conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.rollback()
                self._conn.close()
                self._conn = None


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    started: list[ServerProcess] = []

    def factory(name: str = "srv", **kwargs) -> ServerProcess:
        server = ServerProcess(tmp_path / name, **kwargs)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.drop_database()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.drop_database()


@pytest.fixture(scope="module", autouse=True)
def _drop_module_databases() -> Iterator[None]:
    """Autouse, so set up before and torn down after the module's own module fixtures: the
    databases of servers a module built by hand go with it."""
    servers, databases = len(_servers), len(_databases)
    yield
    _drop_since(servers, databases)


def _drop_since(servers: int, databases: int) -> None:
    for server in _servers[servers:]:
        server.kill()
    del _servers[servers:]
    for url in _databases[databases:]:
        pg_support.drop_database(url)
    del _databases[databases:]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only(reason): inspects or alters the SQLite file itself; "
                            "skipped on the PostgreSQL pass (RECALLED_TEST_BACKEND=postgres) with the reason")


def pytest_sessionstart(session: pytest.Session) -> None:
    if pg_support.on_postgres():
        pg_support.admin_url()  # fails the pass at once when PostgreSQL is not configured
        pg_support.sweep_stale_databases()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _databases or _servers:
        _drop_since(0, 0)


def pytest_report_header(config: pytest.Config) -> str:
    return f"recalled-lite test backend: {pg_support.backend()}"


# Files whose subject is not storage: they run once, in the SQLite pass, so both passes fit
# CI's 30 minutes. Every file that stores or reads the log runs on both backends; the reason
# names where the storage side of each subject is tested on PostgreSQL (docs/testing.md).
BACKEND_NEUTRAL = {
    "test_packaging.py": "the wheel and a pip install from a fresh clone, not the database",
    "test_docs_standalone.py": "the docs' links and words",
    "test_operations_doc.py": "the operations guide's commands, written for the default SQLite file",
    "test_quickstart.py": "README's quick start, which uses the default SQLite file",
    "test_openapi.py": "the OpenAPI document against the routes",
    "test_fuzz_openapi.py": "request validation against the OpenAPI document (before any store call)",
    "test_http_framing.py": "HTTP/1.1 framing in front of the app",
    "test_http_edge.py": "the HTTP edge (headers, sizes, methods) in front of the app",
    "test_http_tls.py": "TLS termination",
    "test_http_protocol_units.py": "HTTP parsing units",
    "test_slow_clients.py": "slow and stalled connections, held before the app",
    "test_json_depth.py": "JSON decoding limits",
    "test_abuse.py": "per-address buckets and lockouts, kept in memory",
    "test_console_browser.py": "a real browser on the console's pages; their store reads run on both "
                               "backends in test_console_events, _sessions and _webhooks",
    "test_receipts_browser.py": "a real browser on the receipt page; receipts run on both backends "
                                "in test_proofs_api",
    "test_jdk_client.py": "the JDK HTTP client against the API; test_sdk_interop runs on both",
    "test_ssrf.py": "the webhook destination guard (addresses, not storage)",
    "test_webhook_ssrf_server.py": "the destination guard through the server",
    "test_webhook_http1.py": "the own HTTP/1.1 delivery client",
    "test_webhook_netstream.py": "the delivery client's network stream",
    "test_webhook_signing.py": "Standard Webhooks signatures",
    "test_webhook_sloppy.py": "sloppy receivers' responses, classified by the delivery client",
    "test_search_query.py": "the search query parser",
    "test_merkle_units.py": "the tree math",
    "test_retry_schedule.py": "the retry schedule arithmetic",
    "test_core_units.py": "pure units of intake and the chain",
    "test_audit_units.py": "how audit events are built",
    "test_webhook_transitions.py": "the subscription state machine",
    "test_webhook_job_bounds.py": "a recover job's id range, pure",
    "test_bench_peer_fallback.py": "the bench's rows",
    "test_storage_boundary.py": "an import scan of the source",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    postgres = pg_support.on_postgres()
    postgres_pass = os.environ.get("RECALLED_TEST_BACKEND") == "postgres"
    # `make test` names the SQLite pass explicitly; the PostgreSQL-only files (tests/test_pg_*.py)
    # then wait for the PostgreSQL pass instead of running twice. Run by hand (no
    # RECALLED_TEST_BACKEND), they run whenever RECALLED_TEST_PG_URL is set.
    sqlite_pass = os.environ.get("RECALLED_TEST_BACKEND") == "sqlite"
    for item in items:
        if sqlite_pass and item.path.name.startswith("test_pg_"):
            item.add_marker(pytest.mark.skip(reason="PostgreSQL-only: runs in the PostgreSQL pass (make test, or make test-postgres)"))
            continue
        neutral = BACKEND_NEUTRAL.get(item.path.name)
        if postgres_pass and neutral:
            item.add_marker(pytest.mark.skip(reason=f"backend-neutral, runs in the SQLite pass: {neutral}"))
            continue
        marker = item.get_closest_marker("sqlite_only")
        if marker is None:
            continue
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.sqlite_only needs a reason")
        if postgres:
            item.add_marker(pytest.mark.skip(reason=f"sqlite_only: {reason}"))


@pytest.fixture(scope="module")
def rx():
    """A loopback webhook receiver shared by a test module (tests/webhook_receiver.py)."""
    from webhook_receiver import Receiver

    receiver = Receiver()
    yield receiver
    receiver.close()
