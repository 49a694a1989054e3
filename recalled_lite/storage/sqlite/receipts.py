"""Receipts in SQLite (table `receipts`, migration 006): one active receipt per event at most."""

from __future__ import annotations

import sqlite3

from ..base import ReceiptRecord

_RECEIPT_COLUMNS = "id, event_seq, created_at, revoked_at"


def receipt_for_event(conn: sqlite3.Connection, event_seq: int, new_id: str, created_at: int) -> ReceiptRecord:
    row = conn.execute(
        f"SELECT {_RECEIPT_COLUMNS} FROM receipts WHERE event_seq = ? AND revoked_at IS NULL "
        "ORDER BY created_at LIMIT 1", (event_seq,),
    ).fetchone()
    if row is not None:
        return ReceiptRecord(*row)
    conn.execute("INSERT INTO receipts (id, event_seq, created_at, revoked_at) VALUES (?, ?, ?, NULL)",
                 (new_id, event_seq, created_at))
    return ReceiptRecord(new_id, event_seq, created_at, None)


def get_receipt(conn: sqlite3.Connection, receipt_id: str) -> ReceiptRecord | None:
    row = conn.execute(f"SELECT {_RECEIPT_COLUMNS} FROM receipts WHERE id = ?", (receipt_id,)).fetchone()
    return ReceiptRecord(*row) if row else None


def revoke_receipts(conn: sqlite3.Connection, event_seq: int, revoked_at: int) -> int:
    return conn.execute("UPDATE receipts SET revoked_at = ? WHERE event_seq = ? AND revoked_at IS NULL",
                        (revoked_at, event_seq)).rowcount
