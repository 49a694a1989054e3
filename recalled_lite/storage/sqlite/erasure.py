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

Then the purge (storage/sqlite/purge.py runs it; it merges events_keys the same way, since
the keys of keys.py name the actor id): a 'delete' in a contentless FTS5 index
only adds a tombstone, and the deleted terms stay in the older segments (and the tombstones
themselves name them) until every segment is merged into one. That merge is the FTS5
'optimize' rewrite of the whole index, which once ran as one write op and held the writer
0.7 s on a 400k-event log (~17 s at 10M). It now runs incrementally: `purge_begin` gathers
every segment into one level and starts merging them ('merge' with a negative budget),
and each `purge_step` merges PURGE_STEP_PAGES more pages ('merge' with a positive budget
continues the merge already started, whatever intake added since), each step its own write
op, queued behind whatever intake is waiting. When a step does no work (fewer than two rows
changed, the FTS5 documentation's test) the merge is complete and the deleted terms are
gone. The writer runs with secure_delete=ON (connection.py), so every page and cell the
merge frees is zeroed. Finally the WAL, which still holds the pre-erasure page images, is
truncated between two write groups, never waiting on a reader (checkpoint.WalTruncator).

Two marker rows in `meta` make this crash-safe. `erasure_purge_pending` is bumped by every
chunk, in the chunk's transaction; the purge deletes it in its last step only if no chunk
bumped it since the purge began (an erasure that committed mid-purge gets another round).
That last step bumps `erasure_wal_truncate_pending`, deleted once the WAL was truncated. A
server starting with either marker set finishes the job in the background.
"""

from __future__ import annotations

import json
import sqlite3
from typing import NamedTuple

from ..fts import fts_columns
from ..keys import event_keys, key

DELETED = "[deleted]"
# Events erased per write op. Measured on a 400k-event log: 128 events cost ~6 ms with
# the commit (about one intake group of 64 single events); 500 cost ~23 ms.
ERASE_CHUNK = 128
# FTS5 pages (pgsz ~4 KB) merged per purge step. Measured on a 400k-event log (a 42 MB
# index): 64 pages is a ~5 ms step, like one intake group of 64 single events; the purge
# takes ~100 steps there. (The step that completes a level also frees its input pages,
# up to ~25 ms.)
PURGE_STEP_PAGES = 64
PURGE_MARKER = "erasure_purge_pending"
WAL_MARKER = "erasure_wal_truncate_pending"

_BUMP = ("INSERT INTO meta (key, value) VALUES (?, '1') "
         "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
_MERGE = "INSERT INTO events_fts (events_fts, rank) VALUES ('merge', ?)"
# events_keys holds the actor id too (hex, keys.py): an erased actor's key stays in its older
# segments until they are merged, exactly like the full-text terms, so the purge merges both.
_MERGE_KEYS = "INSERT INTO events_keys (events_keys, rank) VALUES ('merge', ?)"

# No ORDER BY: the actor's key (keys.py) is walked from its start and stops after one
# chunk; rows erased by earlier chunks have left it (their keys name '[deleted]').
_SELECT_ANY_ORG = (
    "SELECT seq, organization, action, actor_id, actor_name, actor_email, targets, metadata "
    "FROM events_keys CROSS JOIN events ON events.seq = events_keys.rowid "
    "WHERE events_keys MATCH ? AND actor_id = ? AND erased_at IS NULL LIMIT ?"
)
_SELECT_ONE_ORG = (
    "SELECT seq, organization, action, actor_id, actor_name, actor_email, targets, metadata "
    "FROM events_keys CROSS JOIN events ON events.seq = events_keys.rowid "
    "WHERE events_keys MATCH ? AND actor_id = ? AND organization = ? AND erased_at IS NULL LIMIT ?"
)
_KEYS_UPDATE = "UPDATE events_keys SET keys = ? WHERE rowid = ?"
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
    actor_key = key("a", actor_id)
    if organization is None:
        rows = conn.execute(_SELECT_ANY_ORG, (actor_key, actor_id, limit)).fetchall()
    else:
        rows = conn.execute(_SELECT_ONE_ORG, (actor_key, actor_id, organization, limit)).fetchall()
    if not rows:
        return 0
    fts_deletes, fts_inserts, updates, key_updates = [], [], [], []
    for seq, org, action, a_id, a_name, a_email, targets, metadata in rows:
        fts_deletes.append((seq, *fts_columns(action, a_id, a_name, a_email, org, targets, metadata)))
        fts_inserts.append((seq, *erased_fts_columns(action, org, targets)))
        updates.append((DELETED, DELETED, DELETED, erased_at, seq))
        key_updates.append((event_keys(org, action, DELETED, json.loads(targets) if targets else None), seq))
    conn.executemany(_FTS_DELETE, fts_deletes)
    conn.executemany(_ERASE_ROW, updates)
    conn.executemany(_FTS_INSERT, fts_inserts)
    conn.executemany(_KEYS_UPDATE, key_updates)
    conn.execute(_BUMP, (PURGE_MARKER,))
    return len(rows)


class PurgeStep(NamedTuple):
    pages: int                 # the budget this step was given
    changes: int               # rows of the index's tables it changed
    wal_generation: str | None  # set by the last step: the WAL truncation now owed


def _marker(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def purge_pending(conn: sqlite3.Connection) -> bool:
    return _marker(conn, PURGE_MARKER) is not None


def wal_truncation_owed(conn: sqlite3.Connection) -> str | None:
    return _marker(conn, WAL_MARKER)


def purge_begin(conn: sqlite3.Connection) -> str | None:
    """Start a purge round: the generation it covers, or None if nothing is owed."""
    generation = _marker(conn, PURGE_MARKER)
    if generation is None:
        return None
    conn.execute("PRAGMA secure_delete=ON")  # already on (connection.py); never run without it
    # Negative: every segment is moved to one level first, so the merge takes them all.
    conn.execute(_MERGE, (-PURGE_STEP_PAGES,))
    conn.execute(_MERGE_KEYS, (-PURGE_STEP_PAGES,))
    return generation


def purge_step(conn: sqlite3.Connection, generation: str) -> PurgeStep:
    """Merge up to PURGE_STEP_PAGES more pages; the last step (no work left) clears the marker."""
    conn.execute("PRAGMA secure_delete=ON")
    before = conn.total_changes
    conn.execute(_MERGE, (PURGE_STEP_PAGES,))
    text_changes = conn.total_changes - before
    conn.execute(_MERGE_KEYS, (PURGE_STEP_PAGES,))
    changes = conn.total_changes - before
    if text_changes >= 2 or changes - text_changes >= 2:
        return PurgeStep(PURGE_STEP_PAGES, changes, None)
    # Complete. A chunk committed since purge_begin bumped the generation: its tombstones
    # may sit in segments this round did not take, so the marker stays for another round.
    conn.execute("DELETE FROM meta WHERE key = ? AND value = ?", (PURGE_MARKER, generation))
    conn.execute(_BUMP, (WAL_MARKER,))
    return PurgeStep(PURGE_STEP_PAGES, changes, _marker(conn, WAL_MARKER))


def clear_wal_marker(conn: sqlite3.Connection, generation: str) -> None:
    """The WAL was truncated after the purge of `generation` (a later purge keeps its own)."""
    conn.execute("DELETE FROM meta WHERE key = ? AND value = ?", (WAL_MARKER, generation))

