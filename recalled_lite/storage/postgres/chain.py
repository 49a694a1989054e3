"""The chain append on PostgreSQL: AppendEvents and the chain head.

The rules (idempotency, numbering, chaining) are storage/append_plan.py's, shared with
SQLite; this module holds the SQL. A write group that appends holds the chain-head row lock
from its first statement to COMMIT (writer.py), so the head in the writer's state is the
committed head of every instance once `state_is_stale` has run.

Round trips for a group of requests: one lookup of every idempotency key in the group (none
without keys), one INSERT of all its events, one statement for the tree's strips and the
head, around BEGIN, the head lock, SAVEPOINT, RELEASE and COMMIT.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ...errors import StorageError
from ...ids import ulids as shared_ulids
from ..append_plan import chain_events, keyed_scopes, plan_group, settle
from ..base import AppendResult, EventRecord, PreparedEvent
from ..group_writer import WriteOp
from .merkle import grow_tree, load_tree
from .search_doc import search_document
from .writer import Writer

EVENT_COLUMNS = ", ".join(EventRecord._fields)

# One statement per group for all its new events (unnest of one array per column): one round
# trip, where an executemany sends a statement per row. `keys` travels as the space-separated
# document of storage/keys.py (its keys are hex, never a space), since arrays of unequal length
# cannot be unnested side by side, and the search document as its tsvector literal
# (storage/postgres/search_doc.py). Arrays travel in binary (%b) here and in every unnest of
# this package: psycopg's text-format array dumper escapes each element through a regex, which
# was half the writer thread's samples under batch intake (py-spy, BENCHMARKS.md); for 1000
# rows of 5 columns binary took 5.8 ms where text took 183 ms.
_INSERT_EVENTS = (
    "INSERT INTO events (seq, id, organization, action, actor_type, actor_id, actor_name, "
    "actor_email, targets, metadata, ip_address, user_agent, occurred_at, received_at, "
    "idempotency_key, request_digest, personal_salt, personal_digest, prev_hash, hash, signature, "
    "keys, search) "
    "SELECT seq, id, organization, action, actor_type, actor_id, actor_name, actor_email, targets, "
    "metadata, ip_address, user_agent, occurred_at, received_at, idempotency_key, request_digest, "
    "personal_salt, personal_digest, prev_hash, hash, signature, "
    "string_to_array(keys, ' '), search::tsvector "
    "FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::text[], "
    "%b::bytea[], %b::bytea[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) "
    "AS e (seq, id, organization, action, actor_type, actor_id, actor_name, actor_email, targets, "
    "metadata, ip_address, user_agent, occurred_at, received_at, idempotency_key, request_digest, "
    "personal_salt, personal_digest, prev_hash, hash, signature, keys, search)"
)
# The tree's new strips and the head, in one statement after the intake hooks.
_GROW_AND_MOVE = (
    "WITH strips AS (INSERT INTO merkle_tiles (level, idx, strip, hashes) "
    "SELECT * FROM unnest(%b::integer[], %b::bigint[], %b::integer[], %b::bytea[]) "
    "ON CONFLICT (level, idx, strip) DO UPDATE SET hashes = excluded.hashes) "
    "UPDATE chain_head SET seq = %s, hash = %s, tree_size = %s WHERE id = 1"
)
# The expression and predicate of the events_by_idempotency index, so it is the one used.
_FIND_IDEMPOTENT = (
    f"SELECT {EVENT_COLUMNS}, request_digest, coalesce(organization, '') FROM events "
    "WHERE idempotency_key IS NOT NULL AND (coalesce(organization, ''), idempotency_key) IN "
    "(SELECT * FROM unnest(%b::text[], %b::text[]))"
)
LOCK_HEAD = "SELECT seq, hash, tree_size FROM chain_head WHERE id = 1 FOR UPDATE"
_READ_HEAD = "SELECT seq, hash, tree_size FROM chain_head WHERE id = 1"

_make_record = EventRecord._make


class AppendEvents(WriteOp):
    """Number, chain and store one request's events; replay idempotent repeats.

    Consecutive AppendEvents ops of a group run together (`apply_group`), as on SQLite."""

    __slots__ = ("events",)

    def __init__(self, events: list[PreparedEvent]) -> None:
        self.events = events

    def apply(self, conn: psycopg.Connection, writer: Writer) -> list[AppendResult]:
        (outcome,) = self.apply_group(conn, writer, [self])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @staticmethod
    def apply_group(conn: psycopg.Connection, writer: Writer,
                    ops: list["AppendEvents"]) -> list[list[AppendResult] | Exception]:
        state = writer.state
        if not state.get("chain_locked"):
            # Every group takes the lock first (writer.py); without it, numbering could fork
            # the chain with another instance, so refuse (a bug, never a client's fault).
            raise StorageError("internal error: a chain append without the chain-head lock")
        requests = [op.events for op in ops]
        scopes = keyed_scopes(requests)
        stored: dict[tuple[str, str], tuple[EventRecord, bytes | None]] = {}
        if scopes:
            rows = conn.execute(_FIND_IDEMPOTENT, ([s[0] for s in scopes], [s[1] for s in scopes])).fetchall()
            n = len(EventRecord._fields)
            for row in rows:
                digest = row[n]
                stored[(row[n + 1], row[14])] = (_make_record(row[:n]), bytes(digest) if digest is not None else None)
        plan = plan_group(requests, stored.get)
        if not plan.fresh:
            return plan.outcomes
        columns: list[list[Any]] = [[] for _ in range(23)]
        records = []
        for ev, record in chain_events(plan, project_id=state["project_id"], secret=state["secret"],
                                       ulids=state["ulids"], head_seq=state["head_seq"],
                                       head_hash=state["head_hash"]):
            row = (
                record.seq, record.id, ev.organization, ev.action, ev.actor_type, ev.actor_id,
                ev.actor_name, ev.actor_email, ev.targets_json, ev.metadata_json,
                ev.ip_address, ev.user_agent, ev.occurred_at, ev.received_at,
                ev.idempotency_key, ev.request_digest, ev.personal_salt, ev.personal_digest,
                record.prev_hash, record.hash, record.signature,
                ev.keys, search_document(ev.fts),
            )
            for column, value in zip(columns, row):
                column.append(value)
            records.append(record)
        outcomes = settle(plan)
        conn.execute(_INSERT_EVENTS, columns)
        for hook in state["intake_hooks"]:
            hook(conn, records)
        tree, strips = grow_tree(conn, state["tree"], records)
        last = records[-1]
        strip_columns = [list(column) for column in zip(*strips)] or [[], [], [], []]
        conn.execute(_GROW_AND_MOVE, (*strip_columns, last.seq, last.hash, tree.size))
        # Only now, with every statement done, does the head move: an exception above fails
        # the op (its savepoint) or the group, and the state stays at the committed head.
        state["head_seq"], state["head_hash"], state["tree"] = last.seq, last.hash, tree
        return outcomes


def append_in_op(conn: psycopg.Connection, writer: Writer, events: list[PreparedEvent]) -> list[EventRecord]:
    """Append events from inside another op (audited.AuditedCall): the same chain append."""
    (outcome,) = AppendEvents.apply_group(conn, writer, [AppendEvents(events)])
    if isinstance(outcome, Exception):
        raise outcome
    return [appended.event for appended in outcome]


def read_head(conn: psycopg.Connection, *, lock: bool) -> tuple[int, str | None, int]:
    row = conn.execute(LOCK_HEAD if lock else _READ_HEAD).fetchone()
    if row is None:
        raise StorageError("the chain_head row is missing: the database was altered; restore a backup")
    return row[0], row[1], row[2]


def load_chain_state(conn: psycopg.Connection, state: dict[str, Any]) -> None:
    """The chain head, the tree's right edge and the id clock, from the database (at open,
    after a failed group, and whenever another instance moved the head)."""
    seq, head_hash, tree_size = read_head(conn, lock=False)
    state["tree"] = load_tree(conn, tree_size)
    state["head_seq"], state["head_hash"] = seq, head_hash
    row = conn.execute("SELECT id FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    if row is not None:
        # Another instance's clock ahead of ours (or ours set back) must not give new events
        # ids below stored ones.
        last = row[0].partition("_")[2]
        state["ulids"].continue_after(last)
        shared_ulids.continue_after(last)


def head_moved(conn: psycopg.Connection, state: dict[str, Any]) -> bool:
    """Runs first in every group (storage/group_writer.py): takes the chain-head lock, outside
    any savepoint, held to COMMIT (writer.py says why every group takes it)."""
    seq, head_hash, tree_size = read_head(conn, lock=True)
    state["chain_locked"] = True
    return (seq, head_hash, tree_size) != (state["head_seq"], state["head_hash"], state["tree"].size)
