"""The single writer on SQLite: storage/group_writer.py's group commit, with SQLite's
transaction statements and error codes.

SQLite defers only foreign-key constraints, and only those declared DEFERRABLE INITIALLY
DEFERRED; `deferred_foreign_keys` lets the store refuse a schema with any, so no
constraint can fail at COMMIT for one op's sake.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from ...errors import StorageError, StorageUnavailable
from ..group_writer import AuditAppendFailed, BetweenGroupsOp, CallOp, WriteEngine, WriteOp
from ..group_writer import Writer as GroupWriter

__all__ = ["AuditAppendFailed", "BetweenGroupsOp", "CallOp", "SqliteEngine", "WriteOp", "Writer", "abandons_group",
           "classify_sqlite_error", "deferred_foreign_keys"]

# Primary result codes (the low byte of an extended code) that mean the database
# itself failed: the transaction cannot be trusted, so the whole group is abandoned.
_SQLITE_GROUP_FATAL = {
    2,   # SQLITE_INTERNAL
    3,   # SQLITE_PERM
    4,   # SQLITE_ABORT
    5,   # SQLITE_BUSY
    6,   # SQLITE_LOCKED
    7,   # SQLITE_NOMEM
    8,   # SQLITE_READONLY
    9,   # SQLITE_INTERRUPT
    10,  # SQLITE_IOERR
    11,  # SQLITE_CORRUPT
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
    22,  # SQLITE_NOLFS
    23,  # SQLITE_AUTH
    26,  # SQLITE_NOTADB
}

def classify_sqlite_error(exc: BaseException) -> StorageError:
    message = str(exc)
    lowered = message.lower()
    if "full" in lowered:
        return StorageUnavailable("the disk is full; free space and retry", retry_after=30)
    if "locked" in lowered or "busy" in lowered:
        return StorageUnavailable("the database is locked by another process", retry_after=1)
    return StorageError(f"database error: {message}")


def abandons_group(exc: BaseException, conn: sqlite3.Connection) -> bool:
    """True if `exc`, raised inside the group, means the group cannot commit."""
    if not isinstance(exc, sqlite3.Error):
        return False
    if not conn.in_transaction:
        return True  # SQLite rolled the transaction back itself (it does on some I/O errors)
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _SQLITE_GROUP_FATAL


_DEFERRED = re.compile(r"\bDEFERRABLE\s+INITIALLY\s+DEFERRED\b", re.IGNORECASE)


def deferred_foreign_keys(conn: sqlite3.Connection) -> list[str]:
    """Tables whose schema declares a deferred constraint (checked only at COMMIT)."""
    rows = conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND sql IS NOT NULL")
    return [name for name, sql in rows if _DEFERRED.search(sql)]



class SqliteEngine(WriteEngine):
    # IMMEDIATE takes the write lock at BEGIN: a busy database fails the group before any op runs.
    def begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def is_database_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def abandons_group(self, exc: BaseException, conn: sqlite3.Connection) -> bool:
        return abandons_group(exc, conn)

    def classify(self, exc: BaseException) -> StorageError:
        return classify_sqlite_error(exc)


SQLITE = SqliteEngine()


class Writer(GroupWriter):
    def __init__(self, conn: sqlite3.Connection, *, max_group_ops: int = 512) -> None:
        super().__init__(conn, SQLITE, max_group_ops=max_group_ops)
