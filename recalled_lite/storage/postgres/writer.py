"""The single writer of one instance on PostgreSQL: storage/group_writer.py's group commit,
with PostgreSQL's transaction statements, its SQLSTATE classes, the chain-head lock and a
reconnect after a lost connection.

Every write group first runs `SELECT ... FROM chain_head WHERE id = 1 FOR UPDATE` (the
store's `state_is_stale`), outside any savepoint: a row lock taken inside a savepoint is
released when the savepoint rolls back, which would let another instance append while this
group still numbers events after the head it read. Held to COMMIT, it serializes the appends
of every instance, so seq order is commit order, and an idempotency check-then-insert cannot
race another instance. Every group, not only those that append: a group mixes ops in any
order (an append, a webhook result, a key revocation), and if some groups took the chain
head after other row locks, two instances could each hold what the other waits for. With the
chain head always the first lock of every write transaction, no such cycle can form; the
writes that do not append (key use, sessions, receipts) are few, so serializing them with
intake costs little.

A constraint failure inside an op is recoverable (ROLLBACK TO SAVEPOINT restores the
transaction); the connection or the server failing, a lock or deadlock timeout, a read-only
server (a standby after a failover) or running out of disk abandon the group.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from ...errors import StorageError, StorageUnavailable
from ..group_writer import Writer as GroupWriter
from ..group_writer import WriteEngine

log = logging.getLogger("recalled_lite.writer")

# SQLSTATE classes that mean the database, not one op, failed.
_FATAL_CLASSES = ("08", "53", "57", "58", "XX", "40", "55", "25", "F0")


def _sqlstate(exc: BaseException) -> str:
    return getattr(exc, "sqlstate", None) or ""


def classify_pg_error(exc: BaseException) -> StorageError:
    state = _sqlstate(exc)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if state == "53100":
        return StorageUnavailable("the database server's disk is full; free space and retry", retry_after=30)
    if state.startswith("53"):
        return StorageUnavailable(f"the database server is out of resources ({message})", retry_after=5)
    if state in ("55P03", "40P01", "40001") or state.startswith("40"):
        return StorageUnavailable("the database is busy (a lock could not be taken in time); retry",
                                  retry_after=1)
    if state == "25006":
        return StorageUnavailable("the database is read-only (a standby?); retry once the primary is back",
                                  retry_after=5)
    if state.startswith(("08", "57")) or isinstance(exc, psycopg.OperationalError) and not state:
        return StorageUnavailable("the database server is unreachable; retry", retry_after=2)
    return StorageError(f"database error: {message}")


class PostgresEngine(WriteEngine):
    # The writer's connection is in autocommit mode, so these statements are the whole story
    # (psycopg would otherwise open transactions of its own at the first statement).
    def begin(self, conn: psycopg.Connection) -> None:
        conn.execute("BEGIN")

    def commit(self, conn: psycopg.Connection) -> None:
        conn.execute("COMMIT")

    def rollback(self, conn: psycopg.Connection) -> None:
        if conn.closed:
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")

    def is_database_error(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error)

    def abandons_group(self, exc: BaseException, conn: psycopg.Connection) -> bool:
        if not isinstance(exc, psycopg.Error):
            return False
        if conn.closed or conn.broken:
            return True
        if conn.info.transaction_status not in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            return True  # the transaction is gone (the server ended it)
        state = _sqlstate(exc)
        if not state:
            return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
        return state.startswith(_FATAL_CLASSES)

    def classify(self, exc: BaseException) -> StorageError:
        return classify_pg_error(exc)


POSTGRES = PostgresEngine()


class Writer(GroupWriter):
    """The group writer with the chain-head lock per group and a reconnect between groups."""

    def __init__(self, conn: psycopg.Connection, reconnect: Callable[[], psycopg.Connection], *,
                 max_group_ops: int = 512) -> None:
        super().__init__(conn, POSTGRES, max_group_ops=max_group_ops)
        self.reconnect = reconnect
        self.state["chain_locked"] = False

    def _run_group(self, group: list[tuple[Any, Any]]) -> list[tuple[Any, Any, BaseException | None]]:
        if self.conn.closed or self.conn.broken:
            try:
                self._replace_connection()
            except psycopg.Error as exc:
                error = StorageUnavailable(f"the database server is unreachable ({exc}); retry", retry_after=2)
                return [(future, None, error) for _, future in group]
        self.state["chain_locked"] = False
        try:
            return super()._run_group(group)
        finally:
            self.state["chain_locked"] = False

    def _reload(self, conn: psycopg.Connection) -> None:
        # After a group lost its connection: reconnect now, so the state (chain head, tree
        # edge) is back at the committed head at once, not only at the next group.
        if conn.closed or conn.broken:
            try:
                self._replace_connection()
                conn = self.conn
            except psycopg.Error:
                pass  # the reload below fails and is owed to a later group
        super()._reload(conn)

    def _replace_connection(self) -> None:
        old = self.conn
        self.conn = self.reconnect()
        log.warning("the writer's database connection was lost; reconnected")
        try:
            old.close()
        except Exception:
            pass
        # What the state mirrors may have moved while we were away (another instance).
        self._owe_reload()
