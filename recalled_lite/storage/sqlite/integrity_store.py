"""The chain verification part of SqliteStore: the scan over events and retention tombstones."""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Iterator

from ...integrity.verify import ChainVerifier
from ..base import ExportRecord
from ..chain_scan import CHAIN_COLUMNS, CheckpointCheck, scan_result, verified_items
from . import retention

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
        checkpoints = CheckpointCheck(retention, conn, project_id, secret)
        rows = iter_chain_rows(conn, start, end)
        stones = retention.tombstones_between(conn, start, end)
        done = 0
        for _ in verified_items(verifier, rows, stones, checkpoints.why_not):
            done += 1
            if progress is not None and done % 5000 == 0:
                progress(done, total)
        if progress is not None:
            progress(done, total)
        return scan_result(verifier, start, done, total)
    finally:
        conn.execute("COMMIT")
