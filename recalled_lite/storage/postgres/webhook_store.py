"""The webhook part of PostgresStore (a mixin picked up by storage/postgres/store.py): the
WebhookStore for the delivery loop, and the webhook figures of the console and /metrics."""

from __future__ import annotations

from typing import Any

from ...timefmt import now_ms
from . import webhook_reads
from .webhook_jobs import preview_job_count


class WebhookMixin:
    def webhook_storage(self, policy: Any, *, handoff_limit: int) -> Any:
        """The webhook tables (storage/webhook_base.WebhookStore) for the delivery loop."""
        from .webhooks import WebhookStorage

        storage = WebhookStorage(self, policy, handoff_limit=handoff_limit)
        self._webhook_storages = [*getattr(self, "_webhook_storages", []), storage]
        return storage

    def close_webhooks(self) -> None:
        """Stop the LISTEN threads (their connections). Also done on their own once the
        store is closed."""
        for storage in getattr(self, "_webhook_storages", []):
            storage.close()
        self._webhook_storages = []

    def _webhook_counts_fn(self) -> Any:
        """fn(conn) -> (deliveries by status, subscriptions by state) for storage_gauges."""
        return webhook_reads.webhook_counts

    async def webhook_backlog(self) -> dict[str, int]:
        return await self.read(webhook_reads.backlog_counts)  # type: ignore[attr-defined]

    async def preview_webhook_job(self, kind: str, subscription: Any, begin: int, end: int | None) -> int:
        return await self.read(preview_job_count, kind, subscription, begin, end, now_ms())  # type: ignore[attr-defined]
