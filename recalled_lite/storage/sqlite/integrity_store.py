"""The chain verification part of SqliteStore: the scan over events and retention tombstones."""

from __future__ import annotations

import heapq
import sqlite3
from typing import Any, Callable, Iterator

from ...integrity.retention import check_checkpoint
from ...integrity.verify import ChainVerifier
from ..base import ExportRecord
from . import retention

# An event row plus what verification needs (salt, digest, erasure mark).
CHAIN_COLUMNS = ", ".join(ExportRecord._fields)

_make_export = ExportRecord._make


class IntegrityStore:
    """Mixed into SqliteStore (which provides read, write, project_id and the secret)."""

    _secret: bytes
    _conn: sqlite3.Connection
    project_id: str
    read: Any
    write: Any

    # -- integrity ----------------------------------------------------------

    async def verify_chain(self, from_seq: int | None = None, to_seq: int | None = None) -> dict[str, Any]:
        return await self.read(scan_chain, self.project_id, self._secret, from_seq, to_seq, None)

    def verify_chain_sync(self, from_seq: int | None = None, to_seq: int | None = None,
                          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        return scan_chain(self._conn, self.project_id, self._secret, from_seq, to_seq, progress)

    async def check_writable(self) -> None:
        # BEGIN IMMEDIATE takes the write lock: if this commits, writes work.
        await self.write(lambda conn: conn.execute("SELECT 1").fetchone())


def iter_chain_rows(conn: sqlite3.Connection, from_seq: int, to_seq: int | None) -> Iterator[ExportRecord]:
    sql = f"SELECT {CHAIN_COLUMNS} FROM events WHERE seq >= ?"
    params: list[Any] = [from_seq]
    if to_seq is not None:
        sql += " AND seq <= ?"
        params.append(to_seq)
    for row in conn.execute(sql + " ORDER BY seq", params):
        yield _make_export(row)


def scan_chain(conn: sqlite3.Connection, project_id: str, secret: bytes | None, from_seq: int | None,
               to_seq: int | None, progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    """Verify events [from_seq, to_seq] in one read transaction (a consistent snapshot).

    Seqs a retention purge removed are read from their tombstones, merged in seq order: each
    is accounted for only if the signed retention checkpoint it names verifies (hash,
    signature, the digest over its tombstones, the link to the checkpoint before it). A seq
    with neither an event nor such a tombstone is a gap: tampering, never a purge."""
    conn.execute("BEGIN")
    try:
        start = max(from_seq or 1, 1)
        prev_hash = None
        if start > 1:
            row = conn.execute("SELECT hash FROM events WHERE seq = ?", (start - 1,)).fetchone()
            if row is None:
                stone = retention.tombstone_at(conn, start - 1)
                row = (stone.hash,) if stone is not None else None
            prev_hash = row[0] if row else None
        last = max(conn.execute("SELECT ifnull(max(seq), 0) FROM events").fetchone()[0],
                   retention.max_tombstone_seq(conn))
        end = min(to_seq, last) if to_seq is not None else last
        total = max(end - start + 1, 0)
        verifier = ChainVerifier(project_id, secret, prev_hash=prev_hash, prev_seq=start - 1)
        checkpoints = _CheckpointCheck(conn, project_id, secret)
        rows = iter_chain_rows(conn, start, end)
        stones = retention.tombstones_between(conn, start, end)
        done = 0
        for item in heapq.merge(rows, stones, key=lambda r: r[0]):
            if isinstance(item, ExportRecord):
                ok = verifier.feed(item)
            else:
                reason = checkpoints.why_not(item.checkpoint_id)
                if reason is not None:
                    verifier.fail(item.seq, None, f"purged seq not accounted for: {reason}")
                    break
                ok = verifier.feed_tombstone(item.seq, item.hash)
            if not ok:
                break
            done += 1
            if progress is not None and done % 5000 == 0:
                progress(done, total)
        if progress is not None:
            progress(done, total)
        result = verifier.result()
        if result["valid"] and done < total:
            # Rows missing from the end of the range (deleted behind our back).
            result["valid"] = False
            result["firstInvalid"] = {"seq": start + done, "id": None, "reason": "event missing"}
        return result
    finally:
        conn.execute("COMMIT")


class _CheckpointCheck:
    """Retention checkpoints verified once per scan, on first use."""

    def __init__(self, conn: sqlite3.Connection, project_id: str, secret: bytes | None) -> None:
        self.conn, self.project_id, self.secret = conn, project_id, secret
        self.verdicts: dict[int, str | None] = {}

    def why_not(self, cp_id: int) -> str | None:
        if cp_id in self.verdicts:
            return self.verdicts[cp_id]
        cp = retention.checkpoint(self.conn, cp_id)
        if cp is None:
            reason: str | None = f"its retention checkpoint {cp_id} is missing"
        else:
            before = retention.checkpoint(self.conn, cp_id - 1) if cp_id > 1 else None
            if cp_id > 1 and before is None:
                reason = f"retention checkpoint {cp_id - 1} is missing"
            else:
                reason = check_checkpoint(self.project_id, cp, retention.checkpoint_tombstones(self.conn, cp_id),
                                          self.secret, before.hash if before else None)
        self.verdicts[cp_id] = reason
        return reason
