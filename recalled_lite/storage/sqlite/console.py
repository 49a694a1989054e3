"""SQL of the console's tables (migration 005): sessions, one-time links, verifications,
and the API keys' last use. Writers run on the single writer thread (``store.write``),
readers on the reader pool; none of them runs on an API request's path."""

from __future__ import annotations

import json
import sqlite3

from ..base import ChainVerificationRecord, ConsoleSession

_SESSION_COLUMNS = "token_hash, key_id, created_at, last_seen_at"
_VERIFICATION_COLUMNS = (
    "id, started_at, finished_at, valid, checked, head_seq, head_hash, first_invalid, key_id"
)


def record_key_usage(conn: sqlite3.Connection, used: dict[str, int]) -> None:
    # max(): a flush that lost a race with a later one never moves the time backwards.
    conn.executemany(
        "UPDATE api_keys SET last_used_at = max(ifnull(last_used_at, 0), ?) WHERE id = ?",
        [(at, key_id) for key_id, at in used.items()])


def insert_session(conn: sqlite3.Connection, session: ConsoleSession) -> None:
    conn.execute(f"INSERT INTO console_sessions ({_SESSION_COLUMNS}) VALUES (?,?,?,?)",
                 (session.token_hash, session.key_id, session.created_at, session.last_seen_at))


def select_session(conn: sqlite3.Connection, token_hash: str) -> ConsoleSession | None:
    row = conn.execute(f"SELECT {_SESSION_COLUMNS} FROM console_sessions WHERE token_hash = ?",
                       (token_hash,)).fetchone()
    return ConsoleSession(*row) if row else None


def touch_sessions(conn: sqlite3.Connection, seen: dict[str, int]) -> None:
    conn.executemany(
        "UPDATE console_sessions SET last_seen_at = max(last_seen_at, ?) WHERE token_hash = ?",
        [(at, token_hash) for token_hash, at in seen.items()])


def delete_sessions(conn: sqlite3.Connection, token_hashes: list[str]) -> None:
    conn.executemany("DELETE FROM console_sessions WHERE token_hash = ?", [(h,) for h in token_hashes])


def purge(conn: sqlite3.Connection, idle_before: int, now: int) -> int:
    """Idle sessions, sessions of revoked or deleted keys, and dead links."""
    removed = conn.execute("DELETE FROM console_sessions WHERE last_seen_at < ?", (idle_before,)).rowcount
    removed += conn.execute(
        "DELETE FROM console_sessions WHERE key_id NOT IN "
        "(SELECT id FROM api_keys WHERE revoked_at IS NULL)").rowcount
    conn.execute("DELETE FROM console_links WHERE expires_at < ? OR used_at IS NOT NULL", (now,))
    return removed


def insert_link(conn: sqlite3.Connection, token_hash: str, key_id: str, created_at: int,
                expires_at: int) -> None:
    conn.execute("INSERT INTO console_links (token_hash, key_id, created_at, expires_at) VALUES (?,?,?,?)",
                 (token_hash, key_id, created_at, expires_at))


def redeem_link(conn: sqlite3.Connection, token_hash: str, now: int, consume: bool) -> str | None:
    row = conn.execute("SELECT key_id, expires_at, used_at FROM console_links WHERE token_hash = ?",
                       (token_hash,)).fetchone()
    if row is None or row[2] is not None or row[1] < now:
        return None
    if consume:
        conn.execute("UPDATE console_links SET used_at = ? WHERE token_hash = ?", (now, token_hash))
    return row[0]


def insert_verification(conn: sqlite3.Connection, record: ChainVerificationRecord) -> None:
    conn.execute(
        f"INSERT INTO chain_verifications ({_VERIFICATION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
        (record.id, record.started_at, record.finished_at, int(record.valid), record.checked,
         record.head_seq, record.head_hash,
         json.dumps(record.first_invalid) if record.first_invalid is not None else None, record.key_id))


def last_verification(conn: sqlite3.Connection) -> ChainVerificationRecord | None:
    row = conn.execute(f"SELECT {_VERIFICATION_COLUMNS} FROM chain_verifications "
                       "ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return ChainVerificationRecord(
        id=row[0], started_at=row[1], finished_at=row[2], valid=bool(row[3]), checked=row[4],
        head_seq=row[5], head_hash=row[6], first_invalid=json.loads(row[7]) if row[7] else None,
        key_id=row[8])
