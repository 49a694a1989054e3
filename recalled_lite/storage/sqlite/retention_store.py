"""The retention part of SqliteStore: the shared delegation (storage/retention_store.py) over
storage/sqlite/retention.py, plus what only SQLite has to do after a purge."""

from __future__ import annotations

from typing import Any

from ..retention_store import RetentionStore as _RetentionStore
from . import retention


class RetentionStore(_RetentionStore):
    """Mixed into SqliteStore (which also provides the ErasurePurge)."""

    retention_sql = retention
    purge: Any

    async def reclaim_purged_text(self) -> None:
        # The full-text index keeps deleted rows' text in its segments until they merge: the same
        # bounded merge steps (and WAL truncation) as after an erasure.
        await self.purge.run(erased=True, wal_wait=0)

    async def retention_vacuum(self, pages: int) -> int:
        return await self.write(retention.incremental_vacuum, pages)
