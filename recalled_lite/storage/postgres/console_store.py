"""The console part of PostgresStore: key use, sessions, links, verification records
(storage/postgres/console.py). The webhook figures the console shows (webhook_backlog,
preview_webhook_job) come with the webhook storage (webhook_store.py)."""

from __future__ import annotations

from typing import Any

from ..base import ApiKeyRecord, ChainVerificationRecord, ConsoleSession
from . import console


class ConsoleStore:
    """Mixed into PostgresStore (which provides write, write_sync, read and the key cache)."""

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
        await self.write(console.record_key_usage, used, on_commit=remember)

    async def create_console_session(self, session: ConsoleSession) -> None:
        await self.write(console.insert_session, session)

    async def load_console_session(self, token_hash: str) -> ConsoleSession | None:
        return await self.read(console.select_session, token_hash)

    async def touch_console_sessions(self, seen: dict[str, int]) -> None:
        await self.write(console.touch_sessions, seen)

    async def delete_console_sessions(self, token_hashes: list[str]) -> None:
        await self.write(console.delete_sessions, token_hashes)

    async def purge_console_sessions(self, idle_before: int, now: int) -> int:
        return await self.write(console.purge, idle_before, now)

    def create_console_link_sync(self, token_hash: str, key_id: str, created_at: int, expires_at: int) -> None:
        self.write_sync(console.insert_link, token_hash, key_id, created_at, expires_at)

    async def redeem_console_link(self, token_hash: str, now: int, *, consume: bool) -> str | None:
        if consume:
            return await self.write(console.redeem_link, token_hash, now, True)
        return await self.read(console.redeem_link, token_hash, now, False)

    async def record_chain_verification(self, record: ChainVerificationRecord) -> None:
        await self.write(console.insert_verification, record)

    async def last_chain_verification(self) -> ChainVerificationRecord | None:
        return await self.read(console.last_verification)
