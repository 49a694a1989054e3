"""PostgresStore: the Store protocol over one PostgreSQL database, for one instance of several.

Writes go through this instance's single writer thread (group commit, storage/group_writer.py)
on its own connection; reads run `fn(conn, *args)` on a pooled connection in a reader thread.
The audit and intake hooks of the contract run synchronously inside the write transaction,
which is why the driver is psycopg 3's sync API on threads (storage/postgres/connection.py).

This module keeps construction, start/close, the write/read primitives and the chain append
entry points; each other job is a mixin in its own module (webhook_store, reads_store,
erasure_store, console_store, retention_store, merkle, keys_store, integrity_store).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from ...errors import ConfigError
from ...ids import UlidGenerator, new_id
from ...timefmt import now_ms
from ..audited import call_op
from ..base import AppendResult, AuditHook, EventRecord, PreparedEvent, StorageGauges
from .chain import AppendEvents, append_in_op, head_moved, load_chain_state, read_head
from .connection import connect_once, open_reader_pool, open_writer, postgres_version
from .console_store import ConsoleStore
from .erasure_store import ErasureStore
from .integrity_store import IntegrityStore
from .keys_store import KeyStore, select_all_keys
from .merkle import MerkleStore, check_tree, latest_checkpoint
from .migrate import migrate
from .reads_store import ReadStore
from .retention_store import RetentionStore
from .webhook_store import WebhookMixin
from .writer import Writer, classify_pg_error

log = logging.getLogger("recalled_lite.store")
T = TypeVar("T")

EVENT_COLUMNS = ", ".join(EventRecord._fields)
SECRET_CHECK_MESSAGE = b"recalled-lite secret check"
# How often a serving instance catches up with the others' appends and checkpoints.
FOLLOW_SECONDS = 1.0


class _ReaderPool:
    """Pooled read connections, each read in its own REPEATABLE READ, read-only transaction
    on one of `size` threads (so no driver call blocks the event loop)."""

    def __init__(self, url: str, size: int) -> None:
        self.pool = open_reader_pool(url, size=size)
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="recalled-reader")

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            with self.pool.connection() as conn:
                return fn(conn, *args)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # The server went away (restart, failover) or no connection could be had in
            # time: a retry helps, so 503 with Retry-After, not a 500. The pool drops the
            # broken connection and opens a fresh one for the next read.
            raise classify_pg_error(exc) from exc

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.pool.close()


class PostgresStore(WebhookMixin, ReadStore, ErasureStore, ConsoleStore, RetentionStore, MerkleStore, KeyStore,
                    IntegrityStore):
    def __init__(self, url: str, *, secret: bytes, readers: int = 4) -> None:
        self.url = url
        self._secret = secret
        self._reader_count = readers
        try:
            self._conn = open_writer(url)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot connect to PostgreSQL ({redact_url(url)}): {_first_line(exc)}") from None
        try:
            self.schema_version = migrate(self._conn)
            self.writer = Writer(self._conn, lambda: open_writer(url))
            self.writer.state.update(secret=secret, ulids=UlidGenerator(), intake_hooks=[])
            self.writer.reload_state = self._reload_state
            self.writer.state_is_stale = lambda conn: head_moved(conn, self.writer.state)
            self.project_id = self._init_meta()
            self.writer.state["project_id"] = self.project_id
            load_chain_state(self._conn, self.writer.state)
            seq, _, tree_size = read_head(self._conn, lock=False)
            check_tree(self._conn, seq, tree_size)
            self.latest_checkpoint = latest_checkpoint(self._conn)
            self._keys = {record.prefix: record for record in select_all_keys(self._conn)}
            self.durability = self._durability()
            # "15.18", not "15.18 (Debian 15.18-0+deb12u1)": the number, as SQLite's "3.40.1".
            self.engine_versions = {"postgresql": postgres_version(self._conn).split()[0]}
        except BaseException:
            self._conn.close()
            raise
        self.readers: _ReaderPool | None = None
        self.started = False
        self._closed = False

    # -- lifecycle ----------------------------------------------------------

    def _init_meta(self) -> str:
        """The project id and the secret check, created by whichever instance starts first."""
        check = hmac.new(self._secret, SECRET_CHECK_MESSAGE, "sha256").hexdigest()
        conn = self._conn
        with conn.transaction():
            # ON CONFLICT DO NOTHING: an instance starting at the same moment waits on the key
            # and then keeps the other's values (and its secret check decides below).
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                                [("project_id", new_id("proj")), ("secret_check", check),
                                 ("created_at", str(now_ms()))])
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if not hmac.compare_digest(meta.get("secret_check", ""), check):
            raise ConfigError(
                "server.secret does not match the secret this database was created with; "
                "restore the original secret file (or RECALLED_SECRET) — signatures would not verify"
            )
        return meta["project_id"]

    def _reload_state(self, conn: psycopg.Connection) -> None:
        load_chain_state(conn, self.writer.state)
        # Another instance may have signed since: proofs and deliveries name the newest.
        newest = latest_checkpoint(conn)
        if newest is not None:
            self._remember_checkpoint(newest)

    def _durability(self) -> dict[str, str]:
        """What the write connection really runs with, read back from the server, for /metrics
        (`make bench` refuses figures from a server with durability off)."""
        conn = self._conn
        return {
            "synchronous_commit": conn.execute("SHOW synchronous_commit").fetchone()[0],
            "fsync": conn.execute("SHOW fsync").fetchone()[0],
            "fts": "on",
        }

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.readers = _ReaderPool(self.url, self._reader_count)
        self.writer.start(loop)
        self.started = True
        self._loop = loop
        self._follower = loop.create_task(self._follow(), name="recalled-follow-instances")

    def close(self) -> None:
        """Flush the writer, then close every connection. Idempotent."""
        if self.started:
            self.started = False  # the follower ends at its next wake-up
            follower = getattr(self, "_follower", None)
            if follower is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(follower.cancel)
            self.writer.stop()
            if self.readers is not None:
                self.readers.close()
        if not self._closed:
            self._closed = True
            try:
                self.writer.conn.close()
            except Exception:
                pass

    def add_intake_hook(self, hook: Callable[[psycopg.Connection, list[EventRecord]], None]) -> None:
        self.writer.state["intake_hooks"].append(hook)

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        self.writer.commit_listeners.append(listener)

    # -- the primitives every mixin uses -------------------------------------

    async def write(self, fn: Callable[..., Any], *args: Any, on_commit: Callable[[Any], None] | None = None,
                    audit: AuditHook | None = None) -> Any:
        """Run `fn(conn, *args)` inside a group transaction, which holds the chain-head lock
        (writer.py); resolves after COMMIT. With `audit`, its events are appended in the same
        op; `fn` may also call chain.append_in_op itself."""
        return await self.writer.submit(call_op(fn, args, on_commit, audit, append_in_op))

    def write_sync(self, fn: Callable[..., Any], *args: Any, on_commit: Callable[[Any], None] | None = None,
                   audit: AuditHook | None = None) -> Any:
        """The same, for CLI commands and start-up steps that run without the event loop."""
        return self.writer.run_sync(call_op(fn, args, on_commit, audit, append_in_op))

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self.readers is not None, "store not started"
        return await self.readers.run(fn, *args)

    async def scan(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Like read; `conn` may open a named (server-side) cursor, as exports do."""
        assert self.readers is not None, "store not started"
        return await self.readers.run(fn, *args)

    def _read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """A read without the event loop (start-up, CLI): its own short connection."""
        conn = connect_once(self.url)
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            result = fn(conn, *args)
            conn.commit()
            return result
        finally:
            conn.close()

    # -- events -------------------------------------------------------------

    async def append_events(self, events: list[PreparedEvent]) -> list[AppendResult]:
        return await self.writer.submit(AppendEvents(events))

    async def get_event(self, event_id: str, organization: str | None) -> EventRecord | None:
        return await self.read(_get_event, event_id, organization)

    @property
    def head_seq(self) -> int:
        return self.writer.state["head_seq"]

    async def sync_head(self) -> None:
        """Catch up with what other instances committed: their appends (an empty write group
        takes the chain-head lock and reloads head, tree edge and checkpoint) and their
        checkpoints. Also run every FOLLOW_SECONDS while serving, so /readyz, /metrics,
        GET /v1/checkpoint and the checkpoint service see the whole log, not only this
        instance's writes."""
        state = self.writer.state
        seq, head_hash, tree_size, newest = await self.read(_head_and_checkpoint)
        if (seq, head_hash, tree_size) != (state["head_seq"], state["head_hash"], state["tree"].size):
            await self.write(_nothing)
        elif newest is not None:
            self._remember_checkpoint(newest)

    async def _follow(self) -> None:
        while self.started:
            await asyncio.sleep(FOLLOW_SECONDS)
            try:
                await self.sync_head()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: writes and reads say so themselves
                log.debug("following the other instances failed: %s", exc)

    def derive_key(self, purpose: str) -> bytes:
        """A key for `purpose` (e.g. embed tokens), derived from the server secret."""
        return hmac.new(self._secret, b"recalled-lite key derivation\n" + purpose.encode(), "sha256").digest()

    # -- metrics ------------------------------------------------------------

    def observe_write_groups(self, observer: Callable[[int, float], None]) -> None:
        self.writer.group_observer = observer

    async def storage_gauges(self) -> StorageGauges:
        deliveries, subscriptions = await self.read(self._webhook_counts_fn())
        size = await self.read(_database_size)
        return StorageGauges(
            events=self.head_seq, write_groups=self.writer.groups_committed,
            write_ops=self.writer.ops_committed, deliveries=deliveries,
            subscriptions=subscriptions, files={"database": size, "wal": 0},
        )


def _nothing(conn: psycopg.Connection) -> None:
    return None


def _head_and_checkpoint(conn: psycopg.Connection) -> tuple[int, str | None, int, Any]:
    seq, head_hash, tree_size = read_head(conn, lock=False)
    return seq, head_hash, tree_size, latest_checkpoint(conn)


def _database_size(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def _get_event(conn: psycopg.Connection, event_id: str, organization: str | None) -> EventRecord | None:
    row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = %s", (event_id,)).fetchone()
    if row is None:
        return None
    record = EventRecord._make(row)
    if organization is not None and record.organization != organization:
        return None  # the tenant wall: indistinguishable from a missing event
    return record


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact_url(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    from ..backend import redact_database_url

    return redact_database_url(url)
