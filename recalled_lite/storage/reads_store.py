"""The read side of a store: list, search, export, the same delegation for every backend.

Each backend sets `reads_sql` to its own reads module (storage/<backend>/reads.py: the SQL).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from .base import EventRecord


class ReadStore:
    """Mixed into a store (which provides read and scan)."""

    reads_sql: ClassVar[Any]  # the backend's reads module
    read: Any
    scan: Any

    # -- read side: list, search, export (§4.5-4.7) ----------------------------

    async def list_events(self, filters: Any, organization_wall: str | None) -> tuple[list[EventRecord], bool]:
        return await self.read(self.reads_sql.list_page, filters, organization_wall)

    async def search_events(self, query: Any, organization_wall: str | None, limit: int,
                            cursor: Any) -> tuple[list[EventRecord], bool]:
        return await self.read(self.reads_sql.search_page, query, organization_wall, limit, cursor)

    async def chain_head(self) -> tuple[int, str | None]:
        """The newest event readers can see: (seq, hash), or (0, None)."""
        return await self.read(self.reads_sql.chain_head)

    async def events_per_organization(self, since_ms: int, excluded_prefix: str) -> dict[str, int]:
        return await self.read(self.reads_sql.events_per_organization, since_ms, excluded_prefix)

    async def export_chunk(self, filters: Any, organization_wall: str | None, after_seq: int, upto_seq: int,
                           render: Callable[[list[Any]], Any]) -> tuple[Any, int | None]:
        return await self.scan(self.reads_sql.export_chunk, filters, organization_wall, after_seq, upto_seq,
                               render)
