"""Real-server fixtures: `recalled-lite serve` as a subprocess on a free port, real SQLite file.

    server            one server per test module (shared state: use unique orgs/actions)
    make_server(...)  a fresh server with its own database, for tests that need one
    ServerProcess     start / stop (SIGTERM) / kill (SIGKILL) / restart, plus httpx clients
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "rec_live_testadmn_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, workdir: Path, *, args: list[str] | None = None, env: dict[str, str] | None = None,
                 config_text: str | None = None, bootstrap_key: str | None = ADMIN_KEY) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = workdir / "recalled.db"
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

    # -- process control -------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "recalled_lite.cli", "serve", "--db", str(self.db_path),
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


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    started: list[ServerProcess] = []

    def factory(name: str = "srv", **kwargs) -> ServerProcess:
        server = ServerProcess(tmp_path / name, **kwargs)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def rx():
    """A loopback webhook receiver shared by a test module (tests/webhook_receiver.py)."""
    from webhook_receiver import Receiver

    receiver = Receiver()
    yield receiver
    receiver.close()
