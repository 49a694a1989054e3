"""Reading a whole SQLite log for a copy to another backend (`migrate-to-postgres`).

Read-only (mode=ro, one read transaction: a consistent snapshot of every table), and
generic: the copy asks for a table's columns and rows and decides itself what it keeps, so
a table a later migration adds is copied as soon as the other side has it too.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterator

from ...errors import ConfigError
from ...integrity.tiles import TreeEdge
from .merkle import read_tile, stored_tree_size
from .migrate import available
from .offline import require_database
from .reads import chain_head

# Tables that are SQLite's own way of answering a query, rebuilt from the events by the
# other backend (the filter keys, the full-text index, the list-order summary), or that
# never hold a committed row (retention_guard, migration 008).
DERIVED_TABLES = frozenset({"events_fts", "events_keys", "event_blocks", "events_ahead", "retention_guard"})
# Rows are read in pages of this many (memory stays flat at any log size).
FETCH = 5000


class SqliteDump:
    """One snapshot of the database at `path`; close() when done."""

    def __init__(self, path: Path) -> None:
        require_database(path)
        self.path = path
        self.conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True,
                                    isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 5000")
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        latest = len(available())
        if version != latest:
            self.conn.close()
            raise ConfigError(
                f"{path} has schema {version}, this recalled-lite expects {latest}: run "
                f"`recalled-lite migrate --db {path}` first, then copy it")
        # Every read below sees this one snapshot (WAL), even if something commits meanwhile.
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT 1 FROM meta LIMIT 1").fetchone()

    def close(self) -> None:
        try:
            self.conn.execute("COMMIT")
        finally:
            self.conn.close()

    def tables(self) -> list[str]:
        """Every table that holds log data, in creation order."""
        rows = self.conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY rowid").fetchall()
        out = []
        for (name,) in rows:
            # FTS5 shadow tables (events_fts_data, events_keys_idx, ...) go with their index.
            if name in DERIVED_TABLES or any(name.startswith(d + "_") for d in DERIVED_TABLES):
                continue
            out.append(name)
        return out

    def columns(self, table: str) -> list[str]:
        return [row[1] for row in self.conn.execute(f'PRAGMA table_info("{table}")')]

    def primary_key(self, table: str) -> list[str]:
        cols = sorted((row[5], row[1]) for row in self.conn.execute(f'PRAGMA table_info("{table}")') if row[5])
        return [name for _, name in cols]

    def count(self, table: str) -> int:
        return self.conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]

    def rows(self, table: str, columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
        """The rows in pages, in primary-key order (seq order for events)."""
        order = ", ".join(f'"{c}"' for c in self.primary_key(table)) or "rowid"
        cursor = self.conn.execute(
            f'SELECT {", ".join(chr(34) + c + chr(34) for c in columns)} FROM "{table}" ORDER BY {order}')
        while True:
            page = cursor.fetchmany(FETCH)
            if not page:
                return
            yield page

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def head(self) -> tuple[int, str | None]:
        return chain_head(self.conn)

    def tree_size(self) -> int:
        return stored_tree_size(self.conn)

    def tree_root(self, size: int) -> bytes:
        return TreeEdge.load(size, lambda level, index: read_tile(self.conn, level, index)).root()
