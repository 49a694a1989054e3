"""SqliteStore: the Store protocol over one SQLite file.

Writes go through the single Writer (group commit); reads go to the ReaderPool.
API keys are few and read on every request, so they are cached in memory; the
cache is exact because this process is the only writer.
"""

from __future__ import annotations

import asyncio
import heapq
import hmac
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterator

from ...errors import ConfigError
from ...ids import UlidGenerator, new_id
from ...ids import ulids as shared_ulids
from ...integrity.chain import core_document, link
from ...integrity.retention import check_checkpoint
from ...integrity.verify import ChainVerifier
from ...timefmt import format_ms, now_ms
from ..base import (
    ApiKeyRecord, AppendResult, AuditHook, ChainVerificationRecord, ConsoleSession, EventRecord, ExportRecord,
    IdempotencyKeyReused, PreparedEvent, RecordNotFound, StorageGauges,
)
from .connection import open_writer
from ..keys import BLOCK_SHIFT
from .migrate import migrate
from . import console, erasure, gauges, reads, retention, webhook_jobs, webhooks
from .audited import AuditIf, AuditWhenFinished, call_op
from .purge import ErasurePurge
from .merkle import MerkleStore, append_leaves
from .readers import ReaderPool
from .retention_store import RetentionStore
from .writer import CallOp, Writer, WriteOp, deferred_foreign_keys

log = logging.getLogger("recalled_lite.store")

EVENT_COLUMNS = ", ".join(EventRecord._fields)
# An event row plus what verification needs (salt, digest, erasure mark).
CHAIN_COLUMNS = ", ".join(ExportRecord._fields)

