"""The retention part of a store: rules, legal holds, purge jobs, the same for every backend.

Each backend's store subclasses this and sets `retention_sql` to its own retention module
(storage/<backend>/retention.py); those modules hold the SQL, this one the delegation, so a
new retention operation is added once. What truly differs (reclaiming purged text, giving
pages back) stays in the backend's subclass.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..retention import Hold, Rule
from ..timefmt import now_ms
from .base import AuditHook


class RetentionStore:
    """Mixed into a store (which provides write, read, project_id and the secret)."""

    retention_sql: ClassVar[Any]  # the backend's retention module
    _secret: bytes
    project_id: str
    write: Any
    read: Any

    # -- rules -----------------------------------------------------------------------------------

    async def list_retention_rules(self, organization: str | None) -> list[Rule]:
        return await self.read(self.retention_sql.list_rules, organization)

    async def put_retention_rule(self, organization: str | None, action_prefix: str | None, days: int,
                                 audit: AuditHook | None = None) -> tuple[Rule, Rule | None]:
        return await self.write(self.retention_sql.put_rule, organization, action_prefix, days, now_ms(),
                                audit=audit)

    async def delete_retention_rule(self, rule_id: str, organization_wall: str | None,
                                    audit: AuditHook | None = None) -> Rule:
        return await self.write(self.retention_sql.delete_rule, rule_id, organization_wall, audit=audit)

    # -- legal holds -----------------------------------------------------------------------------

    async def create_legal_hold(self, hold: Hold, audit: AuditHook | None = None) -> Hold:
        return await self.write(self.retention_sql.insert_hold, hold, audit=audit)

    async def list_legal_holds(self, organization: str | None, include_released: bool) -> list[Hold]:
        return await self.read(self.retention_sql.list_holds, organization, include_released)

    async def get_legal_hold(self, hold_id: str, organization_wall: str | None) -> Hold:
        return await self.read(self.retention_sql.get_hold, hold_id, organization_wall)

    async def release_legal_hold(self, hold_id: str, organization_wall: str | None,
                                 audit: AuditHook | None = None) -> tuple[Hold, bool]:
        return await self.write(self.retention_sql.release_hold, hold_id, organization_wall, now_ms(),
                                audit=audit)

    # -- purge jobs ------------------------------------------------------------------------------

    async def create_retention_job(self, trigger: str, reason: str,
                                   audit: AuditHook | None = None) -> tuple[Any, bool]:
        return await self.write(self.retention_sql.create_job, trigger, reason, now_ms(), audit=audit)

    async def get_retention_job(self, job_id: str) -> Any | None:
        return await self.read(self.retention_sql.get_job, job_id)

    async def running_retention_job(self) -> Any | None:
        return await self.read(self.retention_sql.running_job)

    async def retention_batch(self, job_id: str, default_days: int, batch_size: int,
                              pause_seconds: float = 0.0) -> Any:
        """One purge batch: one write op, so intake queues behind at most this much."""
        return await self.write(self.retention_sql.purge_batch, job_id, self.project_id, self._secret,
                                default_days, batch_size, now_ms(), pause_seconds)

    async def fail_retention_job(self, job_id: str, error: str) -> None:
        await self.write(self.retention_sql.fail_job, job_id, error, now_ms())

    async def retention_status(self, organization: str | None) -> dict[str, Any]:
        return await self.read(self.retention_sql.status, organization)
