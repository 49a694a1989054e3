"""The retention part of PostgresStore: rules, legal holds, purge jobs (storage/postgres/retention.py)."""

from __future__ import annotations

from typing import Any

from ...retention import Hold, Rule
from ...timefmt import now_ms
from ..base import AuditHook
from . import retention
from .retention import RetentionJob


class RetentionStore:
    """Mixed into PostgresStore (which provides write, read, project_id and the secret)."""

    _secret: bytes
    project_id: str
    write: Any
    read: Any

    async def list_retention_rules(self, organization: str | None) -> list[Rule]:
        return await self.read(retention.list_rules, organization)

    async def put_retention_rule(self, organization: str | None, action_prefix: str | None, days: int,
                                 audit: AuditHook | None = None) -> tuple[Rule, Rule | None]:
        return await self.write(retention.put_rule, organization, action_prefix, days, now_ms(), audit=audit)

    async def delete_retention_rule(self, rule_id: str, organization_wall: str | None,
                                    audit: AuditHook | None = None) -> Rule:
        return await self.write(retention.delete_rule, rule_id, organization_wall, audit=audit)

    async def create_legal_hold(self, hold: Hold, audit: AuditHook | None = None) -> Hold:
        return await self.write(retention.insert_hold, hold, audit=audit)

    async def list_legal_holds(self, organization: str | None, include_released: bool) -> list[Hold]:
        return await self.read(retention.list_holds, organization, include_released)

    async def get_legal_hold(self, hold_id: str, organization_wall: str | None) -> Hold:
        return await self.read(retention.get_hold, hold_id, organization_wall)

    async def release_legal_hold(self, hold_id: str, organization_wall: str | None,
                                 audit: AuditHook | None = None) -> tuple[Hold, bool]:
        return await self.write(retention.release_hold, hold_id, organization_wall, now_ms(), audit=audit)

    async def create_retention_job(self, trigger: str, reason: str,
                                   audit: AuditHook | None = None) -> tuple[RetentionJob, bool]:
        return await self.write(retention.create_job, trigger, reason, now_ms(), audit=audit)

    async def get_retention_job(self, job_id: str) -> RetentionJob | None:
        return await self.read(retention.get_job, job_id)

    async def running_retention_job(self) -> RetentionJob | None:
        return await self.read(retention.running_job)

    async def retention_batch(self, job_id: str, default_days: int, batch_size: int,
                              pause_seconds: float = 0.0) -> RetentionJob:
        """One purge batch: one write op, so intake queues behind at most this much."""
        return await self.write(retention.purge_batch, job_id, self.project_id, self._secret, default_days,
                                batch_size, now_ms(), pause_seconds)

    async def fail_retention_job(self, job_id: str, error: str) -> None:
        await self.write(retention.fail_job, job_id, error, now_ms())

    async def reclaim_purged_text(self) -> None:
        """Nothing to do on PostgreSQL: the full-text document and the filter keys are columns
        of the deleted rows, not a separate index with tombstones. The dead row versions are
        reclaimed by autovacuum (docs/scaling.md, "Erasure on PostgreSQL"); VACUUM cannot run
        inside the writer's transaction, and a forced one would rescan every index of the
        table on the intake path."""

    async def retention_vacuum(self, pages: int) -> int:
        """0: no free pages are handed back by this server (autovacuum makes them reusable;
        only VACUUM FULL shrinks the files, under an exclusive lock: an operator's call)."""
        return 0

    async def retention_status(self, organization: str | None) -> dict[str, Any]:
        return await self.read(retention.status, organization)
