"""Fixtures: a real recalled-lite server per module, fresh ones on demand, a spool per test."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from .harness import DATABASES, Server, drop_databases

HERE = Path(__file__).resolve().parent

# Files about the client itself, not the server's storage: on the PostgreSQL pass of the
# repository's `make test` they are skipped, each with its reason, and run in the SQLite pass.
# test_client_api, test_client_sender and test_client_webhooks run on both backends.
BACKEND_NEUTRAL = {
    "test_client_packaging.py": "the client's wheel and its examples",
    "test_client_units.py": "the client's pure units",
    "test_client_spool.py": "the client's local spool, which holds what the server has not acknowledged",
    "test_client_processes.py": "the client's spool shared by processes, SIGKILL and exit of the client",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RECALLED_TEST_BACKEND") != "postgres":
        return
    for item in items:
        reason = BACKEND_NEUTRAL.get(item.path.name)
        if reason and HERE in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=f"backend-neutral, runs in the SQLite pass: {reason}"))


@pytest.fixture(scope="module", autouse=True)
def _drop_module_databases() -> Iterator[None]:
    """Autouse, so torn down after the module's own fixtures have killed their servers."""
    since = len(DATABASES)
    yield
    drop_databases(since)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("client_server")).start()
    yield srv
    srv.kill()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``make_server(start=False)`` gives a server whose port is known but that is not
    running yet: the client can be pointed at it while it is down."""
    made: list[Server] = []

    def factory(name: str = "srv", *, start: bool = True, config_text: str | None = None) -> Server:
        srv = Server(tmp_path / name, config_text=config_text)
        made.append(srv)
        return srv.start() if start else srv

    yield factory
    for srv in made:
        srv.kill()


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "spool.db"


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param
