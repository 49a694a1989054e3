"""Opening storage for a configured database location, and the offline operations on it.

The one module outside the backends that names one (tests/test_storage_boundary.py allows
it and no other): the CLI and the server open their store and run verify, export and backup
through here, and see only the ``storage.base.Store`` it returns. A location is a
``postgresql://`` URL (PostgreSQL, storage/postgres/) or a path (an SQLite file). The
backends are imported when used, so that ``recalled-lite version`` or ``--help`` load none.
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .base import Store

Location = Path | str

_URL_PASSWORD = re.compile(r"^(postgres(?:ql)?://[^:/?#@]*):[^@/?#]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def is_database_url(location: Any) -> bool:
    """A PostgreSQL connection URL (anything else is an SQLite path)."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def redact_database_url(url: str) -> str:
    """The URL with its password (in the authority or the query) replaced, for logs."""
    return _QUERY_PASSWORD.sub(r"\1[redacted]", _URL_PASSWORD.sub(r"\1:[redacted]@", url))


def describe_location(location: Location) -> str:
    return redact_database_url(location) if is_database_url(location) else str(location)


def open_store(config: Any, secret: bytes) -> Store:
    """The store for `config` (a config.Config): its database location and tuning."""
    if config.database.url:
        from .postgres.store import PostgresStore

        return PostgresStore(config.database.url, secret=secret, readers=config.database.readers)
    from .sqlite.store import SqliteStore

    return SqliteStore(
        config.db_path, secret=secret, synchronous=config.database.synchronous,
        busy_timeout_ms=config.database.busy_timeout_ms, readers=config.database.readers,
        cache_mb=config.database.cache_mb, max_page_count=config.database.max_page_count,
    )


def is_new_database(path: Location) -> bool:
    """True only when `path` certainly holds no log yet (the one case where `serve` may
    create a secret)."""
    if is_database_url(path):
        from .postgres.offline import is_new_database as check_url

        return check_url(path)
    from .sqlite.offline import is_new_database as check

    return check(path)


def require_database(path: Location) -> None:
    """Refuse (ConfigError, exit 2) unless `path` holds a recalled-lite log, before anything
    opens it read-write: only `serve` creates databases."""
    if is_database_url(path):
        from .postgres.offline import require_database as check_url

        check_url(path)
        return
    from .sqlite.offline import require_database as check

    check(path)


def verify_file(path: Location, secret: bytes | None, from_seq: int | None, to_seq: int | None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The chain's hashes and, unless `secret` is None, its signatures, read-only."""
    if is_database_url(path):
        from .postgres.offline import verify_url

        return verify_url(path, secret, from_seq, to_seq, progress=progress)
    from .sqlite.offline import verify_file as verify

    return verify(path, secret, from_seq, to_seq, progress=progress)


def export_file(path: Location, filters: Any, make_renderer: Callable[[str], Any], write: Callable[[bytes], Any],
                progress: Callable[[int, int], None] | None = None) -> tuple[int, int, str | None]:
    """An export of the log, read-only, the way GET /v1/exports writes it: (events written,
    head seq, head hash). `filters` is a storage.filters.ListFilters."""
    if is_database_url(path):
        from .postgres.offline import export_url

        return export_url(path, filters, make_renderer, write, progress=progress)
    from .sqlite.offline import export_file as export

    return export(path, filters, make_renderer, write, progress=progress)


def backup_file(source: Location, destination: Path,
                progress: Callable[[int, int], None] | None = None) -> None:
    """A consistent copy of the database, safe while a server runs on it. PostgreSQL has
    its own tools for that (pg_dump, or base backups with WAL archiving): refused, exit 2."""
    if is_database_url(source):
        raise ConfigError(f"`recalled-lite backup` copies SQLite files; back up {describe_location(source)} "
                          "with PostgreSQL's own tools (pg_dump --format=custom, or a base backup with "
                          "WAL archiving; docs/scaling.md), and keep the secret and signing key files with it")
    from .sqlite.offline import backup_file as backup

    backup(source, destination, progress=progress)


def migrate_file(path: Location) -> tuple[int, int, int]:
    """Bring the database at `path` to this version's schema in place, as `serve` does at
    startup (with a progress bar for a long step): (schema before, after, latest). On SQLite
    the caller holds the instance lock, so no server runs on the file meanwhile; on
    PostgreSQL the migration runs under an advisory lock, beside running instances."""
    if is_database_url(path):
        from .postgres.offline import migrate_url

        return migrate_url(path)
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
    """The storage engines and their library versions, for `recalled-lite version`."""
    from .sqlite.connection import sqlite_version

    try:
        from importlib.metadata import version

        psycopg = f", PostgreSQL through psycopg {version('psycopg')}"
    except Exception:  # the driver is not installed: SQLite only
        psycopg = ""
    return f"SQLite {sqlite_version()}{psycopg}"


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
