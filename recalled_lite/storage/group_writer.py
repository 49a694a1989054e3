"""The group-commit writer: one thread owns the write connection and commits in groups.

Engine-neutral: SQLite (storage/sqlite/writer.py) and PostgreSQL (storage/postgres/writer.py)
each give it a WriteEngine (how to begin, commit, take a savepoint, and which errors mean
the database itself failed); everything else here is the same for both.

Requests hand the writer a WriteOp and await a future. The writer takes every
op that is queued, runs them in ONE transaction (each inside a SAVEPOINT),
commits, and only then settles the futures. While one group is being made
durable, the next one queues up, so the cost of a commit is shared by everything
that arrived during the previous one (group commit).

What fails what:

* An op that raises (a business error such as an idempotency conflict, a
  constraint failure, a bug in the op or in an intake hook) fails only itself:
  its savepoint is rolled back and the rest of the group commits. Consecutive
  intake ops run as one batch under one savepoint; if the batch raises, it is
  rolled back and re-run op by op, each under its own savepoint, so the bad op
  is isolated.
* An error of the database itself (the engine's `abandons_group`: disk full,
  I/O, a lost connection, a deadlock...) or a failing COMMIT abandons the group:
  nothing in it was committed, and every caller hears so.
* Nothing an op, a hook, an after_commit callback or a state reload raises can
  end the thread. If it ends anyway (a bug), every pending and later write is
  refused at once with 503 and `dead` says why (GET /readyz reports it).
* A BetweenGroupsOp runs alone, outside any transaction, between two groups: for
  work that must not sit inside BEGIN/COMMIT (SQLite's WAL checkpoint) and that
  nothing else on the writer's connection may race (storage/sqlite/checkpoint.py).
* `stop()` closes the gate first: a write submitted after it is refused with
  503 at once, one submitted before it is committed (the stop marker is the
  last item ever queued).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, Callable

from ..errors import StorageError, StorageUnavailable

log = logging.getLogger("recalled_lite.writer")

_STOP = object()

# A failed state reload is retried at the start of a later group, at most this often.
_RELOAD_RETRY_SECONDS = 1.0


class AuditAppendFailed(Exception):
    """The audit step of an administrative write failed (storage/audited.py).

    Counted as a database error of whatever engine runs: the caller hears a StorageError
    (5xx), never the internal exception, and the op's savepoint is rolled back with every
    in-memory change its savepoint listeners made.
    """


class WriteEngine:
    """What the writer needs to know about one database engine."""

    def begin(self, conn: Any) -> None:
        raise NotImplementedError

    def commit(self, conn: Any) -> None:
        raise NotImplementedError

    def rollback(self, conn: Any) -> None:
        """Roll back the open transaction, if any (must not fail when there is none)."""
        raise NotImplementedError

    def savepoint(self, conn: Any, name: str) -> None:
        conn.execute(f"SAVEPOINT {name}")

    def rollback_to(self, conn: Any, name: str) -> None:
        """Undo the savepoint's work and leave it (the group goes on)."""
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")

    def release(self, conn: Any, name: str) -> None:
        conn.execute(f"RELEASE {name}")

    def is_database_error(self, exc: BaseException) -> bool:
        """An exception of the driver (as opposed to a business error or a bug)."""
        raise NotImplementedError

    def abandons_group(self, exc: BaseException, conn: Any) -> bool:
        """True if `exc`, raised inside the group, means the group cannot commit."""
        raise NotImplementedError

    def classify(self, exc: BaseException) -> StorageError:
        """What a caller hears for a database error (StorageUnavailable when retrying helps)."""
        raise NotImplementedError


class WriteOp:
    """One unit of work run on the writer thread, inside the group transaction."""

    __slots__ = ()

    def apply(self, conn: Any, writer: "Writer") -> Any:
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

    def apply(self, conn: Any, writer: "Writer") -> Any:
        return self.fn(conn, *self.args)

    def after_commit(self, writer: "Writer", result: Any) -> None:
        if self.on_commit is not None:
            self.on_commit(result)


