"""The erasure part of PostgresStore: the shared chunk loop (storage/erasure_store.py) over
storage/postgres/erasure.py. Nothing is left to purge afterwards in the database's own
structures; what PostgreSQL keeps on disk is in docs/scaling.md ("Erasure on PostgreSQL")."""

from __future__ import annotations

from ..erasure_store import ErasureStore as _ErasureStore
from . import erasure, retention


class ErasureStore(_ErasureStore):
    """Mixed into PostgresStore."""

    retention_sql = retention
    erase_chunk_size = erasure.ERASE_CHUNK
