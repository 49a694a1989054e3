"""The erasure part of SqliteStore: the shared chunk loop (storage/erasure_store.py), then the
purge of the full-text index (storage/sqlite/erasure.py, purge.py)."""

from __future__ import annotations

from typing import Any

from ..erasure_store import ErasureStore as _ErasureStore
from . import erasure, retention


class ErasureStore(_ErasureStore):
    """Mixed into SqliteStore (which provides write and the ErasurePurge)."""

    retention_sql = retention
    erase_chunk_size = erasure.ERASE_CHUNK
    purge: Any

    async def after_erasure(self, erased: int) -> None:
        # The purge runs one bounded step per write op, interleaved with intake, and the WAL
        # truncation. Concurrent erasures share a purge when their rows were committed before
        # it began.
        await self.purge.after_erasure(erased=erased > 0)
