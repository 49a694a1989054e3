"""The API key part of a store, the same for every backend: the in-memory cache and the
writes that keep it exact.

API keys are few and read on every request, so each process caches them. Each backend sets
`keys_sql` to its keys module (select_key, select_all_keys, insert_key, revoke_key: the
SQL); the cache rules, the row shape and "no audit event for a second revoke" live here.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from ..timefmt import now_ms
from .audited import AuditIf
from .base import ApiKeyRecord, AuditHook

KEY_COLUMNS = "id, name, prefix, secret_hash, scopes, organization, created_at, revoked_at, last_used_at"


def key_from_row(row: tuple[Any, ...]) -> ApiKeyRecord:
    """An api_keys row in KEY_COLUMNS order (scopes: the JSON text both backends store)."""
    return ApiKeyRecord(
        id=row[0], name=row[1], prefix=row[2], secret_hash=row[3],
        scopes=frozenset(json.loads(row[4])), organization=row[5],
        created_at=row[6], revoked_at=row[7], last_used_at=row[8],
    )


def key_insert_params(record: ApiKeyRecord) -> tuple[Any, ...]:
    """The values of `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes,
    organization, created_at, revoked_at)`: scopes sorted, so the text is byte-for-byte the same."""
    return (record.id, record.name, record.prefix, record.secret_hash,
            json.dumps(sorted(record.scopes)), record.organization, record.created_at, record.revoked_at)


class KeyStore:
    """Mixed into a store (which provides write, write_sync, read and fills `_keys` at open)."""

    keys_sql: ClassVar[Any]  # the backend's module with the api_keys SQL
    _keys: dict[str, ApiKeyRecord]
    write: Any
    write_sync: Any
    read: Any

    def key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        return self._keys.get(prefix)

    def list_keys(self) -> list[ApiKeyRecord]:
        return sorted(self._keys.values(), key=lambda k: k.id)

    async def load_key(self, prefix: str) -> ApiKeyRecord | None:
        record = await self.read(self.keys_sql.select_key, prefix)
        self._remember_key(record)
        return record

    async def refresh_keys(self) -> None:
        """Pick up keys created or revoked by another process (the CLI, another instance)."""
        records = await self.read(self.keys_sql.select_all_keys)
        self._keys = {record.prefix: record for record in records}

    def _remember_key(self, key: ApiKeyRecord | None) -> None:
        if key is not None:
            self._keys[key.prefix] = key

    async def create_key(self, record: ApiKeyRecord, audit: AuditHook | None = None) -> None:
        await self.write(self.keys_sql.insert_key, record, on_commit=lambda _: self._remember_key(record),
                         audit=audit)

    def create_key_sync(self, record: ApiKeyRecord, audit: AuditHook | None = None) -> None:
        self.write_sync(self.keys_sql.insert_key, record, on_commit=lambda _: self._remember_key(record),
                        audit=audit)

    async def revoke_key(self, key_id: str, organization: str | None,
                         audit: AuditHook | None = None) -> ApiKeyRecord | None:
        at = now_ms()
        return await self.write(self.keys_sql.revoke_key, key_id, organization, at,
                                on_commit=self._remember_key, audit=_revoked_now(audit, at))

    def revoke_key_sync(self, key_id: str, organization: str | None,
                        audit: AuditHook | None = None) -> ApiKeyRecord | None:
        at = now_ms()
        return self.write_sync(self.keys_sql.revoke_key, key_id, organization, at,
                               on_commit=self._remember_key, audit=_revoked_now(audit, at))


def _revoked_now(audit: AuditHook | None, at: int) -> AuditHook | None:
    # Revoking a revoked key is a no-op: no audit event for it.
    return AuditIf(audit, lambda key: key.revoked_at == at) if audit is not None else None
