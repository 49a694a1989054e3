"""PostgreSQL for tests: a fresh database per use, on the cluster .ci/postgres-up starts.

RECALLED_TEST_PG_URL names a database the role `recalled` owns (and may CREATEDB from);
without it, tests that need PostgreSQL are skipped with the reason (a developer machine
without the cluster), and .ci/run always sets it.

RECALLED_TEST_BACKEND=postgres switches the whole suite's servers (tests/conftest.py
ServerProcess) to a fresh database each; on that pass a PostgreSQL that is not configured is
an error, not a skip, so the pass cannot silently test nothing.
"""

from __future__ import annotations

import itertools
import os
import re
import uuid

import pytest

_counter = itertools.count()
BACKENDS = ("sqlite", "postgres")


def backend() -> str:
    """The backend this pytest run's servers use (RECALLED_TEST_BACKEND, default sqlite)."""
    name = os.environ.get("RECALLED_TEST_BACKEND", "") or "sqlite"
    if name not in BACKENDS:
        raise pytest.UsageError(f"RECALLED_TEST_BACKEND={name!r}: expected one of {', '.join(BACKENDS)}")
    return name


def on_postgres() -> bool:
    return backend() == "postgres"


def admin_url() -> str:
    url = os.environ.get("RECALLED_TEST_PG_URL")
    if not url:
        if on_postgres():
            raise RuntimeError("RECALLED_TEST_BACKEND=postgres needs RECALLED_TEST_PG_URL "
                               "(source .ci/postgres-up)")
        pytest.skip("PostgreSQL not configured: source .ci/postgres-up (sets RECALLED_TEST_PG_URL)")
    return url


def database_url(name: str) -> str:
    return admin_url().rsplit("/", 1)[0] + "/" + name


def create_database(prefix: str = "t") -> str:
    """A new empty database; returns its URL. Dropped by drop_database (or by the next run's
    sweep_stale_databases: names start with rl_ and carry the creating pid)."""
    import psycopg

    name = f"rl_{prefix}_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}".lower()
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(name)


def drop_database(url: str) -> None:
    # One drop for the bench and the tests: it retries while an autovacuum worker or an exiting
    # backend holds the database (bench/postgres.py says why).
    from bench.postgres import drop_database as drop

    drop(admin_url(), url)


_NAME = re.compile(r"^rl_[a-z0-9]+_(\d+)_\d+_[0-9a-f]{6}$")


def sweep_stale_databases() -> int:
    """Drop rl_ databases whose creating process is gone (a run killed before its teardown).
    Databases of live processes are left alone: other pytest runs share the cluster."""
    import psycopg

    with psycopg.connect(admin_url(), autocommit=True) as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'rl\\_%'")]
        dropped = 0
        for name in names:
            match = _NAME.match(name)
            if match is None or _alive(int(match.group(1))):
                continue
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            dropped += 1
    return dropped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture
def pg_database():
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


def execute(url: str, sql: str, params: tuple | None = None) -> list[tuple]:
    """Run SQL on a test database as its owner, autocommit: what an attacker with a database
    login can do behind the server's back (the PostgreSQL twin of the sqlite3 CLI). Several
    statements are allowed when there are no params."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []
