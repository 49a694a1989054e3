"""The API key part of SqliteStore: the shared cache (storage/keys_store.py) over the
api_keys SQL below. The cache is exact because this process is the only writer (a CLI
beside it is picked up by refresh_keys)."""

from __future__ import annotations

import sqlite3
import sys

from ..base import ApiKeyRecord, RecordNotFound
from ..keys_store import KEY_COLUMNS, KeyStore as _KeyStore, key_from_row, key_insert_params


class KeyStore(_KeyStore):
    """Mixed into SqliteStore."""

    keys_sql = sys.modules[__name__]


def select_key(conn: sqlite3.Connection, prefix: str) -> ApiKeyRecord | None:
    row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = ?", (prefix,)).fetchone()
    return key_from_row(row) if row else None


def select_all_keys(conn: sqlite3.Connection) -> list[ApiKeyRecord]:
    return [key_from_row(row) for row in conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys")]


def insert_key(conn: sqlite3.Connection, record: ApiKeyRecord) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, organization, created_at, revoked_at) "
        "VALUES (?,?,?,?,?,?,?,?)", key_insert_params(record))


def revoke_key(conn: sqlite3.Connection, key_id: str, organization: str | None, at: int) -> ApiKeyRecord:
    row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    if row is None or (organization is not None and row[5] != organization):
        raise RecordNotFound(key_id)
    key = key_from_row(row)
    if key.revoked_at is None:
        conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (at, key_id))
        key.revoked_at = at
    return key
