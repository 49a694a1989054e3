"""The API key part of SqliteStore.

API keys are few and read on every request, so they are cached in memory; the
cache is exact because this process is the only writer.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ...timefmt import now_ms
from ..base import ApiKeyRecord, AuditHook, RecordNotFound
from .audited import AuditIf


def _key_from_row(row: tuple[Any, ...]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0], name=row[1], prefix=row[2], secret_hash=row[3],
        scopes=frozenset(json.loads(row[4])), organization=row[5],
        created_at=row[6], revoked_at=row[7], last_used_at=row[8],
    )


class KeyStore:
    """Mixed into SqliteStore (which provides write, write_sync, read and fills `_keys` at open)."""

    _keys: dict[str, ApiKeyRecord]
    write: Any
    write_sync: Any
    read: Any

    # -- keys ---------------------------------------------------------------

    def key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        return self._keys.get(prefix)

    def list_keys(self) -> list[ApiKeyRecord]:
        return sorted(self._keys.values(), key=lambda k: k.id)

    async def load_key(self, prefix: str) -> ApiKeyRecord | None:
        record = await self.read(_select_key, prefix)
        self._remember_key(record)
        return record

    async def refresh_keys(self) -> None:
        """Pick up keys created or revoked by another process (the CLI)."""
        records = await self.read(_select_all_keys)
        self._keys = {record.prefix: record for record in records}

    def _remember_key(self, key: ApiKeyRecord | None) -> None:
        if key is not None:
            self._keys[key.prefix] = key

    async def create_key(self, record: ApiKeyRecord, audit: AuditHook | None = None) -> None:
        await self.write(_insert_key, record, on_commit=lambda _: self._remember_key(record), audit=audit)

    def create_key_sync(self, record: ApiKeyRecord, audit: AuditHook | None = None) -> None:
        self.write_sync(_insert_key, record, on_commit=lambda _: self._remember_key(record), audit=audit)

    async def revoke_key(self, key_id: str, organization: str | None,
                         audit: AuditHook | None = None) -> ApiKeyRecord | None:
        at = now_ms()
        return await self.write(_revoke_key, key_id, organization, at, on_commit=self._remember_key,
                                audit=_revoked_now(audit, at))

    def revoke_key_sync(self, key_id: str, organization: str | None,
                        audit: AuditHook | None = None) -> ApiKeyRecord | None:
        at = now_ms()
        return self.write_sync(_revoke_key, key_id, organization, at, on_commit=self._remember_key,
                               audit=_revoked_now(audit, at))


def _revoked_now(audit: AuditHook | None, at: int) -> AuditHook | None:
    # Revoking a revoked key is a no-op: no audit event for it.
    return AuditIf(audit, lambda key: key.revoked_at == at) if audit is not None else None



_KEY_COLUMNS = "id, name, prefix, secret_hash, scopes, organization, created_at, revoked_at, last_used_at"


def _select_key(conn: sqlite3.Connection, prefix: str) -> ApiKeyRecord | None:
    row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE prefix = ?", (prefix,)).fetchone()
    return _key_from_row(row) if row else None


def _select_all_keys(conn: sqlite3.Connection) -> list[ApiKeyRecord]:
    return [_key_from_row(row) for row in conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys")]


def _insert_key(conn: sqlite3.Connection, record: ApiKeyRecord) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, organization, created_at, revoked_at) "
        "VALUES (?,?,?,?,?,?,?,?)",
        (record.id, record.name, record.prefix, record.secret_hash,
         json.dumps(sorted(record.scopes)), record.organization, record.created_at, record.revoked_at),
    )


def _revoke_key(conn: sqlite3.Connection, key_id: str, organization: str | None, at: int) -> ApiKeyRecord:
    row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    if row is None or (organization is not None and row[5] != organization):
        raise RecordNotFound(key_id)
    key = _key_from_row(row)
    if key.revoked_at is None:
        conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (at, key_id))
        key.revoked_at = at
    return key