class BetweenGroupsOp(WriteOp):
    """`fn(conn)` on the writer thread with no transaction open, alone between two groups."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn

    def apply(self, conn: Any, writer: "Writer") -> Any:
        return self.fn(conn)


class Writer:
    def __init__(self, conn: Any, engine: "WriteEngine", *, max_group_ops: int = 512) -> None:
        self.conn = conn
        self.engine = engine
        self.max_group_ops = max_group_ops
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Held around "may I queue?" + put, and around closing that door, so no
        # write can slip into the queue after the stop marker (or after a death).
        self._gate = threading.Lock()
        self._refusal: Callable[[], StorageUnavailable] | None = None
        # Why the thread ended other than by stop() (a bug); None while it runs.
        self.dead: str | None = None
        # The group being run, and its results once committed (for a death mid-group).
        self._inflight: list[tuple[WriteOp, Any]] | None = None
        self._inflight_results: list[tuple[Any, Any, BaseException | None]] | None = None
        # Called on the writer thread after every successful COMMIT.
        self.commit_listeners: list[Callable[[], None]] = []
        # (mark, rewind): mark() is taken before each savepoint; rewind(mark) undoes
        # in-memory changes made by what the savepoint rolled back (the webhook hand-off).
        self.savepoint_listeners: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []
        # State owned by the writer thread (the chain head lives here).
        self.state: dict[str, Any] = {}
        self.reload_state: Callable[[Any], None] = lambda conn: None
        # Inside the group's transaction, before its ops: has another process changed
        # what `state` mirrors (the CLI appending beside a running server, another instance)?
        self.state_is_stale: Callable[[Any], bool] = lambda conn: False
        self._reload_owed_since: float | None = None
        self._reload_failing = False  # log the first failure of a streak with its traceback
        self.groups_committed = 0
        self.ops_committed = 0
        # (ops in the group, COMMIT seconds) after each commit: /metrics histograms.
        self.group_observer: Callable[[int, float], None] | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="recalled-writer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._refusal is None

    def stop(self, timeout: float = 30.0) -> bool:
        """Refuse new writes, finish every queued op, commit, and wait for the thread.

        Waits as long as the thread runs (the caller must not close the connection
        under it), logging every `timeout` seconds. Returns False if the thread had
        died before (its queue was refused, not committed)."""
        with self._gate:
            if self._refusal is None:
                self._refusal = _shutting_down
                self._queue.put(_STOP)
        thread = self._thread
        if thread is None:
            return True
        while True:
            thread.join(timeout)
            if not thread.is_alive():
                return self.dead is None
            log.error("the writer is still finishing a write group after %.0f s; waiting for it "
                      "before closing the database", timeout)

    # -- submission ---------------------------------------------------------

    def submit(self, op: WriteOp) -> "asyncio.Future[Any]":
        loop = self._loop
        assert loop is not None, "writer not started"
        future = loop.create_future()
        with self._gate:
            refusal = self._refusal
            if refusal is None:
                self._queue.put((op, future))
                return future
        future.set_exception(refusal())
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
        try:
            self._serve()
        except BaseException as exc:  # a bug: the loop below itself raised
            self.dead = f"{type(exc).__name__}: {exc}"
            log.critical("the writer thread died; every write is refused with 503 until a restart",
                         exc_info=exc)
            self._rollback_quietly()  # do not keep the write lock from other processes
            self._refuse_all(_dead_refusal(self.dead))
            return
        self._refuse_all(_shutting_down)

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            if isinstance(first[0], BetweenGroupsOp):
                self._run_alone(first)
                continue
            group = [first]
            stopping = False
            alone = None  # a BetweenGroupsOp ends the group and runs right after it
            while len(group) < self.max_group_ops:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                if isinstance(item[0], BetweenGroupsOp):
                    alone = item
                    break
                group.append(item)
            self._inflight, self._inflight_results = group, None
            try:
                results = self._run_group(group)
            except Exception as exc:  # _run_group handles its own errors; this is a last resort
                log.exception("write group of %d ops failed unexpectedly", len(group))
                self._rollback_quietly()
                error = StorageError(f"internal error in a write group: {type(exc).__name__}")
                results = [(future, None, error) for _, future in group]
            self._inflight_results = results
            self._deliver(results)
            self._inflight = self._inflight_results = None
            if alone is not None:
                self._run_alone(alone)
            if stopping:
                return

    def _run_alone(self, item: tuple[BetweenGroupsOp, Any]) -> None:
        op, future = item
        try:
            results = [(future, op.apply(self.conn, self), None)]
        except Exception as exc:
            results = [(future, None, self._op_error(exc, op))]
        self._deliver(results)

    def _deliver(self, results: list[tuple[Any, Any, BaseException | None]]) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(_settle, results)
        except RuntimeError:  # loop already closed: nobody is waiting any more
            pass

    def _refuse_all(self, refusal: Callable[[], StorageUnavailable]) -> None:
        """Close the gate and answer everything still waiting (the thread is ending)."""
        with self._gate:
            if self._refusal is None or self.dead is not None:
                self._refusal = refusal
        pending: list[tuple[Any, Any, BaseException | None]] = []
        group, committed = self._inflight, self._inflight_results
        if group is not None:
            if committed is not None:
                pending.extend(committed)  # durable: the callers get their real results
            else:
                pending.extend((future, None, refusal()) for _, future in group)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                pending.append((item[1], None, refusal()))
        if pending:
            self._deliver(pending)

    # -- one group ------------------------------------------------------------

    def _run_group(self, group: list[tuple[WriteOp, Any]]) -> list[tuple[Any, Any, BaseException | None]]:
        conn, engine = self.conn, self.engine
        try:
            engine.begin(conn)
        except Exception as exc:
            if not engine.is_database_error(exc):
                raise
            error = engine.classify(exc)
            return [(future, None, error) for _, future in group]
        try:
            self._refresh_state(conn)
            results = self._apply(conn, group)
            started = time.perf_counter()
            engine.commit(conn)
            commit_seconds = time.perf_counter() - started
        except Exception as exc:
            return self._abandon(group, exc)
        self._inflight_results = results  # durable now, whatever happens below
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
                    log.exception("after_commit hook of %s failed", type(op).__name__)
        for listener in self.commit_listeners:
            try:
                listener()
            except Exception:
                log.exception("commit listener failed")
        return results

    def _apply(self, conn: Any, group: list[tuple[WriteOp, Any]]) -> list[tuple[Any, Any, Any]]:
        results: list[tuple[Any, Any, BaseException | None]] = []
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
                outcomes = self._apply_batch(conn, apply_group, [o for o, _ in run])
                for (_, run_future), outcome in zip(run, outcomes):
                    if isinstance(outcome, Exception):
                        results.append((run_future, None, outcome))
                    else:
                        results.append((run_future, outcome, None))
                position = end
                continue
            position += 1
            ok, value = self._in_savepoint(conn, "op", op, op.apply)
            results.append((future, value, None) if ok else (future, None, value))
        return results

    def _apply_batch(self, conn: Any, apply_group: Callable[..., list[Any]],
                     ops: list[WriteOp]) -> list[Any]:
        """apply_group(ops) under one savepoint; if it raises, op by op to isolate the culprit."""
        ok, value = self._in_savepoint(conn, "batch", ops[0], lambda c, w: apply_group(c, w, ops))
        if ok:
            return value
        if len(ops) == 1:
            return [value]
        log.warning("a batch of %d intake ops failed (%s); re-running them one by one",
                    len(ops), value)
        outcomes = []
        for op in ops:
            ok, value = self._in_savepoint(conn, "op", op, lambda c, w, op=op: apply_group(c, w, [op])[0])
            outcomes.append(value)
        return outcomes

    def _in_savepoint(self, conn: Any, name: str, op: Any,
                      fn: Callable[[Any, "Writer"], Any]) -> tuple[bool, Any]:
        """(True, result) or (False, the error for the caller). Raises what abandons the group."""
        engine = self.engine
        marks = self._marks()
        engine.savepoint(conn, name)
        try:
            result = fn(conn, self)
        except Exception as exc:
            if engine.abandons_group(exc, conn):
                raise
            engine.rollback_to(conn, name)
            self._rewind(marks)
            return False, self._op_error(exc, op)
        engine.release(conn, name)
        return True, result

    def _op_error(self, exc: Exception, op: Any) -> Exception:
        """What the caller of a failed op hears. Business errors pass through as they are."""
        if self.engine.is_database_error(exc) or isinstance(exc, AuditAppendFailed):
            log.warning("write op %s failed and was rolled back alone: %s", type(op).__name__, exc)
            return self.engine.classify(exc)
        return exc

    def _marks(self) -> list[Any] | None:
        if not self.savepoint_listeners:
            return None
        try:
            return [mark() for mark, _ in self.savepoint_listeners]
        except Exception:
            log.exception("a savepoint listener failed to take its mark; state will be reloaded")
            return None

    def _rewind(self, marks: list[Any] | None) -> None:
        if not self.savepoint_listeners:
            return
        if marks is None:
            self._owe_reload()
            return
        for (_, rewind), mark in zip(self.savepoint_listeners, marks):
            try:
                rewind(mark)
            except Exception:
                log.exception("a savepoint listener failed to rewind; state will be reloaded")
                self._owe_reload()

    def _owe_reload(self) -> None:
        # Due at the start of the next group (0 is "long ago").
        if self._reload_owed_since is None:
            self._reload_owed_since = 0.0

    def _refresh_state(self, conn: Any) -> None:
        """Reload `state` if another process changed what it mirrors, or a reload is owed."""
        if self.state_is_stale(conn):
            log.info("the database was changed by another process; reloading the writer's state")
            self._reload(conn)
            if self.state_is_stale(conn):
                # Writing on a stale chain head would fork the chain: refuse this group.
                raise StorageUnavailable("the writer could not reload the chain head", retry_after=1)
        elif self._reload_owed_since is not None:
            if time.monotonic() - self._reload_owed_since >= _RELOAD_RETRY_SECONDS:
                self._reload(conn)

    def _reload(self, conn: Any) -> None:
        """reload_state, which must never take the thread down with it."""
        try:
            self.reload_state(conn)
        except Exception:
            self._reload_owed_since = time.monotonic()
            if not self._reload_failing:
                self._reload_failing = True
                log.exception("could not reload the writer's state; retrying before later groups")
            return
        if self._reload_failing:
            log.info("the writer's state was reloaded after earlier failures")
        self._reload_failing = False
        self._reload_owed_since = None

    def _abandon(self, group: list[tuple[WriteOp, Any]], exc: Exception) -> list[tuple[Any, Any, Any]]:
        if isinstance(exc, StorageError):
            error: StorageError = exc
            log.error("write group of %d ops refused: %s", len(group), exc)
        elif self.engine.is_database_error(exc):
            error = self.engine.classify(exc)
            log.error("write group of %d ops failed: %s", len(group), exc)
        else:  # a bug outside any op (a savepoint that would not roll back...)
            error = StorageError(f"internal error in a write group: {type(exc).__name__}")
            log.exception("write group of %d ops failed", len(group))
        self._rollback_quietly()
        self._reload(self.conn)
        return [(future, None, error) for _, future in group]

    def _rollback_quietly(self) -> None:
        try:
            self.engine.rollback(self.conn)
        except Exception:
            log.exception("ROLLBACK failed")


def _shutting_down() -> StorageUnavailable:
    return StorageUnavailable("the server is shutting down", retry_after=5)


def _dead_refusal(reason: str) -> Callable[[], StorageUnavailable]:
    def refusal() -> StorageUnavailable:
        return StorageUnavailable(f"the writer thread has stopped ({reason}); restart the server",
                                  retry_after=5)
    return refusal


def _settle(results: list[tuple[Any, Any, BaseException | None]]) -> None:
    for future, result, error in results:
        if future is None or future.done():
            continue  # the caller gave up (client went away); the write still happened
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
