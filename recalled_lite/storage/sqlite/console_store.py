"""The console part of SqliteStore: the shared delegation (storage/console_store.py) over
storage/sqlite/console.py, plus the chain record and webhook figures the console shows."""

from __future__ import annotations

import sqlite3
from typing import Any

from ...timefmt import now_ms
from ..base import ExportRecord
from ..console_store import ConsoleStore as _ConsoleStore
from . import console, webhook_jobs, webhooks
from ..chain_scan import CHAIN_COLUMNS
from .integrity_store import _make_export


class ConsoleStore(_ConsoleStore):
    """Mixed into SqliteStore; the webhook figures the console shows live here on SQLite."""

    console_sql = console

    async def get_event_chain_record(self, event_id: str, organization: str | None) -> ExportRecord | None:
        return await self.read(_get_chain_record, event_id, organization)

    async def webhook_backlog(self) -> dict[str, int]:
        return await self.read(webhooks.backlog_counts)

    async def preview_webhook_job(self, kind: str, subscription: Any, begin: int, end: int | None) -> int:
        return await self.read(webhook_jobs.preview_job_count, kind, subscription, begin, end, now_ms())


def _get_chain_record(conn: sqlite3.Connection, event_id: str, organization: str | None) -> ExportRecord | None:
    row = conn.execute(f"SELECT {CHAIN_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None or (organization is not None and row[2] != organization):
        return None  # the tenant wall, as in _get_event
    return _make_export(row)
