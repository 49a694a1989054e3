"""Opening storage for a configured database location, and the offline operations on it.

The one module outside ``storage/sqlite/`` that names a backend (tests/test_storage_boundary.py
allows it and no other): the CLI and the server open their store and run verify, export and
backup through here, and see only the ``storage.base.Store`` it returns. Every location is
an SQLite database file today. The backends are imported when used, so that
``recalled-lite version`` or ``--help`` load none.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .base import Store


def open_store(config: Any, secret: bytes) -> Store:
    """The store for `config` (a config.Config): its database location and tuning."""
    from .sqlite.store import SqliteStore

    return SqliteStore(
        config.db_path, secret=secret, synchronous=config.database.synchronous,
        busy_timeout_ms=config.database.busy_timeout_ms, readers=config.database.readers,
        cache_mb=config.database.cache_mb, max_page_count=config.database.max_page_count,
    )


def is_new_database(path: Path) -> bool:
    """True only when `path` certainly holds no log yet (the one case where `serve` may
    create a secret)."""
    from .sqlite.offline import is_new_database as check

    return check(path)


def require_database(path: Path) -> None:
    """Refuse (ConfigError, exit 2) unless `path` holds a recalled-lite log, before anything
    opens it read-write: only `serve` creates databases."""
    from .sqlite.offline import require_database as check

    check(path)


def verify_file(path: Path, secret: bytes | None, from_seq: int | None, to_seq: int | None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The chain's hashes and, unless `secret` is None, its signatures, read-only."""
    from .sqlite.offline import verify_file as verify

    return verify(path, secret, from_seq, to_seq, progress=progress)


def export_file(path: Path, filters: Any, make_renderer: Callable[[str], Any], write: Callable[[bytes], Any],
                progress: Callable[[int, int], None] | None = None) -> tuple[int, int, str | None]:
    """An export of the log, read-only, the way GET /v1/exports writes it: (events written,
    head seq, head hash). `filters` is a storage.filters.ListFilters."""
    from .sqlite.offline import export_file as export

    return export(path, filters, make_renderer, write, progress=progress)


def backup_file(source: Path, destination: Path,
                progress: Callable[[int, int], None] | None = None) -> None:
    """A consistent copy of the database, safe while a server runs on it."""
    from .sqlite.offline import backup_file as backup

    backup(source, destination, progress=progress)


def migrate_file(path: Path) -> tuple[int, int, int]:
    """Bring the database at `path` to this version's schema in place, as `serve` does at
    startup (with a progress bar for a long step): (schema before, after, latest). The caller
    holds the instance lock, so no server runs on the file meanwhile."""
    from .sqlite.connection import open_writer
    from .sqlite.migrate import available, migrate

    conn = open_writer(path, synchronous="FULL", busy_timeout_ms=5000, cache_mb=64)
    try:
        before = conn.execute("PRAGMA user_version").fetchone()[0]
        after = migrate(conn)
    finally:
        conn.close()
    return before, after, len(available())


def engine_description() -> str:
    """The storage engine and its library version, for `recalled-lite version`."""
    from .sqlite.connection import sqlite_version

    return f"SQLite {sqlite_version()}"


def copy_to_postgres(source: Path, url: str, secret: bytes,
                     copy_progress: Callable[[int, int], None] | None = None,
                     verify_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """`migrate-to-postgres`: copy the SQLite log at `source` (read-only, one snapshot) into
    the empty PostgreSQL database at `url`, then verify the copy there with `secret`.
    Returns {"copied": ..., "verify": ...}; raises ConfigError before writing anything when
    the target is not empty or cannot hold the source."""
    from .postgres.copy import copy_log, verify_copy
    from .sqlite.dump import SqliteDump

    dump = SqliteDump(source)
    try:
        check = hmac.new(secret, b"recalled-lite secret check", "sha256").hexdigest()
        if not hmac.compare_digest(dump.meta().get("secret_check", ""), check):
            raise ConfigError("this secret is not the one the database was created with; pass the right one "
                              "with --secret-file PATH or RECALLED_SECRET (the copy is verified with it)")
        copied = copy_log(dump, url, progress=copy_progress)
        source_root = dump.tree_root(copied["treeSize"])
    finally:
        dump.close()
    return {"copied": copied, "verify": verify_copy(url, secret, copied, source_root, progress=verify_progress)}
