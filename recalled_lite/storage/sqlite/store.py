"""SqliteStore: the Store protocol over one SQLite file.

Writes go through the single Writer (group commit); reads go to the ReaderPool.
This module keeps construction, start/close, the writer and the chain append; each
other job is a mixin in its own module (reads_store, erasure_store, keys_store,
integrity_store, console_store, merkle, retention_store).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable

from ...errors import ConfigError
from ...ids import UlidGenerator, new_id
from ...ids import ulids as shared_ulids
from ...timefmt import now_ms
from ..append_plan import chain_events, plan_group, settle
from .. import secret_check
from ..base import AppendResult, AuditHook, EventRecord, PreparedEvent, StorageGauges
from .connection import open_writer
from ..keys import AHEAD_MS, BLOCK_SHIFT
from .migrate import migrate
from . import erasure, gauges
from .audited import call_op
from .console_store import ConsoleStore
from .erasure_store import ErasureStore
from .integrity_store import IntegrityStore
from .keys_store import KeyStore, select_all_keys
from .purge import ErasurePurge
from .merkle import MerkleStore, append_leaves
from .readers import ReaderPool
from .reads_store import ReadStore
from .retention_store import RetentionStore
from .writer import BetweenGroupsOp, CallOp, Writer, WriteOp, deferred_foreign_keys

log = logging.getLogger("recalled_lite.store")

EVENT_COLUMNS = ", ".join(EventRecord._fields)

_INSERT_EVENT = (
    "INSERT INTO events (seq, id, organization, action, actor_type, actor_id, actor_name, "
    "actor_email, targets, metadata, ip_address, user_agent, occurred_at, received_at, "
    "idempotency_key, request_digest, personal_salt, personal_digest, prev_hash, hash, signature) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_KEYS = "INSERT INTO events_keys (rowid, keys) VALUES (?,?)"
# One row per block of seqs the group touched, oldest block first, so `max_below` can
# take the block before's (migration 007). Only the newest blocks ever change. ?4 is the
# latest occurred_at of the group's events in the block that are not ahead of their arrival
# (NULL if all are: migration 009); `max_below` covers only those.
_UPSERT_BLOCK = (
    "INSERT INTO event_blocks (block, min_occurred, max_occurred, max_below) "
    "SELECT ?1, ?2, ?3, coalesce(max(?4, below), ?4, below, ?2) FROM (SELECT (SELECT max_below "
    "FROM event_blocks WHERE block < ?1 ORDER BY block DESC LIMIT 1) AS below) WHERE 1 "
    "ON CONFLICT (block) DO UPDATE SET min_occurred = min(min_occurred, excluded.min_occurred), "
    "max_occurred = max(max_occurred, excluded.max_occurred), "
    "max_below = max(max_below, coalesce(?4, max_below))"
)
_INSERT_AHEAD = "INSERT INTO events_ahead (seq, occurred_at) VALUES (?, ?)"
_INSERT_FTS = "INSERT INTO events_fts (rowid, action, actor, organization, targets, metadata) VALUES (?,?,?,?,?,?)"
_FIND_IDEMPOTENT = (
    f"SELECT {EVENT_COLUMNS}, request_digest FROM events "
    "WHERE ifnull(organization, '') = ? AND idempotency_key = ?"
)

_make_record = EventRecord._make


class AppendEvents(WriteOp):
    """Number, chain and store one request's events; replay idempotent repeats.

    Consecutive AppendEvents ops of a write group are applied together by
    `apply_group`: one executemany per table for the whole group instead of a
    SAVEPOINT and three statements per request, which halves the writer's cost
    per single-event request (55 -> ~28 us measured in groups of 32).
    """

    __slots__ = ("events",)

    def __init__(self, events: list[PreparedEvent]) -> None:
        self.events = events

    def apply(self, conn: sqlite3.Connection, writer: Writer) -> list[AppendResult]:
        (outcome,) = self.apply_group(conn, writer, [self])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @staticmethod
    def apply_group(conn: sqlite3.Connection, writer: Writer,
                    ops: list["AppendEvents"]) -> list[list[AppendResult] | Exception]:
        """Apply many requests at once (storage/append_plan.py: idempotency, numbering,
        chaining). Business errors (an idempotency conflict) are returned in that request's
        slot before anything is written, so the other requests are unaffected; a database
        error propagates and fails the whole write group."""
        state = writer.state

        def find_stored(scope: tuple[str, str]) -> tuple[EventRecord, bytes | None] | None:
            row = conn.execute(_FIND_IDEMPOTENT, scope).fetchone()
            return (_make_record(row[:-1]), row[-1]) if row is not None else None

        plan = plan_group([op.events for op in ops], find_stored)
        if not plan.fresh:
            return plan.outcomes

        event_rows, key_rows, fts_rows, records, ahead_rows = [], [], [], [], []
        blocks: dict[int, list[Any]] = {}
        for ev, record in chain_events(plan, project_id=state["project_id"], secret=state["secret"],
                                       ulids=state["ulids"], head_seq=state["head_seq"],
                                       head_hash=state["head_hash"]):
            seq = record.seq
            event_rows.append((
                seq, record.id, ev.organization, ev.action, ev.actor_type, ev.actor_id,
                ev.actor_name, ev.actor_email, ev.targets_json, ev.metadata_json,
                ev.ip_address, ev.user_agent, ev.occurred_at, ev.received_at,
                ev.idempotency_key, ev.request_digest, ev.personal_salt, ev.personal_digest,
                record.prev_hash, record.hash, record.signature,
            ))
            key_rows.append((seq, ev.keys))
            occurred = ev.occurred_at
            # [min, max, max of those not ahead of their arrival] per block.
            bounds = blocks.get(seq >> BLOCK_SHIFT)
            if bounds is None:
                bounds = blocks[seq >> BLOCK_SHIFT] = [occurred, occurred, None]
            elif occurred < bounds[0]:
                bounds[0] = occurred
            elif occurred > bounds[1]:
                bounds[1] = occurred
            if occurred > ev.received_at + AHEAD_MS:
                ahead_rows.append((seq, occurred))
            elif bounds[2] is None or occurred > bounds[2]:
                bounds[2] = occurred
            fts_rows.append((seq, *ev.fts))
            records.append(record)
        outcomes = settle(plan)
        seq, prev_hash = records[-1].seq, records[-1].hash
        # The two FTS5 tables come last. FTS5 keeps a group's rows in memory and writes them
        # out at COMMIT, or earlier when a later statement opens a statement journal (the
        # tiles' upsert fires a trigger; the webhook outbox): then that statement pays for
        # it (the upsert showed 21 us per event in process, groups of 16, against 1 us with
        # this order). The work is the same either way, give or take: callgrind counted 2 %
        # fewer instructions in sqlite3_step with this order.
        conn.executemany(_INSERT_EVENT, event_rows)
        tree = append_leaves(conn, state["tree"], records)  # the Merkle tiles, same transaction
        conn.executemany(_UPSERT_BLOCK, [(b, *bounds) for b, bounds in sorted(blocks.items())])
        if ahead_rows:
            conn.executemany(_INSERT_AHEAD, ahead_rows)
        for hook in state["intake_hooks"]:
            hook(conn, records)
        conn.executemany(_INSERT_KEYS, key_rows)
        conn.executemany(_INSERT_FTS, fts_rows)
        # Only now, with every statement done, does the head move: an exception
        # above fails the whole group and the writer reloads the head from disk.
        state["head_seq"], state["head_hash"], state["tree"] = seq, prev_hash, tree
        return outcomes


def append_in_op(conn: sqlite3.Connection, writer: Writer, events: list[PreparedEvent]) -> list[EventRecord]:
    """Append events from inside another op (audited.AuditedCall): the same chain append."""
    (outcome,) = AppendEvents.apply_group(conn, writer, [AppendEvents(events)])
    if isinstance(outcome, Exception):
        raise outcome
    return [appended.event for appended in outcome]


_SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _durability_settings(conn: sqlite3.Connection) -> dict[str, str]:
    """What the write connection really runs with, read back from SQLite (not from
    the config), for /metrics: `make bench` checks it so that no figure comes
    from a server with durability or the full-text index turned off."""
    fts = conn.execute(
        "SELECT count(*) FROM sqlite_schema WHERE name = 'events_fts' AND sql LIKE '%fts5%'"
    ).fetchone()[0]
    return {
        "journal_mode": str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower(),
        "synchronous": _SYNCHRONOUS_NAMES.get(conn.execute("PRAGMA synchronous").fetchone()[0], "?"),
        "secure_delete": "on" if conn.execute("PRAGMA secure_delete").fetchone()[0] else "off",
        "fts": "on" if fts else "off",
    }


class SqliteStore(MerkleStore, RetentionStore, ReadStore, ErasureStore, KeyStore, IntegrityStore, ConsoleStore):
    shared_writers = False  # one server per file (the instance lock); a CLI append is rare
    def __init__(self, path: Path, *, secret: bytes, synchronous: str = "FULL",
                 busy_timeout_ms: int = 5000, readers: int = 4, cache_mb: int = 16,
                 max_page_count: int = 0) -> None:
        self.path = Path(path)
        self._secret = secret
        self._busy_timeout_ms = busy_timeout_ms
        self._reader_count = readers
        self._cache_mb = cache_mb
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = open_writer(self.path, synchronous=synchronous,
                                 busy_timeout_ms=busy_timeout_ms, cache_mb=cache_mb,
                                 max_page_count=max_page_count)
        self.schema_version = migrate(self._conn)
        _refuse_deferred_constraints(self._conn)
        self.durability = _durability_settings(self._conn)
        self.writer = Writer(self._conn)
        self.writer.state.update(secret=secret, ulids=UlidGenerator(), intake_hooks=[])
        self.writer.reload_state = self._load_chain_head
        self.writer.state_is_stale = self._chain_head_moved
        self.project_id = self._init_meta()
        self.writer.state["project_id"] = self.project_id
        self._load_chain_head(self._conn)
        self._init_tree()
        self._keys = {record.prefix: record for record in select_all_keys(self._conn)}
        self.readers: ReaderPool | None = None
        self.started = False
        self.purge = ErasurePurge(self.write, self.between_groups)
        # Work a previous process left owed (it crashed mid-purge, or before the WAL was emptied).
        self._owed_at_start = (erasure.purge_pending(self._conn), erasure.wal_truncation_owed(self._conn))
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle ----------------------------------------------------------

    def _init_meta(self) -> str:
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        check = secret_check.secret_check(self._secret)
        if "project_id" not in meta:
            project_id = new_id("proj")
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("project_id", project_id), ("secret_check", check), ("created_at", str(now_ms()))],
            )
            self._conn.execute("COMMIT")
            return project_id
        secret_check.require_match(meta, self._secret, secret_check.SERVER_MISMATCH)
        return meta["project_id"]

    def _load_chain_head(self, conn: sqlite3.Connection) -> None:
        """The chain head and the id clock, from the last row (at start, after a rolled-back
        group, and when another process appended)."""
        row = conn.execute("SELECT seq, hash, id FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if "tree" in self.writer.state:  # the tree's right edge moves with the head (at open,
            self._reload_tree(conn)      # _init_tree loads it after this)
        if row is None:
            self.writer.state["head_seq"], self.writer.state["head_hash"] = 0, None
            return
        self.writer.state["head_seq"], self.writer.state["head_hash"] = row[0], row[1]
        # A clock set back across a restart (or another process's clock ahead of ours)
        # must not give new events ids below stored ones.
        last = row[2].partition("_")[2]
        self.writer.state["ulids"].continue_after(last)
        shared_ulids.continue_after(last)

    def _chain_head_moved(self, conn: sqlite3.Connection) -> bool:
        # One descent of the rowid b-tree per write group (~2-4 us measured on 400k events,
        # against ~1 ms for a group of 32 single events).
        row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        state = self.writer.state
        return (row or (0, None)) != (state["head_seq"], state["head_hash"])

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.readers = ReaderPool(self.path, size=self._reader_count,
                                  busy_timeout_ms=self._busy_timeout_ms, cache_mb=self._cache_mb)
        self.writer.start(loop)
        self.started = True
        purge_owed, wal_generation = self._owed_at_start
        if purge_owed or wal_generation is not None:
            log.info("erasure: finishing the purge a previous run left owed, in the background")
            task = loop.create_task(self.purge.resume(wal_generation), name="recalled-purge-resume")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def close(self) -> None:
        """Flush the writer, then close every connection. Idempotent.

        The write connection is closed only once the writer thread has ended."""
        if self.started:
            self.purge.truncator.close()
            self.writer.stop()
            if self.readers is not None:
                self.readers.close()
            self.started = False
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass
        self._conn.close()

    def add_intake_hook(self, hook: Callable[[sqlite3.Connection, list[EventRecord]], None]) -> None:
        self.writer.state["intake_hooks"].append(hook)

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        self.writer.commit_listeners.append(listener)

    async def write(self, fn: Callable[..., Any], *args: Any, on_commit: Callable[[Any], None] | None = None,
                    audit: AuditHook | None = None) -> Any:
        """Run `fn(conn, *args)` inside a group transaction; resolves after COMMIT.
        With `audit`, its events are appended in the same op, after `fn` (AuditedCall)."""
        return await self.writer.submit(call_op(fn, args, on_commit, audit, append_in_op))

    async def between_groups(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `fn(conn)` on the writer's connection with no transaction open, between two
        groups (the WAL checkpoint after an erasure)."""
        return await self.writer.submit(BetweenGroupsOp(fn))

    def write_sync(self, fn: Callable[..., Any], *args: Any, on_commit: Callable[[Any], None] | None = None,
                   audit: AuditHook | None = None) -> Any:
        """The same, for CLI commands that run without the event loop."""
        return self.writer.run_sync(call_op(fn, args, on_commit, audit, append_in_op))

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self.readers is not None, "store not started"
        return await self.readers.run(fn, *args)

    async def scan(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Like read, on the connection kept for long scans (exports), as PostgresStore.scan."""
        assert self.readers is not None, "store not started"
        return await self.readers.scan(fn, *args)

    # -- events -------------------------------------------------------------

    async def append_events(self, events: list[PreparedEvent]) -> list[AppendResult]:
        return await self.writer.submit(AppendEvents(events))

    async def get_event(self, event_id: str, organization: str | None) -> EventRecord | None:
        return await self.read(_get_event, event_id, organization)

    @property
    def head_seq(self) -> int:
        return self.writer.state["head_seq"]

    async def sync_head(self) -> None:
        """After a CLI command appended beside the server: an empty write group reloads the
        writer's head and tree (its state_is_stale check), so the next checkpoint covers them."""
        state = self.writer.state
        if await self.chain_head() != (state["head_seq"], state["head_hash"]):
            await self.write(_nothing)

    def webhook_storage(self, policy: Any, *, handoff_limit: int) -> Any:
        """The webhook tables (storage/webhook_base.WebhookStore) for the delivery loop."""
        from .webhooks import WebhookStorage

        return WebhookStorage(self, policy, handoff_limit=handoff_limit)

    def derive_key(self, purpose: str) -> bytes:
        """A key for `purpose` (e.g. embed tokens), derived from the server secret."""
        return secret_check.derive_key(self._secret, purpose)

    # -- metrics ------------------------------------------------------------

    engine_versions = {"sqlite": sqlite3.sqlite_version}

    def observe_write_groups(self, observer: Callable[[int, float], None]) -> None:
        self.writer.group_observer = observer

    async def storage_gauges(self) -> StorageGauges:
        deliveries, subscriptions = await self.read(gauges.webhook_counts)
        files = {}
        for name, path in (("database", self.path), ("wal", Path(str(self.path) + "-wal"))):
            try:
                files[name] = path.stat().st_size
            except FileNotFoundError:
                files[name] = 0
        return StorageGauges(
            events=self.head_seq, write_groups=self.writer.groups_committed,
            write_ops=self.writer.ops_committed, deliveries=deliveries,
            subscriptions=subscriptions, files=files,
        )


def _refuse_deferred_constraints(conn: sqlite3.Connection) -> None:
    # One op's deferred constraint would fail the COMMIT of its whole write group
    # (writer.py); SQLite defers nothing unless a schema asks for it.
    conn.execute("PRAGMA defer_foreign_keys=OFF")
    tables = deferred_foreign_keys(conn)
    if tables:
        raise ConfigError(
            f"the schema declares deferred constraints ({', '.join(tables)}); the single writer "
            "checks constraints per op: declare them NOT DEFERRABLE (the default) in a migration")


def _nothing(conn: sqlite3.Connection) -> None:
    return None


def _get_event(conn: sqlite3.Connection, event_id: str, organization: str | None) -> EventRecord | None:
    row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None:
        return None
    record = _make_record(row)
    if organization is not None and record.organization != organization:
        return None  # the tenant wall: indistinguishable from a missing event
    return record
