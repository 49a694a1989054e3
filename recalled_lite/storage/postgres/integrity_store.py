"""Chain verification on PostgreSQL: one REPEATABLE READ snapshot, streamed through a
server-side cursor so a long log is never held in memory, fed to integrity/verify.py.

Seqs a retention purge removed are read from their tombstones (storage/postgres/retention.py),
merged in seq order; each is accounted for only if the signed retention checkpoint it names
verifies, exactly as on SQLite. A seq with neither an event nor such a tombstone is a gap.
"""

from __future__ import annotations

from typing import Any, Callable

import psycopg

from ...integrity.verify import ChainVerifier
from ..base import ExportRecord
from ..chain_scan import CHAIN_COLUMNS, CheckpointCheck, scan_result, verified_items
from . import retention

_FETCH = 5000


def _export_record(row: tuple[Any, ...]) -> ExportRecord:
    record = ExportRecord._make(row)
    if record.personal_salt is not None and not isinstance(record.personal_salt, bytes):
        record = record._replace(personal_salt=bytes(record.personal_salt))
    return record


def scan_chain(conn: psycopg.Connection, project_id: str, secret: bytes | None, from_seq: int | None,
               to_seq: int | None, progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    """Verify events [from_seq, to_seq] in the reader's transaction (a consistent snapshot)."""
    start = max(from_seq or 1, 1)
    prev_hash = None
    if start > 1:
        row = conn.execute("SELECT hash FROM events WHERE seq = %s", (start - 1,)).fetchone()
        if row is None:
            stone = retention.tombstone_at(conn, start - 1)
            row = (stone.hash,) if stone is not None else None
        prev_hash = row[0] if row else None
    last = max(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0],
               retention.max_tombstone_seq(conn))
    end = min(to_seq, last) if to_seq is not None else last
    total = max(end - start + 1, 0)
    verifier = ChainVerifier(project_id, secret, prev_hash=prev_hash, prev_seq=start - 1)
    checkpoints = CheckpointCheck(retention, conn, project_id, secret)
    # The tombstones are read whole before the events stream: one row per purged event,
    # small beside the events, and the checkpoints they name are then read between fetches.
    stones = list(retention.tombstones_between(conn, start, end))
    done = 0
    with conn.cursor(name="recalled_verify") as cur:
        cur.itersize = _FETCH
        cur.execute(f"SELECT {CHAIN_COLUMNS} FROM events WHERE seq >= %s AND seq <= %s ORDER BY seq",
                    (start, end))
        rows = (_export_record(row) for row in cur)
        for _ in verified_items(verifier, rows, stones, checkpoints.why_not):
            done += 1
            if progress is not None and done % 5000 == 0:
                progress(done, total)
    if progress is not None:
        progress(done, total)
    return scan_result(verifier, start, done, total)


def get_chain_record(conn: psycopg.Connection, event_id: str, organization: str | None) -> ExportRecord | None:
    row = conn.execute(f"SELECT {CHAIN_COLUMNS} FROM events WHERE id = %s", (event_id,)).fetchone()
    if row is None or (organization is not None and row[2] != organization):
        return None  # the tenant wall: indistinguishable from a missing event
    return _export_record(row)


class IntegrityStore:
    """Mixed into PostgresStore (which provides read, write, project_id and the secret)."""

    _secret: bytes
    project_id: str
    read: Any
    write: Any

    async def verify_chain(self, from_seq: int | None = None, to_seq: int | None = None) -> dict[str, Any]:
        return await self.read(scan_chain, self.project_id, self._secret, from_seq, to_seq, None)

    def verify_chain_sync(self, from_seq: int | None = None, to_seq: int | None = None,
                          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        return self._read_sync(scan_chain, self.project_id, self._secret, from_seq, to_seq,  # type: ignore[attr-defined]
                               progress)

    async def get_event_chain_record(self, event_id: str, organization: str | None) -> ExportRecord | None:
        return await self.read(get_chain_record, event_id, organization)

    async def check_writable(self) -> None:
        # A real write transaction on the writer's connection: answers only if the primary
        # accepts writes (a standby after a failover refuses with 25006 -> 503).
        await self.write(lambda conn: conn.execute("SELECT txid_current()").fetchone())
