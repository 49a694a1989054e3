"""The single writer: one thread owns the write connection and commits in groups.

Requests hand the writer a WriteOp and await a future. The writer takes every
op that is queued, runs them in ONE transaction (each inside a SAVEPOINT, so a
business error in one op — an idempotency conflict, a missing row — rolls back
only that op), commits, and only then settles the futures. While one group is
being fsynced, the next one queues up, so the cost of an fsync is shared by
everything that arrived during the previous one (group commit).

A database error (disk full, I/O error, lock timeout) fails the whole group:
nothing in it was committed, and every caller hears so.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from typing import Any, Callable

from ...errors import StorageError, StorageUnavailable

log = logging.getLogger("recalled_lite.writer")

_STOP = object()


class WriteOp:
    """One unit of work run on the writer thread, inside the group transaction."""

    __slots__ = ()

    def apply(self, conn: sqlite3.Connection, writer: "Writer") -> Any:
        raise NotImplementedError

    def after_commit(self, writer: "Writer", result: Any) -> None:
        """Runs on the writer thread once the op's changes are durable."""


class CallOp(WriteOp):
    """Wraps a plain function `fn(conn, *args)` for the less frequent writes."""

    __slots__ = ("fn", "args", "on_commit")

    def __init__(self, fn: Callable[..., Any], *args: Any, on_commit: Callable[[Any], None] | None = None):
        self.fn = fn
        self.args = args
        self.on_commit = on_commit

    def apply(self, conn: sqlite3.Connection, writer: "Writer") -> Any:
        return self.fn(conn, *self.args)

    def after_commit(self, writer: "Writer", result: Any) -> None:
        if self.on_commit is not None:
            self.on_commit(result)


def classify_sqlite_error(exc: sqlite3.Error) -> StorageError:
    message = str(exc)
    lowered = message.lower()
    if "full" in lowered:
        return StorageUnavailable("the disk is full; free space and retry", retry_after=30)
    if "locked" in lowered or "busy" in lowered:
        return StorageUnavailable("the database is locked by another process", retry_after=1)
    return StorageError(f"database error: {message}")


class Writer:
    def __init__(self, conn: sqlite3.Connection, *, max_group_ops: int = 512) -> None:
        self.conn = conn
        self.max_group_ops = max_group_ops
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        # Called on the writer thread after every successful COMMIT.
        self.commit_listeners: list[Callable[[], None]] = []
        # State owned by the writer thread (the chain head lives here).
        self.state: dict[str, Any] = {}
        self.reload_state: Callable[[sqlite3.Connection], None] = lambda conn: None
        self.groups_committed = 0
        self.ops_committed = 0
        # (ops in the group, COMMIT seconds) after each commit: /metrics histograms.
        self.group_observer: Callable[[int, float], None] | None = None
        # Changes when ANOTHER connection commits (`recalled-lite keys create` appends its
        # audit event to the chain from its own process): then the state is reloaded.
        self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]

    # -- lifecycle ----------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="recalled-writer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    def stop(self, timeout: float = 30.0) -> None:
        """Finish every queued op, commit, and stop the thread."""
        if self._thread is None:
            return
        self._closing = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- submission ---------------------------------------------------------

    def submit(self, op: WriteOp) -> "asyncio.Future[Any]":
        loop = self._loop
        assert loop is not None, "writer not started"
        future = loop.create_future()
        if self._closing:
            future.set_exception(StorageUnavailable("the server is shutting down", retry_after=5))
            return future
        self._queue.put((op, future))
        return future

    def run_sync(self, op: WriteOp) -> Any:
        """For CLI use before/without the event loop: one op, one transaction."""
        assert self._thread is None, "run_sync is only for a writer that was not started"
        results = self._run_group([(op, None)])
        _, result, error = results[0]
        if error is not None:
            raise error
        return result

    # -- the thread ---------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            group = [first]
            while len(group) < self.max_group_ops:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                group.append(item)
            results = self._run_group(group)
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(_settle, results)
            except RuntimeError:  # loop already closed: nobody is waiting any more
                pass
        # Anything that raced in after the stop marker is refused, not dropped silently.
        leftovers = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append((item[1], None, StorageUnavailable("the server is shutting down", 5)))
        if leftovers and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(_settle, leftovers)
            except RuntimeError:
                pass

    def _run_group(self, group: list[tuple[WriteOp, Any]]) -> list[tuple[Any, Any, BaseException | None]]:
        conn = self.conn
        results: list[tuple[Any, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            error = classify_sqlite_error(exc)
            return [(future, None, error) for _, future in group]
        try:
            # Under the write lock nobody else can commit until we do: one check per group.
            data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            if data_version != self._data_version:
                self._data_version = data_version
                self.reload_state(conn)
            position = 0
            while position < len(group):
                op, future = group[position]
                apply_group = getattr(op, "apply_group", None)
                if apply_group is not None:
                    # Consecutive ops of a kind that knows how to batch itself
                    # (event intake) run as one: one statement per table.
                    end = position
                    while end < len(group) and type(group[end][0]) is type(op):
                        end += 1
                    run = group[position:end]
                    outcomes = apply_group(conn, self, [o for o, _ in run])
                    for (_, run_future), outcome in zip(run, outcomes):
                        if isinstance(outcome, Exception):
                            results.append((run_future, None, outcome))
                        else:
                            results.append((run_future, outcome, None))
                    position = end
                    continue
                position += 1
                conn.execute("SAVEPOINT op")
                try:
                    result = op.apply(conn, self)
                except sqlite3.Error:
                    raise  # the database itself failed: abandon the group
                except Exception as exc:  # a business error: undo this op only
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((future, None, exc))
                    continue
                conn.execute("RELEASE op")
                results.append((future, result, None))
            started = time.perf_counter()
            conn.execute("COMMIT")
            commit_seconds = time.perf_counter() - started
        except Exception as exc:
            if isinstance(exc, sqlite3.Error):
                error: StorageError = classify_sqlite_error(exc)
                log.error("write group of %d ops failed: %s", len(group), exc)
            else:  # a bug in a batched op: fail the group, keep the writer alive
                error = StorageError(f"internal error in a write group: {type(exc).__name__}")
                log.exception("write group of %d ops failed", len(group))
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            try:
                self.reload_state(conn)
            except sqlite3.Error:
                log.exception("could not reload writer state after a failed group")
            return [(future, None, error) for _, future in group]
        self.groups_committed += 1
        self.ops_committed += len(group)
        self.state["last_commit_seconds"] = commit_seconds
        if self.group_observer is not None:
            try:
                self.group_observer(len(group), commit_seconds)
            except Exception:
                log.exception("write group observer failed")
        for (op, _), (_, result, error) in zip(group, results):
            if error is None:
                try:
                    op.after_commit(self, result)
                except Exception:
                    log.exception("after_commit hook failed")
        for listener in self.commit_listeners:
            try:
                listener()
            except Exception:
                log.exception("commit listener failed")
        return results


def _settle(results: list[tuple[Any, Any, BaseException | None]]) -> None:
    for future, result, error in results:
        if future is None or future.done():
            continue  # the caller gave up (client went away); the write still happened
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
