"""CLI-side operations on a database file that a running server may also hold open."""

from __future__ import annotations

import hmac
import sqlite3
from pathlib import Path
from typing import Any, Callable

from ...errors import ConfigError
from .connection import open_reader
from .merkle import latest_checkpoint
from .reads import chain_head, export_chunk
from .store import scan_chain


def _check_database(path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"no database at {path}; pass --db PATH (or set RECALLED_DB)")


def verify_file(path: Path, secret: bytes, from_seq: int | None, to_seq: int | None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    _check_database(path)
    conn = open_reader(path, busy_timeout_ms=5000, cache_mb=64)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        check = hmac.new(secret, b"recalled-lite secret check", "sha256").hexdigest()
        if not hmac.compare_digest(meta.get("secret_check", ""), check):
            raise ConfigError("this secret is not the one the database was created with; "
                              "point --config/RECALLED_SECRET at the right secret file")
        return scan_chain(conn, meta["project_id"], secret, from_seq, to_seq, progress)
    finally:
        conn.close()


def backup_file(source: Path, destination: Path,
                progress: Callable[[int, int], None] | None = None) -> None:
    """A consistent online copy through SQLite's backup API (safe while serving)."""
    _check_database(source)
    if destination.exists():
        raise ConfigError(f"{destination} already exists; choose a new path or remove it first")
    destination.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source.resolve()}?mode=ro", uri=True)
    dst = sqlite3.connect(destination)
    try:
        def step(status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress(total - remaining, total)

        src.backup(dst, pages=1024, progress=step)
        dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained single file
    finally:
        dst.close()
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
