"""Opening connections, with every pragma in one place and the reason for each."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def sqlite_version() -> str:
    return sqlite3.sqlite_version


def open_writer(path: Path, *, synchronous: str, busy_timeout_ms: int, cache_mb: int,
                max_page_count: int = 0) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, because one
    # transaction spans many requests (group commit).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # INCREMENTAL: pages freed by a retention purge can be given back to the file system
    # (PRAGMA incremental_vacuum, after each purge job). It only takes effect on a file with
    # no tables yet, and must come before journal_mode=WAL to stick: new databases get it, an
    # existing one keeps its mode until an operator runs VACUUM (docs/retention.md).
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    # WAL: readers never block the writer and the writer never blocks readers.
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at every COMMIT, so an acknowledged event
    # survives power loss, not just a process crash. Configurable, FULL by default.
    conn.execute(f"PRAGMA synchronous={synchronous}")
    # How long to wait for a lock held by another process (a backup tool, the
    # sqlite3 CLI) before the write fails and is answered 503.
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    # Negative = KiB. Bounded so RSS stays predictable.
    conn.execute(f"PRAGMA cache_size={-int(cache_mb) * 1024}")
    # Checkpoint (copy the WAL into the database file) every ~40 MB of WAL, not the
    # default ~4 MB: every small group commit rewrites the same hot pages (the
    # b-trees' right edges, the FTS structure record), and a longer WAL copies each
    # of them once per checkpoint instead of ten times. Single-event intake, in
    # process: ~5.2k -> ~6.1k req/s, writer system time ~39 -> ~29 us/event.
    # Durability is unchanged: with synchronous=FULL the WAL is fsynced at every
    # COMMIT whatever its length.
    conn.execute("PRAGMA wal_autocheckpoint=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    # Temp b-trees (sorts) in memory: faster, and no stray temp files.
    conn.execute("PRAGMA temp_store=MEMORY")
    # Zero deleted content and freed pages as they are freed, so no stale copy
    # of a row (left behind by a b-tree split or an FTS5 segment merge) survives
    # in the file. Erasure relies on it: with this off, erased personal data
    # can linger in free space (tests/test_erasure.py greps the file). Debian
    # builds SQLite with this on by default, so there it changes nothing; the
    # pragma makes it hold on every build.
    conn.execute("PRAGMA secure_delete=ON")
    # database.max_page_count: a cap on the file, per connection (not stored in it). Past it
    # SQLite answers SQLITE_FULL, which the writer maps to 503 like a full disk.
    if max_page_count > 0:
        conn.execute(f"PRAGMA max_page_count={int(max_page_count)}")
    return conn


def open_reader(path: Path, *, busy_timeout_ms: int, cache_mb: int) -> sqlite3.Connection:
    # mode=ro: a reader can never write, whatever a bug asks of it.
    uri = f"file:{path.resolve()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    conn.execute(f"PRAGMA cache_size={-int(cache_mb) * 1024}")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA query_only=ON")
    return conn
