"""The erasure part of PostgresStore: erase an actor in chunks (storage/postgres/erasure.py)."""

from __future__ import annotations

from typing import Any

from ..audited import AuditWhenFinished
from ..base import AuditHook
from . import erasure, retention


class ErasureStore:
    """Mixed into PostgresStore (which provides write)."""

    write: Any

    async def erase_actor(self, actor_id: str, organization: str | None, erased_at: int,
                          audit: AuditHook | None = None) -> int:
        """Erase the actor's personal fields on every matching event; returns the count.
        The audit events are written with the last chunk (the one that finishes it).

        One chunk per write op, interleaved with intake. Nothing is left to purge afterwards
        in the database's own structures (erasure.py); what PostgreSQL keeps on disk is in
        docs/scaling.md ("Erasure on PostgreSQL").
        """
        total = 0
        while True:
            chunk_audit = AuditWhenFinished(audit, total, erasure.ERASE_CHUNK) if audit is not None else None
            # Every chunk checks the legal holds in its own transaction: a hold placed
            # mid-erasure (by any instance) stops it before it touches a shielded event.
            done = await self.write(retention.erase_chunk_unless_held, actor_id, organization, erased_at,
                                    audit=chunk_audit)
            total += done
            if done < erasure.ERASE_CHUNK:
                break
        return total
