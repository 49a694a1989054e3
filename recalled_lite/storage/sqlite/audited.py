"""Administrative writes that carry their own audit events, in the same transaction.

The events themselves are built outside storage (recalled_lite/audit.py: the same for any
backend); here they are appended on the writer, inside the action's op.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, Callable

from ..base import AuditHook, EventRecord, PreparedEvent
from .writer import CallOp, Writer
from ..audit_hooks import AuditIf, AuditWhenFinished  # noqa: F401 (the backends share them)

log = logging.getLogger("recalled_lite.store")

# (conn, writer, events) -> the stored records: the store's chain append (AppendEvents).
Append = Callable[[sqlite3.Connection, Writer, list[PreparedEvent]], list[EventRecord]]


class AuditAppendFailed(sqlite3.DatabaseError):
    """The audit step of an administrative write failed.

    A database error on purpose: the writer then fails the whole group and reloads its
    state (chain head, webhook hand-off, subscription cache), which the action may already
    have changed. A plain exception would only roll back the op's savepoint and leave that
    state ahead of the database.
    """


class AuditedCall(CallOp):
    """An administrative write plus its audit events, in one op (so one transaction).

    `fn` runs first; a business error there (RecordNotFound...) rolls the op back before
    anything is appended. Then the audit events go through the normal chain append as the
    op's last step: the chain head only moves once they are inserted, and a failure after
    `fn` fails the whole group, which reloads the head from disk.
    """

    __slots__ = ("audit", "append", "records")

    def __init__(self, fn: Callable[..., Any], *args: Any, audit: AuditHook, append: Append,
                 on_commit: Callable[[Any], None] | None = None):
        super().__init__(fn, *args, on_commit=on_commit)
        self.audit = audit
        self.append = append
        self.records: list[EventRecord] = []

    def apply(self, conn: sqlite3.Connection, writer: Writer) -> Any:
        self.audit.begin()
        result = self.fn(conn, *self.args)
        try:
            events = self.audit.prepare(result)
            if events:
                self.records = self.append(conn, writer, events)
        except sqlite3.Error:
            raise
        except Exception as exc:
            log.exception("the audit events of %s could not be written", getattr(self.fn, "__name__", "a write"))
            raise AuditAppendFailed(f"audit append failed: {type(exc).__name__}: {exc}") from exc
        return result

    def after_commit(self, writer: Writer, result: Any) -> None:
        super().after_commit(writer, result)
        if self.records:
            self.audit.committed(self.records)


def call_op(fn: Callable[..., Any], args: tuple, on_commit: Callable[[Any], None] | None,
            audit: AuditHook | None, append: Append) -> CallOp:
    if audit is None:
        return CallOp(fn, *args, on_commit=on_commit)
    return AuditedCall(fn, *args, audit=audit, append=append, on_commit=on_commit)
