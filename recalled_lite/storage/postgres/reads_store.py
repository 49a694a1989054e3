"""The read side of PostgresStore: list, search, export (storage/postgres/reads.py)."""

from __future__ import annotations

from typing import Any, Callable

from ..base import EventRecord
from . import reads


class ReadStore:
    """Mixed into PostgresStore (which provides read and scan)."""

    read: Any
    scan: Any

    async def list_events(self, filters: Any, organization_wall: str | None) -> tuple[list[EventRecord], bool]:
        return await self.read(reads.list_page, filters, organization_wall)

    async def search_events(self, query: Any, organization_wall: str | None, limit: int,
                            cursor: Any) -> tuple[list[EventRecord], bool]:
        return await self.read(reads.search_page, query, organization_wall, limit, cursor)

    async def chain_head(self) -> tuple[int, str | None]:
        """The newest event readers can see: (seq, hash), or (0, None)."""
        return await self.read(reads.chain_head)

    async def events_per_organization(self, since_ms: int, excluded_prefix: str) -> dict[str, int]:
        return await self.read(reads.events_per_organization, since_ms, excluded_prefix)

    async def export_chunk(self, filters: Any, organization_wall: str | None, after_seq: int, upto_seq: int,
                           render: Callable[[list[Any]], Any]) -> tuple[Any, int | None]:
        return await self.scan(reads.export_chunk, filters, organization_wall, after_seq, upto_seq, render)
