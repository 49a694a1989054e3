"""SQL of the console's tables on PostgreSQL (001): sessions, one-time links, verification
records, and the API keys' last use; the same behaviour as storage/sqlite/console.py.
Writers run on the writer (`store.write`), readers on the reader pool."""

from __future__ import annotations

import json
from typing import Any

from ..base import ChainVerificationRecord, ConsoleSession

_SESSION_COLUMNS = "token_hash, key_id, created_at, last_seen_at"
_VERIFICATION_COLUMNS = (
    "id, started_at, finished_at, valid, checked, head_seq, head_hash, first_invalid, key_id"
)


def _many(conn: Any, sql: str, rows: list[tuple]) -> None:
    if rows:
        with conn.cursor() as cur:
            cur.executemany(sql, rows)


def record_key_usage(conn: Any, used: dict[str, int]) -> None:
    # GREATEST: a flush that lost a race with a later one (this or another instance's) never
    # moves the time backwards.
    _many(conn, "UPDATE api_keys SET last_used_at = GREATEST(coalesce(last_used_at, 0), %s) WHERE id = %s",
          [(at, key_id) for key_id, at in used.items()])


def insert_session(conn: Any, session: ConsoleSession) -> None:
    conn.execute(f"INSERT INTO console_sessions ({_SESSION_COLUMNS}) VALUES (%s,%s,%s,%s)",
                 (session.token_hash, session.key_id, session.created_at, session.last_seen_at))


def select_session(conn: Any, token_hash: str) -> ConsoleSession | None:
    row = conn.execute(f"SELECT {_SESSION_COLUMNS} FROM console_sessions WHERE token_hash = %s",
                       (token_hash,)).fetchone()
    return ConsoleSession(*row) if row else None


def touch_sessions(conn: Any, seen: dict[str, int]) -> None:
    _many(conn, "UPDATE console_sessions SET last_seen_at = GREATEST(last_seen_at, %s) WHERE token_hash = %s",
          [(at, token_hash) for token_hash, at in seen.items()])


def delete_sessions(conn: Any, token_hashes: list[str]) -> None:
    if token_hashes:
        conn.execute("DELETE FROM console_sessions WHERE token_hash = ANY(%b::text[])", (list(token_hashes),))


def purge(conn: Any, idle_before: int, now: int) -> int:
    """Idle sessions, sessions of revoked or deleted keys, and dead links."""
    removed = conn.execute("DELETE FROM console_sessions WHERE last_seen_at < %s", (idle_before,)).rowcount
    removed += conn.execute(
        "DELETE FROM console_sessions WHERE key_id NOT IN "
        "(SELECT id FROM api_keys WHERE revoked_at IS NULL)").rowcount
    conn.execute("DELETE FROM console_links WHERE expires_at < %s OR used_at IS NOT NULL", (now,))
    return removed


def insert_link(conn: Any, token_hash: str, key_id: str, created_at: int, expires_at: int) -> None:
    conn.execute("INSERT INTO console_links (token_hash, key_id, created_at, expires_at) VALUES (%s,%s,%s,%s)",
                 (token_hash, key_id, created_at, expires_at))


def redeem_link(conn: Any, token_hash: str, now: int, consume: bool) -> str | None:
    # FOR UPDATE when consuming: two instances redeeming one link at once, the second waits
    # and then sees used_at set, so a link signs in exactly one browser.
    row = conn.execute("SELECT key_id, expires_at, used_at FROM console_links WHERE token_hash = %s"
                       + (" FOR UPDATE" if consume else ""), (token_hash,)).fetchone()
    if row is None or row[2] is not None or row[1] < now:
        return None
    if consume:
        conn.execute("UPDATE console_links SET used_at = %s WHERE token_hash = %s", (now, token_hash))
    return row[0]


def insert_verification(conn: Any, record: ChainVerificationRecord) -> None:
    conn.execute(
        f"INSERT INTO chain_verifications ({_VERIFICATION_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (record.id, record.started_at, record.finished_at, bool(record.valid), record.checked,
         record.head_seq, record.head_hash,
         json.dumps(record.first_invalid) if record.first_invalid is not None else None, record.key_id))


def last_verification(conn: Any) -> ChainVerificationRecord | None:
    row = conn.execute(f"SELECT {_VERIFICATION_COLUMNS} FROM chain_verifications "
                       "ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return ChainVerificationRecord(
        id=row[0], started_at=row[1], finished_at=row[2], valid=bool(row[3]), checked=row[4],
        head_seq=row[5], head_hash=row[6], first_invalid=json.loads(row[7]) if row[7] else None,
        key_id=row[8])
