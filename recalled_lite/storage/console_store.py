"""The console part of a store: key use, sessions, links, verification records, the same
delegation for every backend. Each backend sets `console_sql` to its console module
(storage/<backend>/console.py: the SQL)."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import ApiKeyRecord, ChainVerificationRecord, ConsoleSession


class ConsoleStore:
    """Mixed into a store (which provides write, write_sync, read and the key cache)."""

    console_sql: ClassVar[Any]  # the backend's console module
    _keys: dict[str, ApiKeyRecord]
    write: Any
    write_sync: Any
    read: Any

    def key_by_id(self, key_id: str) -> ApiKeyRecord | None:
        # Keys are few (tens): a scan of the cache is cheaper than keeping a second index exact.
        for record in self._keys.values():
            if record.id == key_id:
                return record
        return None

    async def record_key_usage(self, used: dict[str, int]) -> None:
        def remember(_: Any) -> None:
            for record in self._keys.values():
                at = used.get(record.id)
                if at is not None and (record.last_used_at or 0) < at:
                    record.last_used_at = at
        await self.write(self.console_sql.record_key_usage, used, on_commit=remember)

    async def create_console_session(self, session: ConsoleSession) -> None:
        await self.write(self.console_sql.insert_session, session)

    async def load_console_session(self, token_hash: str) -> ConsoleSession | None:
        return await self.read(self.console_sql.select_session, token_hash)

    async def touch_console_sessions(self, seen: dict[str, int]) -> None:
        await self.write(self.console_sql.touch_sessions, seen)

    async def delete_console_sessions(self, token_hashes: list[str]) -> None:
        await self.write(self.console_sql.delete_sessions, token_hashes)

    async def purge_console_sessions(self, idle_before: int, now: int) -> int:
        return await self.write(self.console_sql.purge, idle_before, now)

    def create_console_link_sync(self, token_hash: str, key_id: str, created_at: int, expires_at: int) -> None:
        self.write_sync(self.console_sql.insert_link, token_hash, key_id, created_at, expires_at)

    async def redeem_console_link(self, token_hash: str, now: int, *, consume: bool) -> str | None:
        if consume:
            return await self.write(self.console_sql.redeem_link, token_hash, now, True)
        return await self.read(self.console_sql.redeem_link, token_hash, now, False)

    async def record_chain_verification(self, record: ChainVerificationRecord) -> None:
        await self.write(self.console_sql.insert_verification, record)

    async def last_chain_verification(self) -> ChainVerificationRecord | None:
        return await self.read(self.console_sql.last_verification)
