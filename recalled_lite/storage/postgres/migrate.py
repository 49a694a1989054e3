"""Schema migrations for PostgreSQL: numbered .sql files applied in order, each in its own
transaction, tracked in `schema_migrations`.

Several instances may start at once on one database: the whole run holds a transaction-level
advisory lock, so exactly one applies each migration and the others then see it applied.
"""

from __future__ import annotations

import psycopg

from .. import migration_files

# pg_advisory_xact_lock key: "recalled" in ASCII, so it does not collide with an
# application's own advisory locks by accident.
MIGRATION_LOCK = 0x7265_6361_6C6C_6564


def available() -> list[tuple[int, str, str]]:
    return migration_files.available(__package__)


def current_version(conn: psycopg.Connection) -> int:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    return conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def migrate(conn: psycopg.Connection) -> int:
    """Apply pending migrations. Returns the schema version (the number of the last)."""
    migrations = available()
    conn.commit()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)")
        current = current_version(conn)
        migration_files.refuse_newer(current, len(migrations))
        for number, name, sql in migrations[current:]:
            # One savepoint per file: a failure names the file and leaves nothing half done
            # (the outer transaction then rolls back every file of this run).
            with conn.transaction():
                try:
                    conn.execute(sql)
                except psycopg.Error as exc:
                    raise RuntimeError(f"PostgreSQL migration {name} failed: {exc}") from exc
                conn.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                             "VALUES (%s, %s, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
                             (number, name))
    return len(migrations)
