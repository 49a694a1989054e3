"""Fixtures: a real recalled-lite server per module, fresh ones on demand, a spool per test."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from .harness import DATABASES, Server, drop_databases


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
