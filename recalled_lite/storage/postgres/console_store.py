"""The console part of PostgresStore: the shared delegation (storage/console_store.py) over
storage/postgres/console.py. The webhook figures the console shows (webhook_backlog,
preview_webhook_job) come with the webhook storage (webhook_store.py)."""

from __future__ import annotations

from ..console_store import ConsoleStore as _ConsoleStore
from . import console


class ConsoleStore(_ConsoleStore):
    """Mixed into PostgresStore."""

    console_sql = console
