"""Audit hooks that wrap another (storage/base.py AuditHook): when an administrative write
audits at all. Pure, so both backends apply the same rule."""

from __future__ import annotations

from typing import Any, Callable

from .base import AuditHook, EventRecord, PreparedEvent


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
