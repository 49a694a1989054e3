"""GDPR erasure on PostgreSQL (`DELETE /v1/actors/{id}`): the same row change as SQLite.

Per event, one chunk of events per write op (so intake keeps flowing between chunks): actor
id/name/email become '[deleted]' (NULL stays NULL); metadata, ip address, user agent, the
personal salt and request_digest (an unsalted fingerprint of the request) become NULL;
erased_at is set; the filter keys and the full-text document are rewritten without the
personal parts, so the event stays findable by action, organization and targets. The chained
columns, personal_digest included, are untouched: the chain still verifies. 001's trigger
allows exactly this UPDATE.

There is no purge step as on SQLite (FTS5 segment merges, WAL truncation): the tsvector and
keys live in the row, so the UPDATE replaces them with the rest of it. What stays on disk
(dead row versions until VACUUM, WAL, backups) is in docs/scaling.md, "Erasure on
PostgreSQL".
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..fts import fts_columns
from ..keys import event_keys
from .search_doc import search_document

DELETED = "[deleted]"
# Events erased per write op, as on SQLite (the audit hook counts by it).
ERASE_CHUNK = 128

_decode = msgspec.json.decode

# FOR UPDATE: two instances erasing the same actor serialize on the rows; the second one,
# once the first has committed, re-checks `erased_at IS NULL` on the new row versions (READ
# COMMITTED) and does not erase (or count) a row twice. events_by_actor_time drives it.
_SELECT = (
    "SELECT seq, organization, action, targets FROM events "
    "WHERE actor_id = %s AND erased_at IS NULL{org} LIMIT %s FOR UPDATE"
)
_ERASE_ROW = (
    "UPDATE events SET actor_id = %s, "
    "actor_name = CASE WHEN actor_name IS NULL THEN NULL ELSE %s END, "
    "actor_email = CASE WHEN actor_email IS NULL THEN NULL ELSE %s END, "
    "metadata = NULL, ip_address = NULL, user_agent = NULL, personal_salt = NULL, "
    "request_digest = NULL, erased_at = %s, keys = %b::text[], search = %s::tsvector "
    "WHERE seq = %s AND erased_at IS NULL"
)


def erased_fts_columns(action: str, organization: str | None,
                       targets_json: str | None) -> tuple[str, str, str, str, str]:
    """What an erased event contributes to the index: no actor, no metadata."""
    return fts_columns(action, None, None, None, organization, targets_json, None)


def erased_keys(organization: str | None, action: str, targets_json: str | None) -> list[str]:
    return event_keys(organization, action, DELETED, _decode(targets_json) if targets_json else None).split()


def erase_chunk(conn: Any, actor_id: str, organization: str | None, erased_at: int,
                limit: int = ERASE_CHUNK) -> int:
    """Erase up to `limit` not-yet-erased events of the actor; returns how many."""
    if organization is None:
        rows = conn.execute(_SELECT.format(org=""), (actor_id, limit)).fetchall()
    else:
        rows = conn.execute(_SELECT.format(org=" AND organization = %s"),
                            (actor_id, organization, limit)).fetchall()
    if not rows:
        return 0
    updates = [
        (DELETED, DELETED, DELETED, erased_at, erased_keys(org, action, targets),
         search_document(erased_fts_columns(action, org, targets)), seq)
        for seq, org, action, targets in rows
    ]
    with conn.cursor() as cur:
        cur.executemany(_ERASE_ROW, updates)
        done = cur.rowcount
    return done
