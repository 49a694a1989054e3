"""Administrative writes that carry their own audit events, in the same transaction.

The events themselves are built outside storage (recalled_lite/audit.py: the same for any
backend); here they are appended on the writer, inside the action's op, by the backend's own
chain append (each store passes its `append_in_op`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from .base import AuditHook, EventRecord, PreparedEvent
from .group_writer import AuditAppendFailed, CallOp, Writer

log = logging.getLogger("recalled_lite.store")

# (conn, writer, events) -> the stored records: the store's chain append (AppendEvents).
Append = Callable[[Any, Writer, list[PreparedEvent]], list[EventRecord]]


class AuditedCall(CallOp):
    """An administrative write plus its audit events, in one op (so one transaction).

    `fn` runs first; a business error there (RecordNotFound...) rolls the op back before
    anything is appended. Then the audit events go through the normal chain append as the
    op's last step: the chain head only moves once they are inserted, and a failure after
    `fn` rolls the op's savepoint back and answers it as a database error (AuditAppendFailed).
    """

    __slots__ = ("audit", "append", "records")

    def __init__(self, fn: Callable[..., Any], *args: Any, audit: AuditHook, append: Append,
                 on_commit: Callable[[Any], None] | None = None):
        super().__init__(fn, *args, on_commit=on_commit)
        self.audit = audit
        self.append = append
        self.records: list[EventRecord] = []

    def apply(self, conn: Any, writer: Writer) -> Any:
        self.audit.begin()
        result = self.fn(conn, *self.args)
        try:
            events = self.audit.prepare(result)
            if events:
                self.records = self.append(conn, writer, events)
        except Exception as exc:
            if writer.engine.is_database_error(exc):
                raise
            log.exception("the audit events of %s could not be written", getattr(self.fn, "__name__", "a write"))
            raise AuditAppendFailed(f"audit append failed: {type(exc).__name__}: {exc}") from exc
        return result

    def after_commit(self, writer: Writer, result: Any) -> None:
        super().after_commit(writer, result)
        if self.records:
            self.audit.committed(self.records)


class AuditWhenFinished:
    """Erasure runs in chunks: its audit event goes with the chunk that finishes it (fewer
    rows than a full chunk), and counts the rows of every chunk."""

    def __init__(self, audit: AuditHook, done_before: int, chunk: int) -> None:
        self.audit = audit
        self.done_before = done_before
        self.chunk = chunk

    def begin(self) -> None:
        self.audit.begin()

    def prepare(self, done: int) -> list[PreparedEvent]:
        if done >= self.chunk:
            return []  # more may follow
        return self.audit.prepare(self.done_before + done)

    def committed(self, records: list[EventRecord]) -> None:
        self.audit.committed(records)


class AuditIf:
    """Audit only when the write changed something (revoking a revoked key changes nothing)."""

    def __init__(self, audit: AuditHook, changed: Callable[[Any], bool]) -> None:
        self.audit = audit
        self.changed = changed

    def begin(self) -> None:
        self.audit.begin()

    def prepare(self, result: Any) -> list[PreparedEvent]:
        return self.audit.prepare(result) if self.changed(result) else []

    def committed(self, records: list[EventRecord]) -> None:
        self.audit.committed(records)


def call_op(fn: Callable[..., Any], args: tuple, on_commit: Callable[[Any], None] | None,
            audit: AuditHook | None, append: Append) -> CallOp:
    if audit is None:
        return CallOp(fn, *args, on_commit=on_commit)
    return AuditedCall(fn, *args, audit=audit, append=append, on_commit=on_commit)
