"""The retention part of PostgresStore: the shared delegation (storage/retention_store.py) over
storage/postgres/retention.py; PostgreSQL has nothing to reclaim by itself after a purge."""

from __future__ import annotations

from ..retention_store import RetentionStore as _RetentionStore
from . import retention


class RetentionStore(_RetentionStore):
    """Mixed into PostgresStore."""

    retention_sql = retention

    async def reclaim_purged_text(self) -> None:
        """Nothing to do on PostgreSQL: the full-text document and the filter keys are columns
        of the deleted rows, not a separate index with tombstones. The dead row versions are
        reclaimed by autovacuum (docs/scaling.md, "Erasure on PostgreSQL"); VACUUM cannot run
        inside the writer's transaction, and a forced one would rescan every index of the
        table on the intake path."""

    async def retention_vacuum(self, pages: int) -> int:
        """0: no free pages are handed back by this server (autovacuum makes them reusable;
        only VACUUM FULL shrinks the files, under an exclusive lock: an operator's call)."""
        return 0
