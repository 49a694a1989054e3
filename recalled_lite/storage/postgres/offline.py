"""CLI-side operations on a PostgreSQL database that running instances may also use."""

from __future__ import annotations

import hmac
import importlib
from typing import Any, Callable

import psycopg

from ...errors import ConfigError
from ..backend import redact_database_url
from .connection import connect_once
from .integrity_store import scan_chain
from .merkle import latest_checkpoint
from .migrate import available, current_version, migrate


def _connect(url: str) -> psycopg.Connection:
    try:
        return connect_once(url)
    except psycopg.Error as exc:
        text = str(exc).strip().splitlines()
        raise ConfigError(f"cannot connect to PostgreSQL at {redact_database_url(url)}: "
                          f"{text[0] if text else type(exc).__name__}") from None


def _project_id(conn: psycopg.Connection) -> str | None:
    if not conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'project_id'").fetchone()
    return row[0] if row else None


def is_new_database(url: str) -> bool:
    """True only when the database certainly holds no log yet (no meta.project_id): the one
    case where `serve` may create a secret. A database that cannot be reached is neither new
    nor old: refused with the reason (exit 2), so no secret is ever made up for a log that
    might have one, and the operator reads the connection error, not "no server secret"."""
    conn = _connect(url)
    try:
        return _project_id(conn) is None
    except psycopg.Error:
        return False
    finally:
        conn.close()


def require_database(url: str) -> None:
    conn = _connect(url)
    try:
        if _project_id(conn) is None:
            raise ConfigError(f"{redact_database_url(url)} holds no recalled-lite log (no project id); "
                              "only `recalled-lite serve` creates one")
    finally:
        conn.close()


def _snapshot(conn: psycopg.Connection) -> None:
    conn.rollback()
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True


def verify_url(url: str, secret: bytes | None, from_seq: int | None, to_seq: int | None,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    conn = _connect(url)
    try:
        _snapshot(conn)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if secret is not None:
            check = hmac.new(secret, b"recalled-lite secret check", "sha256").hexdigest()
            if not hmac.compare_digest(meta.get("secret_check", ""), check):
                raise ConfigError("this secret is not the one the database was created with; "
                                  "pass the right one with --secret-file PATH or RECALLED_SECRET "
                                  "(or check the hashes only with --no-signatures)")
        return scan_chain(conn, meta["project_id"], secret, from_seq, to_seq, progress)
    finally:
        conn.close()


def export_url(url: str, filters: Any, make_renderer: Callable[[str], Any], write: Callable[[bytes], Any],
               progress: Callable[[int, int], None] | None = None) -> tuple[int, int, str | None]:
    """An export in one REPEATABLE READ snapshot, the way GET /v1/exports writes it."""
    try:
        reads = importlib.import_module(f"{__package__}.reads")
    except ModuleNotFoundError:
        raise ConfigError("export from PostgreSQL is not available in this build") from None
    conn = _connect(url)
    try:
        _snapshot(conn)
        project_id = conn.execute("SELECT value FROM meta WHERE key = 'project_id'").fetchone()[0]
        checkpoint = latest_checkpoint(conn)  # read before the head, as on SQLite
        head_seq, head_hash = reads.chain_head(conn)
        renderer = make_renderer(project_id)
        write(renderer.header())
        after: int | None = 0
        while after is not None and after < head_seq:
            data, after = reads.export_chunk(conn, filters, None, after, head_seq, renderer.chunk)
            if data:
                write(data)
            if progress is not None:
                progress(after if after is not None else head_seq, head_seq)
        write(renderer.footer(head_seq, head_hash, checkpoint.note if checkpoint else None))
        return renderer.count, head_seq, head_hash
    finally:
        conn.close()


def migrate_url(url: str) -> tuple[int, int, int]:
    conn = _connect(url)
    try:
        conn.autocommit = True
        before = current_version(conn)
        after = migrate(conn)
    finally:
        conn.close()
    return before, after, len(available())
