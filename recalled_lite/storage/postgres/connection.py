"""Opening PostgreSQL connections, with every session setting in one place and its reason.

psycopg 3, synchronous, on threads: the store contract runs audit and intake hooks
synchronously inside the write transaction (storage/base.py), so each instance keeps one
writer thread with its own connection and one transaction per group, exactly as on SQLite;
reads run on a pool of connections on reader threads, so no driver work blocks the event
loop.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool


def is_postgres_url(location: str | None) -> bool:
    return bool(location) and str(location).startswith(("postgresql://", "postgres://"))


def postgres_version(conn: psycopg.Connection) -> str:
    return conn.execute("SHOW server_version").fetchone()[0]


def _configure(conn: psycopg.Connection) -> None:
    # UTC and a fixed application name: log lines and pg_stat_activity name the instance's
    # connections; times are integer milliseconds anyway, never timestamptz.
    conn.execute("SET TIME ZONE 'UTC'")
    # synchronous_commit=on (the server default, stated so a cluster-wide `off` cannot
    # weaken it): a 2xx means the commit record is flushed, as synchronous=FULL on SQLite.
    conn.execute("SET synchronous_commit = on")
    # A statement stuck behind a lock for this long fails (answered 503), not the request
    # hanging: the same role as SQLite's busy_timeout.
    conn.execute("SET lock_timeout = '10s'")
    conn.commit()


def open_writer(url: str, *, application_name: str = "recalled-lite writer") -> psycopg.Connection:
    """The writer's own connection. In autocommit mode on purpose: the writer issues BEGIN,
    SAVEPOINT and COMMIT itself (storage/postgres/writer.py), one transaction per group, at
    READ COMMITTED, so a statement run after the chain-head lock is granted sees what the
    instance that held it committed."""
    conn = psycopg.connect(url, autocommit=False, application_name=application_name)
    _configure(conn)
    conn.autocommit = True
    conn.execute("SET default_transaction_isolation = 'read committed'")
    return conn


def open_listener(url: str) -> psycopg.Connection:
    """An autocommit connection for LISTEN (the webhook loop's wake-ups)."""
    conn = psycopg.connect(url, autocommit=True, application_name="recalled-lite listener")
    conn.execute("SET TIME ZONE 'UTC'")
    return conn


def open_reader_pool(url: str, *, size: int) -> ConnectionPool:
    """Read connections: each read runs in its own short transaction (REPEATABLE READ for a
    consistent page), returned to the pool at once."""

    def configure(conn: psycopg.Connection) -> None:
        conn.autocommit = False
        _configure(conn)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True

    pool = ConnectionPool(url, min_size=1, max_size=max(1, size), open=False,
                          configure=configure, kwargs={"application_name": "recalled-lite reader"})
    pool.open(wait=True, timeout=30)
    return pool


def connect_once(url: str, **kwargs: Any) -> psycopg.Connection:
    """A plain connection for the CLI (verify, export, migrate-to-postgres)."""
    conn = psycopg.connect(url, autocommit=False, application_name="recalled-lite cli", **kwargs)
    _configure(conn)
    return conn
