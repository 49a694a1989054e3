"""The erasure part of a store: erase an actor in chunks, the same loop for every backend.

Each backend sets `retention_sql` (its retention module: `erase_chunk_unless_held`) and
`erase_chunk_size`, and may override `after_erasure` for what its storage keeps afterwards.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .audited import AuditWhenFinished
from .base import AuditHook


class ErasureStore:
    """Mixed into a store (which provides write)."""

    retention_sql: ClassVar[Any]
    erase_chunk_size: ClassVar[int]
    write: Any

    async def erase_actor(self, actor_id: str, organization: str | None, erased_at: int,
                          audit: AuditHook | None = None) -> int:
        """Erase the actor's personal fields on every matching event; returns the count.
        The audit events are written with the last chunk (the one that finishes it).

        One chunk per write op, interleaved with intake, then the backend's `after_erasure`.
        """
        total = 0
        chunk = self.erase_chunk_size
        while True:
            chunk_audit = AuditWhenFinished(audit, total, chunk) if audit is not None else None
            # Every chunk checks the legal holds in its own transaction: a hold placed
            # mid-erasure (by any instance) stops it before it touches a shielded event.
            done = await self.write(self.retention_sql.erase_chunk_unless_held, actor_id, organization,
                                    erased_at, audit=chunk_audit)
            total += done
            if done < chunk:
                break
        await self.after_erasure(total)
        return total

    async def after_erasure(self, erased: int) -> None:
        """What the backend's storage still holds of the erased text, cleared here."""
