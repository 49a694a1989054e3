"""Schema migrations: numbered .sql files, applied in order, tracked by PRAGMA user_version.

A migration may also have a Python step (`_STEPS`) for what SQL cannot compute; it runs
after the .sql file, in the same transaction, so a crash leaves the old version whole.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

from ...progress import Progress
from .. import migration_files
from ..keys import AHEAD_MS, BLOCK_SHIFT, event_keys

# Events read and keyed per statement while filling events_keys: bounds memory.
KEYS_CHUNK = 5000
# Events read per statement while listing those dated ahead (009).
AHEAD_CHUNK = 50_000


def available() -> list[tuple[int, str, str]]:
    return migration_files.available(__package__)


def fill_event_keys(conn: sqlite3.Connection, progress: Progress | None = None) -> int:
    """Migration 007: one events_keys row per event, rowid = seq. Returns the events keyed."""
    import json

    total = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    bar = progress or Progress("migration 007: keying events", total)
    bar.update(0, total)
    done, after = 0, 0
    while True:
        rows = conn.execute(
            "SELECT seq, organization, action, actor_id, targets FROM events WHERE seq > ? "
            "ORDER BY seq LIMIT ?", (after, KEYS_CHUNK)).fetchall()
        if not rows:
            break
        conn.executemany(
            "INSERT INTO events_keys (rowid, keys) VALUES (?, ?)",
            [(seq, event_keys(org, action, actor, json.loads(targets) if targets else None))
             for seq, org, action, actor, targets in rows])
        after = rows[-1][0]
        done += len(rows)
        bar.update(done)
    # One segment per chunk so far: merge them now rather than on the first appends.
    conn.execute("INSERT INTO events_keys (events_keys) VALUES ('optimize')")
    bar.finish()
    # The layout is checked before the version moves: one keys row per event, one summary
    # row per block of events.
    keyed = conn.execute("SELECT count(*) FROM events_keys").fetchone()[0]
    blocks = conn.execute("SELECT count(*) FROM event_blocks").fetchone()[0]
    wanted = conn.execute(f"SELECT count(DISTINCT seq >> {BLOCK_SHIFT}) FROM events").fetchone()[0]
    if keyed != total or done != total or blocks != wanted:
        raise RuntimeError(f"migration 007: {keyed} key rows and {blocks} blocks for {total} events "
                           f"in {wanted} blocks")
    return done


def fill_events_ahead(conn: sqlite3.Connection, progress: Progress | None = None) -> int:
    """Migration 009: list the events dated more than AHEAD_MS after their arrival, and make each
    block's max_below the latest occurred_at of the other events at or below it. Returns the
    events listed."""
    total = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    bar = progress or Progress("migration 009: events dated ahead", total)
    bar.update(0, total)
    done, after, ahead, running = 0, 0, 0, None
    bounds: list[tuple[int, int]] = []  # (max_below, block), in block order
    block, block_max = None, None

    def close_block() -> None:
        nonlocal running
        if block is not None and block_max is not None:
            running = block_max if running is None else max(running, block_max)
            bounds.append((running, block))
        elif block is not None and running is not None:
            bounds.append((running, block))

    while True:
        rows = conn.execute(
            "SELECT seq, occurred_at, received_at FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, AHEAD_CHUNK)).fetchall()
        if not rows:
            break
        listed = []
        for seq, occurred, received in rows:
            if seq >> BLOCK_SHIFT != block:
                close_block()
                block, block_max = seq >> BLOCK_SHIFT, None
            if occurred > received + AHEAD_MS:
                listed.append((seq, occurred))
            elif block_max is None or occurred > block_max:
                block_max = occurred
        conn.executemany("INSERT INTO events_ahead (seq, occurred_at) VALUES (?, ?)", listed)
        conn.executemany("UPDATE event_blocks SET max_below = ? WHERE block = ?", bounds)
        bounds.clear()
        ahead += len(listed)
        after = rows[-1][0]
        done += len(rows)
        bar.update(done)
    close_block()
    conn.executemany("UPDATE event_blocks SET max_below = ? WHERE block = ?", bounds)
    bar.finish()
    return ahead


_STEPS: dict[int, Callable[[sqlite3.Connection], object]] = {7: fill_event_keys, 9: fill_events_ahead}
# Migrations that shipped first as empty placeholders (user_version moved past them with
# nothing done): the object each creates tells whether a database really has it.
_CREATES = {7: "events_keys", 8: "retention_rules"}


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction. Returns the new version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    migrations = available()
    migration_files.refuse_newer(current, len(migrations))
    # A database made while 007 and 008 were placeholders is at version 8 without either:
    # apply them now, in order, before anything newer (keeping the version number).
    for number, _name, sql in migrations[:current]:
        created = _CREATES.get(number)
        if created and conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = ?",
                                    (created,)).fetchone()[0] == 0:
            _apply(conn, number, sql, bump=False)
    for number, _name, sql in migrations[current:]:
        _apply(conn, number, sql, bump=True)
    return len(migrations)


def _apply(conn: sqlite3.Connection, number: int, sql: str, *, bump: bool) -> None:
    step = _STEPS.get(number)
    version = f"PRAGMA user_version={number};" if bump else ""
    if step is None:
        # executescript commits first; the explicit BEGIN makes the script and
        # the version bump one atomic step.
        conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\n{version}\nCOMMIT;")
        return
    conn.executescript(f"BEGIN IMMEDIATE;\n{sql}")
    try:
        step(conn)
        if bump:
            conn.execute(f"PRAGMA user_version={number}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
