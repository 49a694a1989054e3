"""CLI-side operations on a database file that a running server may also hold open."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Callable

from ...errors import ConfigError
from ...private_files import create_private_file
from .. import secret_check
from .connection import open_reader
from .merkle import latest_checkpoint
from .reads import chain_head, export_chunk
from .integrity_store import scan_chain


def _check_database(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"no database at {path}; pass --db PATH (or set RECALLED_DB)")


def why_not_a_database(path: Path) -> str | None:
    """None if `path` holds a recalled-lite database (a project id), else the reason."""
    if not path.is_file():
        return f"no database at {path}; pass --db PATH (or set RECALLED_DB)"
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'project_id'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"{path} is not a recalled-lite database ({exc}); pass --db PATH"
    if row is None:
        return f"{path} is not a recalled-lite database (no project id); pass --db PATH"
    return None


def is_new_database(path: Path) -> bool:
    """True only when `path` certainly holds no recalled-lite log yet (missing, empty, or
    readable without a project id): the one case where `serve` may create a secret. A file
    that cannot be read (locked, corrupt) counts as existing, so that no secret is ever made
    up for a database that might have one."""
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return True
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        try:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta'").fetchone()
            return not has_meta or conn.execute(
                "SELECT 1 FROM meta WHERE key = 'project_id'").fetchone() is None
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def require_database(path: Path) -> None:
    """Refuse (exit 2) unless `path` is a recalled-lite database, before anything opens it
    read-write: opening a wrong path for writing would create (or migrate) a database there.
    Only `serve` creates databases."""
    reason = why_not_a_database(path)
    if reason is not None:
        raise ConfigError(reason)


def verify_file(path: Path, secret: bytes | None, from_seq: int | None, to_seq: int | None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The chain's hashes and, unless `secret` is None, its signatures."""
    _check_database(path)
    conn = open_reader(path, busy_timeout_ms=5000, cache_mb=64)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if secret is not None:
            secret_check.require_match(meta, secret, secret_check.OFFLINE_MISMATCH)
        return scan_chain(conn, meta["project_id"], secret, from_seq, to_seq, progress)
    finally:
        conn.close()


def _fsync_directory(path: Path) -> None:
    # The rename itself must survive a power cut, or the backup may vanish with it.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_file(source: Path, destination: Path,
                progress: Callable[[int, int], None] | None = None) -> None:
    """A consistent online copy through SQLite's backup API (safe while serving).

    Written to `<dest>.partial` (0600; SQLite gives its journal the same mode) and
    renamed at the end: an interrupted backup never looks like a complete one.
    """
    _check_database(source)
    if destination.exists():
        raise ConfigError(f"{destination} already exists; choose a new path or remove it first")
    partial = destination.with_name(destination.name + ".partial")
    os.close(create_private_file(partial))
    src = sqlite3.connect(f"file:{source.resolve()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(partial)
        try:
            def step(status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress(total - remaining, total)

            src.backup(dst, pages=1024, progress=step)
            dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained single file
        finally:
            dst.close()
        os.replace(partial, destination)
        _fsync_directory(destination.parent)
    except BaseException:
        for leftover in (partial, partial.with_name(partial.name + "-journal")):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
        raise
    finally:
        src.close()


def export_file(path: Path, filters: Any, make_renderer: Callable[[str], Any], write: Callable[[bytes], Any],
                progress: Callable[[int, int], None] | None = None) -> tuple[int, int, str | None]:
    """Write an export of the file, read-only, the way GET /v1/exports does (safe while serving).

    `make_renderer(project_id)` gives an exporting.Renderer. Returns (events written,
    head seq, head hash); the export covers the log up to the head at its start.
    """
    _check_database(path)
    conn = open_reader(path, busy_timeout_ms=5000, cache_mb=16)
    try:
        project_id = conn.execute("SELECT value FROM meta WHERE key = 'project_id'").fetchone()[0]
        try:  # read before the head: a checkpoint never covers more than the head read after it
            checkpoint = latest_checkpoint(conn)
        except sqlite3.OperationalError:  # a database no server of this version has opened yet
            checkpoint = None
        head_seq, head_hash = chain_head(conn)
        renderer = make_renderer(project_id)
        write(renderer.header())
        after: int | None = 0
        while after is not None and after < head_seq:
            data, after = export_chunk(conn, filters, None, after, head_seq, renderer.chunk)
            if data:
                write(data)
            if progress is not None:
                progress(after if after is not None else head_seq, head_seq)
        write(renderer.footer(head_seq, head_hash, checkpoint.note if checkpoint else None))
        return renderer.count, head_seq, head_hash
    finally:
        conn.close()
