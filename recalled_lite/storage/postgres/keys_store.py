"""API keys on PostgreSQL: the shared cache (storage/keys_store.py) over the api_keys SQL below.

Keys are read on every request, so each instance caches them in memory. Another instance
(or the CLI) may create or revoke one: `load_key` on a cache miss and the two-second
KeyCacheRefresher (services.py) pick that up, as on SQLite with a CLI beside the server.
Key use (last_used_at) is written by the console part (console.record_key_usage).
"""

from __future__ import annotations

import sys

import psycopg

from ..base import ApiKeyRecord, RecordNotFound
from ..keys_store import KEY_COLUMNS, KeyStore as _KeyStore, key_from_row, key_insert_params


class KeyStore(_KeyStore):
    """Mixed into PostgresStore."""

    keys_sql = sys.modules[__name__]


def select_key(conn: psycopg.Connection, prefix: str) -> ApiKeyRecord | None:
    row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = %s", (prefix,)).fetchone()
    return key_from_row(row) if row else None


def select_all_keys(conn: psycopg.Connection) -> list[ApiKeyRecord]:
    return [key_from_row(row) for row in conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys").fetchall()]


def insert_key(conn: psycopg.Connection, record: ApiKeyRecord) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, organization, created_at, revoked_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", key_insert_params(record))


def revoke_key(conn: psycopg.Connection, key_id: str, organization: str | None, at: int) -> ApiKeyRecord:
    # FOR UPDATE: two instances revoking at once agree on one revoked_at (and one audit event).
    row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = %s FOR UPDATE", (key_id,)).fetchone()
    if row is None or (organization is not None and row[5] != organization):
        raise RecordNotFound(key_id)
    key = key_from_row(row)
    if key.revoked_at is None:
        conn.execute("UPDATE api_keys SET revoked_at = %s WHERE id = %s", (at, key_id))
        key.revoked_at = at
    return key
