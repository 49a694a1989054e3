"""The erasure part of SqliteStore: erase an actor in chunks, then purge (storage/sqlite/erasure.py, purge.py)."""

from __future__ import annotations

from typing import Any

from ..base import AuditHook
from . import erasure, retention
from .audited import AuditWhenFinished


class ErasureStore:
    """Mixed into SqliteStore (which provides write and the ErasurePurge)."""

    write: Any
    purge: Any

    # -- erasure (§4.7) -------------------------------------------------------

    async def erase_actor(self, actor_id: str, organization: str | None, erased_at: int,
                          audit: AuditHook | None = None) -> int:
        """Erase the actor's personal fields on every matching event; returns the count.
        The audit events are written with the last chunk (the one that finishes it).

        One chunk per write op, then the purge, one bounded step per write op, interleaved
        with intake, and the WAL truncation (storage/sqlite/erasure.py, purge.py).
        Concurrent erasures share a purge when their rows were committed before it began.
        """
        total = 0
        while True:
            chunk_audit = AuditWhenFinished(audit, total, erasure.ERASE_CHUNK) if audit is not None else None
            # Every chunk checks the legal holds in its own transaction: a hold placed mid-erasure
            # stops it before it touches a shielded event (409 LEGAL_HOLD).
            done = await self.write(retention.erase_chunk_unless_held, actor_id, organization, erased_at,
                                    audit=chunk_audit)
            total += done
            if done < erasure.ERASE_CHUNK:
                break
        await self.purge.after_erasure(erased=total > 0)
        return total
