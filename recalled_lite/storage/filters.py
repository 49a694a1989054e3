"""Backend-neutral read filters: what the API and the CLI hand to ``Store.list_events``
and ``Store.export_chunk``. Plain data; each backend turns them into its own queries
(``storage/sqlite/filters.py`` for SQLite)."""

from __future__ import annotations

from dataclasses import dataclass

from recalled_lite.cursors import Cursor


@dataclass(frozen=True, slots=True)
class ListFilters:
    """§4.5 list filters, already validated and converted by the API layer.

    ``action`` is exact, or a prefix when it ends with ``*``. ``date_from_ms``
    and ``date_to_ms`` are inclusive (see ``search_query.parse_date_bound``).
    ``after_seq`` (tailing) returns seq > after_seq in ascending seq order and
    cannot be combined with ``cursor``.
    """

    organization: str | None = None
    actor_id: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    date_from_ms: int | None = None
    date_to_ms: int | None = None
    limit: int = 50
    cursor: Cursor | None = None
    after_seq: int | None = None
