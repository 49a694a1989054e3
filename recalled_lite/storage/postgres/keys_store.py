"""API keys on PostgreSQL: the same cache as SQLite's keys_store, refreshed from the table.

Keys are read on every request, so each instance caches them in memory. Another instance
(or the CLI) may create or revoke one: `load_key` on a cache miss and the two-second
KeyCacheRefresher (services.py) pick that up, as on SQLite with a CLI beside the server.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from ...timefmt import now_ms
from ..audited import AuditIf
from ..base import ApiKeyRecord, AuditHook, RecordNotFound

_KEY_COLUMNS = "id, name, prefix, secret_hash, scopes, organization, created_at, revoked_at, last_used_at"


def _key_from_row(row: tuple[Any, ...]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0], name=row[1], prefix=row[2], secret_hash=row[3],
        scopes=frozenset(json.loads(row[4])), organization=row[5],
        created_at=row[6], revoked_at=row[7], last_used_at=row[8],
    )


def select_key(conn: psycopg.Connection, prefix: str) -> ApiKeyRecord | None:
    row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE prefix = %s", (prefix,)).fetchone()
    return _key_from_row(row) if row else None


def select_all_keys(conn: psycopg.Connection) -> list[ApiKeyRecord]:
    return [_key_from_row(row) for row in conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys").fetchall()]


def insert_key(conn: psycopg.Connection, record: ApiKeyRecord) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, organization, created_at, revoked_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (record.id, record.name, record.prefix, record.secret_hash,
         json.dumps(sorted(record.scopes)), record.organization, record.created_at, record.revoked_at),
    )


def revoke_key(conn: psycopg.Connection, key_id: str, organization: str | None, at: int) -> ApiKeyRecord:
    # FOR UPDATE: two instances revoking at once agree on one revoked_at (and one audit event).
    row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = %s FOR UPDATE", (key_id,)).fetchone()
    if row is None or (organization is not None and row[5] != organization):
        raise RecordNotFound(key_id)
    key = _key_from_row(row)
    if key.revoked_at is None:
        conn.execute("UPDATE api_keys SET revoked_at = %s WHERE id = %s", (at, key_id))
        key.revoked_at = at
    return key


def record_key_usage(conn: psycopg.Connection, used: dict[str, int]) -> None:
    # greatest(): a flush that lost a race with a later one (another instance) never moves
    # the time backwards.
    with conn.cursor() as cur:
        cur.executemany("UPDATE api_keys SET last_used_at = greatest(coalesce(last_used_at, 0), %s) WHERE id = %s",
                        [(at, key_id) for key_id, at in used.items()])


class KeyStore:
    """Mixed into PostgresStore (which provides write, write_sync, read and fills `_keys`)."""

    _keys: dict[str, ApiKeyRecord]
    write: Any
    write_sync: Any
    read: Any

    def key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        return self._keys.get(prefix)

    def key_by_id(self, key_id: str) -> ApiKeyRecord | None:
        for record in self._keys.values():
            if record.id == key_id:
                return record
        return None

    def list_keys(self) -> list[ApiKeyRecord]:
        return sorted(self._keys.values(), key=lambda k: k.id)

    async def load_key(self, prefix: str) -> ApiKeyRecord | None:
        record = await self.read(select_key, prefix)
        self._remember_key(record)
        return record

    async def refresh_keys(self) -> None:
        records = await self.read(select_all_keys)
        self._keys = {record.prefix: record for record in records}

    def _remember_key(self, key: ApiKeyRecord | None) -> None:
        if key is not None:
            self._keys[key.prefix] = key

    async def create_key(self, record: ApiKeyRecord, audit: AuditHook | None = None) -> None:
        await self.write(insert_key, record, on_commit=lambda _: self._remember_key(record), audit=audit)

    def create_key_sync(self, record: ApiKeyRecord, audit: AuditHook | None = None) -> None:
        self.write_sync(insert_key, record, on_commit=lambda _: self._remember_key(record), audit=audit)

    async def revoke_key(self, key_id: str, organization: str | None,
                         audit: AuditHook | None = None) -> ApiKeyRecord | None:
        at = now_ms()
        return await self.write(revoke_key, key_id, organization, at, on_commit=self._remember_key,
                                audit=_revoked_now(audit, at))

    def revoke_key_sync(self, key_id: str, organization: str | None,
                        audit: AuditHook | None = None) -> ApiKeyRecord | None:
        at = now_ms()
        return self.write_sync(revoke_key, key_id, organization, at, on_commit=self._remember_key,
                               audit=_revoked_now(audit, at))

    async def record_key_usage(self, used: dict[str, int]) -> None:
        def remember(_: Any) -> None:
            for record in self._keys.values():
                at = used.get(record.id)
                if at is not None and (record.last_used_at or 0) < at:
                    record.last_used_at = at
        await self.write(record_key_usage, used, on_commit=remember)


def _revoked_now(audit: AuditHook | None, at: int) -> AuditHook | None:
    # Revoking a revoked key is a no-op: no audit event for it.
    return AuditIf(audit, lambda key: key.revoked_at == at) if audit is not None else None