_INSERT_EVENT = (
    "INSERT INTO events (seq, id, organization, action, actor_type, actor_id, actor_name, "
    "actor_email, targets, metadata, ip_address, user_agent, occurred_at, received_at, "
    "idempotency_key, request_digest, personal_salt, personal_digest, prev_hash, hash, signature) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_KEYS = "INSERT INTO events_keys (rowid, keys) VALUES (?,?)"
# One row per block of seqs the group touched, oldest block first, so `max_below` can
# take the block before's (migration 007). Only the newest blocks ever change.
_UPSERT_BLOCK = (
    "INSERT INTO event_blocks (block, min_occurred, max_occurred, max_below) "
    "VALUES (?1, ?2, ?3, max(?3, ifnull((SELECT max_below FROM event_blocks WHERE block < ?1 "
    "ORDER BY block DESC LIMIT 1), ?3))) "
    "ON CONFLICT (block) DO UPDATE SET min_occurred = min(min_occurred, excluded.min_occurred), "
    "max_occurred = max(max_occurred, excluded.max_occurred), "
    "max_below = max(max_below, excluded.max_below)"
)
_INSERT_FTS = "INSERT INTO events_fts (rowid, action, actor, organization, targets, metadata) VALUES (?,?,?,?,?,?)"
_FIND_IDEMPOTENT = (
    f"SELECT {EVENT_COLUMNS}, request_digest FROM events "
    "WHERE ifnull(organization, '') = ? AND idempotency_key = ?"
)

_make_record = EventRecord._make
_make_export = ExportRecord._make


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
        """Apply many requests at once. Business errors (an idempotency conflict)
        are returned in that request's slot before anything is written, so the
        other requests are unaffected; a database error propagates and fails the
        whole write group."""
        state = writer.state
        outcomes: list[Any] = []
        # Keyed events of earlier requests in this group are not numbered yet:
        # (organization, key) -> (request digest, their results list, index).
        pending: dict[tuple[str, str], tuple[bytes | None, list, int]] = {}
        repeats: list[tuple[list, int, list, int]] = []        # filled after numbering
        late_conflicts: list[tuple[int, list, int, int]] = []  # (op slot, origin, index)
        fresh: list[tuple[list, int, PreparedEvent]] = []
        for op in ops:
            results: list[AppendResult | None] = [None] * len(op.events)
            op_fresh: list[tuple[list, int, PreparedEvent]] = []
            op_repeats: list[tuple[list, int, list, int]] = []
            added: list[tuple[str, str]] = []
            failure: Exception | tuple[list, int, int] | None = None
            for index, event in enumerate(op.events):
                if event.idempotency_key is None:
                    op_fresh.append((results, index, event))
                    continue
                scope = (event.organization or "", event.idempotency_key)
                earlier = pending.get(scope)
                if earlier is not None:
                    if earlier[0] != event.request_digest:
                        failure = (earlier[1], earlier[2], index)
                        break
                    op_repeats.append((results, index, earlier[1], earlier[2]))
                    continue
                row = conn.execute(_FIND_IDEMPOTENT, scope).fetchone()
                if row is not None:
                    # A NULL digest: the event was erased, and with it the fingerprint
                    # that told payloads apart; a repeat is replayed, never stored again.
                    if row[-1] is not None and row[-1] != event.request_digest:
                        failure = IdempotencyKeyReused(row[1], index)
                        break
                    results[index] = AppendResult(_make_record(row[:-1]), True)
                    continue
                # (The same key twice in one request is resolved by the API layer.)
                pending[scope] = (event.request_digest, results, index)
                added.append(scope)
                op_fresh.append((results, index, event))
            if failure is not None:
                for scope in added:
                    del pending[scope]
                if isinstance(failure, Exception):
                    outcomes.append(failure)
                else:
                    late_conflicts.append((len(outcomes), *failure))
                    outcomes.append(None)
                continue
            fresh.extend(op_fresh)
            repeats.extend(op_repeats)
            outcomes.append(results)
        if not fresh:
            return outcomes

        project_id: str = state["project_id"]
        secret: bytes = state["secret"]
        ulids: UlidGenerator = state["ulids"]
        seq: int = state["head_seq"]
        prev_hash: str | None = state["head_hash"]
        event_rows, key_rows, fts_rows, records = [], [], [], []
        blocks: dict[int, list[int]] = {}
        for (results, index, ev), ulid in zip(fresh, ulids.batch(len(fresh))):
            seq += 1
            event_id = "evt_" + ulid
            core = core_document(
                event_id=event_id, seq=seq, project_id=project_id,
                organization=ev.organization, action=ev.action, actor_type=ev.actor_type,
                targets=ev.targets, occurred_at=format_ms(ev.occurred_at),
                received_at=format_ms(ev.received_at), idempotency_key=ev.idempotency_key,
                personal_digest=ev.personal_digest,
            )
            event_hash, signature = link(prev_hash, core, secret)
            event_rows.append((
                seq, event_id, ev.organization, ev.action, ev.actor_type, ev.actor_id,
                ev.actor_name, ev.actor_email, ev.targets_json, ev.metadata_json,
                ev.ip_address, ev.user_agent, ev.occurred_at, ev.received_at,
                ev.idempotency_key, ev.request_digest, ev.personal_salt, ev.personal_digest,
                prev_hash, event_hash, signature,
            ))
            key_rows.append((seq, ev.keys))
            bounds = blocks.get(seq >> BLOCK_SHIFT)
            if bounds is None:
                blocks[seq >> BLOCK_SHIFT] = [ev.occurred_at, ev.occurred_at]
            elif ev.occurred_at < bounds[0]:
                bounds[0] = ev.occurred_at
            elif ev.occurred_at > bounds[1]:
                bounds[1] = ev.occurred_at
            fts_rows.append((seq, *ev.fts))
            record = EventRecord(
                seq, event_id, ev.organization, ev.action, ev.actor_type, ev.actor_id,
                ev.actor_name, ev.actor_email, ev.targets_json, ev.metadata_json,
                ev.ip_address, ev.user_agent, ev.occurred_at, ev.received_at,
                ev.idempotency_key, prev_hash, event_hash, signature,
            )
            records.append(record)
            results[index] = AppendResult(record, False)
            prev_hash = event_hash
        for results, index, origin, origin_index in repeats:
            results[index] = AppendResult(origin[origin_index].event, True)
        for slot, origin, origin_index, index in late_conflicts:
            outcomes[slot] = IdempotencyKeyReused(origin[origin_index].event.id, index)
        conn.executemany(_INSERT_EVENT, event_rows)
        conn.executemany(_INSERT_KEYS, key_rows)
        conn.executemany(_UPSERT_BLOCK, [(b, lo, hi) for b, (lo, hi) in sorted(blocks.items())])
        conn.executemany(_INSERT_FTS, fts_rows)
        for hook in state["intake_hooks"]:
            hook(conn, records)
        tree = append_leaves(conn, state["tree"], records)  # the Merkle tiles, same transaction
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


def _key_from_row(row: tuple[Any, ...]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0], name=row[1], prefix=row[2], secret_hash=row[3],
        scopes=frozenset(json.loads(row[4])), organization=row[5],
        created_at=row[6], revoked_at=row[7], last_used_at=row[8],
    )


