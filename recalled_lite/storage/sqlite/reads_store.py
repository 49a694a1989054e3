"""The read side of the sqlite store: the shared delegation (storage/reads_store.py) over
storage/sqlite/reads.py."""

from __future__ import annotations

from ..reads_store import ReadStore as _ReadStore
from . import reads


class ReadStore(_ReadStore):
    reads_sql = reads
