"""GDPR erasure (`DELETE /v1/actors/{id}`): clear an actor's personal fields, then purge copies.

Per event (one chunk of events per write transaction, so intake keeps flowing):

* the full-text entry is deleted with the exact text that was indexed (events_fts is
  contentless, fts.py) and re-added without the personal parts, so the event stays
  findable by action, organization and targets;
* the row is updated the one way the append-only trigger allows: actor id/name/email
  become '[deleted]' (NULL stays NULL), metadata, ip address, user agent and the
  personal salt become NULL, erased_at is set; request_digest (an unsalted
  fingerprint of the request, personal fields included) is cleared as well. The
  chained columns, personal_digest included, are untouched: the chain still verifies
  (docs/integrity.md).

Then, once per erasure (`purge`): FTS5 `optimize` rewrites the index into one segment,
dropping the old segments that still hold the deleted terms (a 'delete' only adds a
tombstone); the writer runs with secure_delete=ON (connection.py), so every freed
page and cell is zeroed; finally a TRUNCATE checkpoint (`checkpoint_truncate`, on its
own connection, outside any transaction) copies the new pages into the database file
and empties the WAL, which still held the pre-erasure page images.

A marker row in `meta` says a purge is owed; it is set in the same transaction as the
rows and cleared by the purge, so a crash in between is repaired by the next erasure.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from .fts import fts_columns

DELETED = "[deleted]"
ERASE_CHUNK = 500
PURGE_MARKER = "erasure_purge_pending"

# No ORDER BY: the actor index is walked from its start and stops after one chunk; rows
# erased by earlier chunks have left that index range (their actor_id is '[deleted]').
_SELECT_ANY_ORG = (
    "SELECT seq, organization, action, actor_id, actor_name, actor_email, targets, metadata "
    "FROM events WHERE actor_id = ? AND erased_at IS NULL LIMIT ?"
)
_SELECT_ONE_ORG = (
    "SELECT seq, organization, action, actor_id, actor_name, actor_email, targets, metadata "
    "FROM events WHERE actor_id = ? AND organization = ? AND erased_at IS NULL LIMIT ?"
)
_FTS_DELETE = (
    "INSERT INTO events_fts (events_fts, rowid, action, actor, organization, targets, metadata) "
    "VALUES ('delete', ?, ?, ?, ?, ?, ?)"
)
_FTS_INSERT = "INSERT INTO events_fts (rowid, action, actor, organization, targets, metadata) VALUES (?,?,?,?,?,?)"
_ERASE_ROW = (
    "UPDATE events SET actor_id = ?, "
    "actor_name = CASE WHEN actor_name IS NULL THEN NULL ELSE ? END, "
    "actor_email = CASE WHEN actor_email IS NULL THEN NULL ELSE ? END, "
    "metadata = NULL, ip_address = NULL, user_agent = NULL, personal_salt = NULL, "
    "request_digest = NULL, erased_at = ? WHERE seq = ?"
)


def erased_fts_columns(action: str, organization: str | None,
                       targets_json: str | None) -> tuple[str, str, str, str, str]:
    """What an erased event contributes to the index: no actor, no metadata."""
    return fts_columns(action, None, None, None, organization, targets_json, None)


def erase_chunk(conn: sqlite3.Connection, actor_id: str, organization: str | None,
                erased_at: int, limit: int = ERASE_CHUNK) -> int:
    """Erase up to `limit` not-yet-erased events of the actor; returns how many."""
    if organization is None:
        rows = conn.execute(_SELECT_ANY_ORG, (actor_id, limit)).fetchall()
    else:
        rows = conn.execute(_SELECT_ONE_ORG, (actor_id, organization, limit)).fetchall()
    if not rows:
        return 0
    fts_deletes, fts_inserts, updates = [], [], []
    for seq, org, action, a_id, a_name, a_email, targets, metadata in rows:
        fts_deletes.append((seq, *fts_columns(action, a_id, a_name, a_email, org, targets, metadata)))
        fts_inserts.append((seq, *erased_fts_columns(action, org, targets)))
        updates.append((DELETED, DELETED, DELETED, erased_at, seq))
    conn.executemany(_FTS_DELETE, fts_deletes)
    conn.executemany(_ERASE_ROW, updates)
    conn.executemany(_FTS_INSERT, fts_inserts)
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", (PURGE_MARKER,))
    return len(rows)


def purge_pending(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM meta WHERE key = ?", (PURGE_MARKER,)).fetchone() is not None


def purge(conn: sqlite3.Connection) -> None:
    """Rewrite the full-text index without the deleted entries (zeroing the old segments)."""
    conn.execute("PRAGMA secure_delete=ON")  # already on (connection.py); never run without it
    conn.execute("INSERT INTO events_fts (events_fts) VALUES ('optimize')")
    conn.execute("DELETE FROM meta WHERE key = ?", (PURGE_MARKER,))


def checkpoint_truncate(path: Path, *, attempts: int = 40, pause: float = 0.05,
                        busy_timeout_ms: int = 2000) -> bool:
    """Copy the WAL into the database file and truncate the WAL to zero bytes.

    Runs on a connection of its own (a checkpoint cannot run inside the writer's
    transaction). It waits for the writer and for readers still on an older
    snapshot; if readers keep it from finishing, it retries briefly. Returns True
    when the WAL was emptied.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        for _ in range(attempts):
            try:
                busy, log_frames, _checkpointed = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.OperationalError:
                busy, log_frames = 1, -1
            if busy == 0 and log_frames in (0, -1):
                return True
            time.sleep(pause)
        return False
    finally:
        conn.close()