class SqliteStore(MerkleStore, RetentionStore):
    def __init__(self, path: Path, *, secret: bytes, synchronous: str = "FULL",
                 busy_timeout_ms: int = 5000, readers: int = 4, cache_mb: int = 32,
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
        self._keys = {record.prefix: record for record in _select_all_keys(self._conn)}
        self.readers: ReaderPool | None = None
        self.started = False
        self.purge = ErasurePurge(self.path, self.write)
        # Work a previous process left owed (it crashed mid-purge, or before the WAL was emptied).
        self._owed_at_start = (erasure.purge_pending(self._conn), erasure.wal_truncation_owed(self._conn))
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle ----------------------------------------------------------

    def _init_meta(self) -> str:
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        check = hmac.new(self._secret, b"recalled-lite secret check", "sha256").hexdigest()
        if "project_id" not in meta:
            project_id = new_id("proj")
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("project_id", project_id), ("secret_check", check), ("created_at", str(now_ms()))],
            )
            self._conn.execute("COMMIT")
            return project_id
        if not hmac.compare_digest(meta.get("secret_check", ""), check):
            raise ConfigError(
                "server.secret does not match the secret this database was created with; "
                "restore the original secret file (or RECALLED_SECRET) — signatures would not verify"
            )
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

    def write_sync(self, fn: Callable[..., Any], *args: Any, on_commit: Callable[[Any], None] | None = None,
                   audit: AuditHook | None = None) -> Any:
        """The same, for CLI commands that run without the event loop."""
        return self.writer.run_sync(call_op(fn, args, on_commit, audit, append_in_op))

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self.readers is not None, "store not started"
        return await self.readers.run(fn, *args)

    # -- events -------------------------------------------------------------

    async def append_events(self, events: list[PreparedEvent]) -> list[AppendResult]:
        return await self.writer.submit(AppendEvents(events))

    async def get_event(self, event_id: str, organization: str | None) -> EventRecord | None:
        return await self.read(_get_event, event_id, organization)

    @property
    def head_seq(self) -> int:
        return self.writer.state["head_seq"]

    # -- read side: list, search, export (§4.5-4.7) ----------------------------

    async def list_events(self, filters: Any, organization_wall: str | None) -> tuple[list[EventRecord], bool]:
        return await self.read(reads.list_page, filters, organization_wall)

    async def search_events(self, query: Any, organization_wall: str | None, limit: int,
                            cursor: Any) -> tuple[list[EventRecord], bool]:
        return await self.read(reads.search_page, query, organization_wall, limit, cursor)

    async def chain_head(self) -> tuple[int, str | None]:
        """The newest event readers can see: (seq, hash), or (0, None)."""
        return await self.read(reads.chain_head)

    async def events_per_organization(self, since_ms: int, excluded_prefix: str) -> dict[str, int]:
        return await self.read(reads.events_per_organization, since_ms, excluded_prefix)

    async def export_chunk(self, filters: Any, organization_wall: str | None, after_seq: int, upto_seq: int,
                           render: Callable[[list[Any]], Any]) -> tuple[Any, int | None]:
        assert self.readers is not None, "store not started"
        return await self.readers.scan(reads.export_chunk, filters, organization_wall, after_seq, upto_seq, render)

    # -- erasure (§4.7) -------------------------------------------------------

    async def erase_actor(self, actor_id: str, organization: str | None, erased_at: int,
                          audit: AuditHook | None = None) -> int:
        """Erase the actor's personal fields on every matching event; returns the count.
        The audit events are written with the last chunk (the one that finishes it).

        One chunk per write op, then the purge, one bounded step per write op, interleaved
        with intake, and the WAL truncation (storage/sqlite/erasure.py, purge.py).
        Concurrent erasures share a purge when their rows were committed before it began.
        """
        total = 0
        while True:
            chunk_audit = AuditWhenFinished(audit, total, erasure.ERASE_CHUNK) if audit is not None else None
            # Every chunk checks the legal holds in its own transaction: a hold placed mid-erasure
            # stops it before it touches a shielded event (409 LEGAL_HOLD).
            done = await self.write(retention.erase_chunk_unless_held, actor_id, organization, erased_at,
                                    audit=chunk_audit)
            total += done
            if done < erasure.ERASE_CHUNK:
                break
        await self.purge.after_erasure(erased=total > 0)
        return total

    def webhook_storage(self, policy: Any, *, handoff_limit: int) -> Any:
        """The webhook tables (storage/webhook_base.WebhookStore) for the delivery loop."""
        from .webhooks import WebhookStorage

        return WebhookStorage(self, policy, handoff_limit=handoff_limit)

    def derive_key(self, purpose: str) -> bytes:
        """A key for `purpose` (e.g. embed tokens), derived from the server secret."""
        return hmac.new(self._secret, b"recalled-lite key derivation\n" + purpose.encode(), "sha256").digest()

    # -- keys ---------------------------------------------------------------

    def key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        return self._keys.get(prefix)

    def list_keys(self) -> list[ApiKeyRecord]:
        return sorted(self._keys.values(), key=lambda k: k.id)

    async def load_key(self, prefix: str) -> ApiKeyRecord | None:
        record = await self.read(_select_key, prefix)
        self._remember_key(record)
        return record

    async def refresh_keys(self) -> None:
        """Pick up keys created or revoked by another process (the CLI)."""
        records = await self.read(_select_all_keys)
        self._keys = {record.prefix: record for record in records}

    def _remember_key(self, key: ApiKeyRecord | None) -> None:
        if key is not None:
            self._keys[key.prefix] = key

    async def create_key(self, record: ApiKeyRecord, audit: AuditHook | None = None) -> None:
        await self.write(_insert_key, record, on_commit=lambda _: self._remember_key(record), audit=audit)

    def create_key_sync(self, record: ApiKeyRecord, audit: AuditHook | None = None) -> None:
        self.write_sync(_insert_key, record, on_commit=lambda _: self._remember_key(record), audit=audit)

    async def revoke_key(self, key_id: str, organization: str | None,
                         audit: AuditHook | None = None) -> ApiKeyRecord | None:
        at = now_ms()
        return await self.write(_revoke_key, key_id, organization, at, on_commit=self._remember_key,
                                audit=_revoked_now(audit, at))

    def revoke_key_sync(self, key_id: str, organization: str | None,
                        audit: AuditHook | None = None) -> ApiKeyRecord | None:
        at = now_ms()
        return self.write_sync(_revoke_key, key_id, organization, at, on_commit=self._remember_key,
                               audit=_revoked_now(audit, at))

    # -- integrity ----------------------------------------------------------

    async def verify_chain(self, from_seq: int | None = None, to_seq: int | None = None) -> dict[str, Any]:
        return await self.read(scan_chain, self.project_id, self._secret, from_seq, to_seq, None)

    def verify_chain_sync(self, from_seq: int | None = None, to_seq: int | None = None,
                          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        return scan_chain(self._conn, self.project_id, self._secret, from_seq, to_seq, progress)

    async def check_writable(self) -> None:
        # BEGIN IMMEDIATE takes the write lock: if this commits, writes work.
        await self.write(lambda conn: conn.execute("SELECT 1").fetchone())

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

    # -- console: key use, sessions, links, verification records (storage/sqlite/console.py)

    async def get_event_chain_record(self, event_id: str, organization: str | None) -> ExportRecord | None:
        return await self.read(_get_chain_record, event_id, organization)

    def key_by_id(self, key_id: str) -> ApiKeyRecord | None:
        # Keys are few (tens): a scan of the cache is cheaper than keeping a second index exact.
        for record in self._keys.values():
            if record.id == key_id:
                return record
        return None

    async def record_key_usage(self, used: dict[str, int]) -> None:
        def remember(_: Any) -> None:
            for record in self._keys.values():
                at = used.get(record.id)
                if at is not None and (record.last_used_at or 0) < at:
                    record.last_used_at = at
        await self.write(console.record_key_usage, used, on_commit=remember)

    async def create_console_session(self, session: ConsoleSession) -> None:
        await self.write(console.insert_session, session)

    async def load_console_session(self, token_hash: str) -> ConsoleSession | None:
        return await self.read(console.select_session, token_hash)

    async def touch_console_sessions(self, seen: dict[str, int]) -> None:
        await self.write(console.touch_sessions, seen)

    async def delete_console_sessions(self, token_hashes: list[str]) -> None:
        await self.write(console.delete_sessions, token_hashes)

    async def purge_console_sessions(self, idle_before: int, now: int) -> int:
        return await self.write(console.purge, idle_before, now)

    def create_console_link_sync(self, token_hash: str, key_id: str, created_at: int, expires_at: int) -> None:
        self.write_sync(console.insert_link, token_hash, key_id, created_at, expires_at)

    async def redeem_console_link(self, token_hash: str, now: int, *, consume: bool) -> str | None:
        if consume:
            return await self.write(console.redeem_link, token_hash, now, True)
        return await self.read(console.redeem_link, token_hash, now, False)

    async def record_chain_verification(self, record: ChainVerificationRecord) -> None:
        await self.write(console.insert_verification, record)

    async def last_chain_verification(self) -> ChainVerificationRecord | None:
        return await self.read(console.last_verification)

    async def webhook_backlog(self) -> dict[str, int]:
        return await self.read(webhooks.backlog_counts)

    async def preview_webhook_job(self, kind: str, subscription: Any, begin: int, end: int | None) -> int:
        return await self.read(webhook_jobs.preview_job_count, kind, subscription, begin, end, now_ms())


def _revoked_now(audit: AuditHook | None, at: int) -> AuditHook | None:
    # Revoking a revoked key is a no-op: no audit event for it.
    return AuditIf(audit, lambda key: key.revoked_at == at) if audit is not None else None


def _refuse_deferred_constraints(conn: sqlite3.Connection) -> None:
    # One op's deferred constraint would fail the COMMIT of its whole write group
    # (writer.py); SQLite defers nothing unless a schema asks for it.
    conn.execute("PRAGMA defer_foreign_keys=OFF")
    tables = deferred_foreign_keys(conn)
    if tables:
        raise ConfigError(
            f"the schema declares deferred constraints ({', '.join(tables)}); the single writer "
            "checks constraints per op: declare them NOT DEFERRABLE (the default) in a migration")


def _get_event(conn: sqlite3.Connection, event_id: str, organization: str | None) -> EventRecord | None:
    row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None:
        return None
    record = _make_record(row)
    if organization is not None and record.organization != organization:
        return None  # the tenant wall: indistinguishable from a missing event
    return record


def _get_chain_record(conn: sqlite3.Connection, event_id: str, organization: str | None) -> ExportRecord | None:
    row = conn.execute(f"SELECT {CHAIN_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None or (organization is not None and row[2] != organization):
        return None  # the tenant wall, as in _get_event
    return _make_export(row)


_KEY_COLUMNS = "id, name, prefix, secret_hash, scopes, organization, created_at, revoked_at, last_used_at"


def _select_key(conn: sqlite3.Connection, prefix: str) -> ApiKeyRecord | None:
    row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE prefix = ?", (prefix,)).fetchone()
    return _key_from_row(row) if row else None


def _select_all_keys(conn: sqlite3.Connection) -> list[ApiKeyRecord]:
    return [_key_from_row(row) for row in conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys")]


def _insert_key(conn: sqlite3.Connection, record: ApiKeyRecord) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, organization, created_at, revoked_at) "
        "VALUES (?,?,?,?,?,?,?,?)",
        (record.id, record.name, record.prefix, record.secret_hash,
         json.dumps(sorted(record.scopes)), record.organization, record.created_at, record.revoked_at),
    )


def _revoke_key(conn: sqlite3.Connection, key_id: str, organization: str | None, at: int) -> ApiKeyRecord:
    row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    if row is None or (organization is not None and row[5] != organization):
        raise RecordNotFound(key_id)
    key = _key_from_row(row)
    if key.revoked_at is None:
        conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (at, key_id))
        key.revoked_at = at
    return key


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
