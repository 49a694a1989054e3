"""PostgreSQL for tests: a fresh database per use, on the cluster .ci/postgres-up starts.

RECALLED_TEST_PG_URL names a database the role `recalled` owns (and may CREATEDB from);
without it, tests that need PostgreSQL are skipped with the reason (a developer machine
without the cluster), and .ci/run always sets it.
"""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

_counter = itertools.count()


def admin_url() -> str:
    url = os.environ.get("RECALLED_TEST_PG_URL")
    if not url:
        pytest.skip("PostgreSQL not configured: source .ci/postgres-up (sets RECALLED_TEST_PG_URL)")
    return url


def database_url(name: str) -> str:
    return admin_url().rsplit("/", 1)[0] + "/" + name


def create_database(prefix: str = "t") -> str:
    """A new empty database; returns its URL. Dropped by drop_database (or left for the
    next run's sweep: names start with rl_)."""
    import psycopg

    name = f"rl_{prefix}_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}".lower()
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(name)


def drop_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database():
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)
