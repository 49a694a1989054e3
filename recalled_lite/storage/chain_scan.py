"""The backend-neutral part of a chain verification scan: events and retention tombstones
merged in seq order and fed to integrity/verify.py, each tombstone accounted for only if the
signed retention checkpoint it names verifies. A seq with neither an event nor such a
tombstone is a gap: tampering, never a purge.

Each backend reads the rows (its SQL, its cursor kind) and hands them here, so the verdict on
a given log is the same on every backend (storage/<backend>/integrity_store.py, copy.py).
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, Iterable, Iterator

from ..integrity.retention import check_checkpoint
from ..integrity.verify import ChainVerifier
from .base import ExportRecord

# An event row plus what verification needs (salt, digest, erasure mark).
CHAIN_COLUMNS = ", ".join(ExportRecord._fields)


def verified_items(verifier: ChainVerifier, rows: Iterable[ExportRecord], stones: Iterable[Any],
                   why_not: Callable[[int], str | None]) -> Iterator[Any]:
    """Each event or tombstone the verifier accepts, in seq order; stops at the first it does
    not (the verifier then holds the reason). `why_not(checkpoint_id)`: None if it verifies."""
    for item in heapq.merge(rows, stones, key=lambda r: r[0]):
        if isinstance(item, ExportRecord):
            ok = verifier.feed(item)
        else:
            reason = why_not(item.checkpoint_id)
            if reason is not None:
                verifier.fail(item.seq, None, f"purged seq not accounted for: {reason}")
                return
            ok = verifier.feed_tombstone(item.seq, item.hash)
        if not ok:
            return
        yield item


def scan_result(verifier: ChainVerifier, start: int, done: int, total: int) -> dict[str, Any]:
    result = verifier.result()
    if result["valid"] and done < total:
        # Rows missing from the end of the range (deleted behind our back).
        result["valid"] = False
        result["firstInvalid"] = {"seq": start + done, "id": None, "reason": "event missing"}
    return result


class CheckpointCheck:
    """Retention checkpoints verified once per scan, on first use. `retention_sql` is the
    backend's retention module (checkpoint, checkpoint_tombstones)."""

    def __init__(self, retention_sql: Any, conn: Any, project_id: str, secret: bytes | None) -> None:
        self.sql, self.conn, self.project_id, self.secret = retention_sql, conn, project_id, secret
        self.verdicts: dict[int, str | None] = {}

    def why_not(self, cp_id: int) -> str | None:
        if cp_id in self.verdicts:
            return self.verdicts[cp_id]
        cp = self.sql.checkpoint(self.conn, cp_id)
        if cp is None:
            reason: str | None = f"its retention checkpoint {cp_id} is missing"
        else:
            before = self.sql.checkpoint(self.conn, cp_id - 1) if cp_id > 1 else None
            if cp_id > 1 and before is None:
                reason = f"retention checkpoint {cp_id - 1} is missing"
            else:
                reason = check_checkpoint(self.project_id, cp, self.sql.checkpoint_tombstones(self.conn, cp_id),
                                          self.secret, before.hash if before else None)
        self.verdicts[cp_id] = reason
        return reason
