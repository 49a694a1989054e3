"""The read side of the postgres store: the shared delegation (storage/reads_store.py) over
storage/postgres/reads.py."""

from __future__ import annotations

from ..reads_store import ReadStore as _ReadStore
from . import reads


class ReadStore(_ReadStore):
    reads_sql = reads
