"""Stand-ins for the parts of the PostgreSQL store other modules bring, so the server starts
and serves intake before they land (PostgresStore puts these last in its bases, so the real
mixins shadow them):

- InterimReads: list_events, chain_head and events_per_organization with plain SQL over the
  b-tree and `keys` columns (correct results, no tuned plans); search and export answer 503.
  Replaced by storage/postgres/reads_store.py (ReadStore).
- InterimWebhooks: no subscription can be created, so the delivery loop attaches to an empty
  outbox; the webhook API answers 503. Replaced by storage/postgres/webhook_store.py
  (WebhookMixin). Retention reports no job and refuses to start one; console records answer
  503. Replaced by retention_store.py / console_store.py.
"""

from __future__ import annotations

import inspect
from typing import Any

import psycopg

from ...errors import StorageUnavailable
from ..base import EventRecord, Store
from ..keys import filter_keys

EVENT_COLUMNS = ", ".join(EventRecord._fields)


def _not_yet(what: str) -> StorageUnavailable:
    return StorageUnavailable(f"{what} is not available on the PostgreSQL backend in this build", retry_after=60)


def list_page(conn: psycopg.Connection, f: Any, wall: str | None) -> tuple[list[EventRecord], bool]:
    if not isinstance(f.limit, int) or isinstance(f.limit, bool) or f.limit < 1:
        raise ValueError("limit must be a positive integer")
    if f.after_seq is not None and f.cursor is not None:
        raise ValueError("after_seq and cursor cannot be combined")
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("organization", wall), ("organization", f.organization), ("actor_id", f.actor_id)):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if f.action is not None:
        if f.action.endswith("*"):
            clauses.append("starts_with(action, %s)")
            params.append(f.action[:-1])
        else:
            clauses.append("action = %s")
            params.append(f.action)
    if f.target_type is not None or f.target_id is not None:
        clauses.append("keys @> %s::text[]")
        params.append(filter_keys(target_type=f.target_type, target_id=f.target_id))
    if f.date_from_ms is not None:
        clauses.append("occurred_at >= %s")
        params.append(f.date_from_ms)
    if f.date_to_ms is not None:
        clauses.append("occurred_at <= %s")
        params.append(f.date_to_ms)
    if f.after_seq is not None:
        clauses.append("seq > %s")
        params.append(f.after_seq)
        order = " ORDER BY seq LIMIT %s"
    else:
        if f.cursor is not None:
            clauses.append("(occurred_at, seq) < (%s, %s)")
            params += [f.cursor.occurred_at_ms, f.cursor.seq]
        order = " ORDER BY occurred_at DESC, seq DESC LIMIT %s"
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events{where}{order}", [*params, f.limit + 1]).fetchall()
    return [EventRecord._make(r) for r in rows[:f.limit]], len(rows) > f.limit


def chain_head(conn: psycopg.Connection) -> tuple[int, str | None]:
    row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, None)


def events_per_organization(conn: psycopg.Connection, since_ms: int, excluded_prefix: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT coalesce(organization, ''), count(*) FROM events WHERE received_at >= %s "
        "AND NOT starts_with(action, %s) GROUP BY 1", (since_ms, excluded_prefix)).fetchall()
    return {org: n for org, n in rows}


class InterimReads:
    read: Any

    async def list_events(self, filters: Any, organization_wall: str | None) -> tuple[list[EventRecord], bool]:
        return await self.read(list_page, filters, organization_wall)

    async def chain_head(self) -> tuple[int, str | None]:
        return await self.read(chain_head)

    async def events_per_organization(self, since_ms: int, excluded_prefix: str) -> dict[str, int]:
        return await self.read(events_per_organization, since_ms, excluded_prefix)

    async def search_events(self, *args: Any, **kwargs: Any) -> Any:
        raise _not_yet("search")

    async def export_chunk(self, *args: Any, **kwargs: Any) -> Any:
        raise _not_yet("export")

    async def erase_actor(self, *args: Any, **kwargs: Any) -> Any:
        raise _not_yet("erasure")


class _EmptyOutbox:
    """A WebhookStore with no subscriptions and nothing to deliver."""

    instance = "interim"
    secrets_upgraded = 0

    def __init__(self) -> None:
        self.subs: dict[str, Any] = {}

    async def attach(self) -> tuple[dict[str, Any], dict[str, int], list[str]]:
        return {}, {}, []

    async def claim(self, requests: list[tuple[str, int]]) -> tuple[list[Any], dict[str, int | None]]:
        return [], {}

    async def apply_results(self, results: list[Any]) -> None:
        return None

    async def quarantine_results(self, results: list[Any]) -> None:
        return None

    async def renew_leases(self, message_ids: list[str]) -> None:
        return None

    async def reclaim_expired(self, held: frozenset[str]) -> int:
        return 0

    async def load_for_send(self, items: list[Any]) -> tuple[set[str], dict[int, EventRecord]]:
        return set(), {}

    async def due_snapshot(self) -> dict[str, int]:
        return {}

    async def list_attempts(self, **kwargs: Any) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise _not_yet("webhooks")
        return refuse


def _no_webhook_counts(conn: psycopg.Connection) -> tuple[dict[str, int], dict[str, int]]:
    return {"pending": 0, "sending": 0, "failed": 0}, {}


class InterimWebhooks:
    def webhook_storage(self, policy: Any, *, handoff_limit: int) -> Any:
        return _EmptyOutbox()

    def _webhook_counts_fn(self) -> Any:
        """fn(conn) -> (deliveries by status, subscriptions by state) for storage_gauges."""
        return _no_webhook_counts

    async def webhook_backlog(self) -> dict[str, int]:
        return {}

    async def preview_webhook_job(self, *args: Any, **kwargs: Any) -> int:
        raise _not_yet("webhook jobs")

    # -- nothing of these can have been recorded until their mixins land
    async def running_retention_job(self) -> Any:
        return None

    async def last_chain_verification(self) -> Any:
        return None

    async def load_console_session(self, token_hash: str) -> Any:
        return None

    def __getattr__(self, name: str) -> Any:
        # Every other async method of the Store protocol (retention, console records) answers
        # 503 until its mixin lands; any other missing attribute stays an AttributeError.
        if name not in _STORE_ASYNC_METHODS:
            raise AttributeError(name)

        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise _not_yet(name.replace("_", " "))
        return refuse


_STORE_ASYNC_METHODS = frozenset(
    name for name, value in vars(Store).items() if inspect.iscoroutinefunction(value))
