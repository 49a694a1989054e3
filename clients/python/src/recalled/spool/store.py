"""The spool file: a SQLite database in WAL mode, every commit with ``synchronous=FULL``.

Tables:

- ``outbox``: events accepted by ``emit()`` and not yet stored by the server. A sender
  *claims* rows by writing a lease (``lease_owner``, ``lease_until``) in a write
  transaction, so several processes sharing the file never send the same row at the same
  time; a lease of a crashed process expires, or is released at once when its process is
  known to be dead (same host, PID gone).
- ``dead_letters``: events the server refused for good, with the server's error.
- ``totals``: rows and bytes of both tables, kept by triggers, so the bound is checked in
  O(1) on every emit.

Rows carry a ``destination`` (a fingerprint of server URL + API key, never the key itself):
a sender claims only its own destination's rows.

Every call holds the package's fork guard (``_forksafe.guard()``) while it is inside SQLite.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .. import _forksafe
from ..errors import SpoolError, SpoolFullError

SCHEMA_VERSION = 1

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        destination TEXT NOT NULL,
        body BLOB NOT NULL,
        size INTEGER NOT NULL,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        hold_until REAL NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until REAL NOT NULL DEFAULT 0,
        last_error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_by_destination ON outbox(destination, id)",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY,
        destination TEXT NOT NULL,
        body BLOB NOT NULL,
        size INTEGER NOT NULL,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL,
        dead_at REAL NOT NULL,
        status INTEGER NOT NULL,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        details TEXT,
        request_id TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS totals (
        one INTEGER PRIMARY KEY CHECK (one = 1), rows INTEGER NOT NULL, bytes INTEGER NOT NULL)""",
    "INSERT OR IGNORE INTO totals VALUES (1, 0, 0)",
    """CREATE TRIGGER IF NOT EXISTS outbox_added AFTER INSERT ON outbox BEGIN
        UPDATE totals SET rows = rows + 1, bytes = bytes + NEW.size; END""",
    """CREATE TRIGGER IF NOT EXISTS outbox_removed AFTER DELETE ON outbox BEGIN
        UPDATE totals SET rows = rows - 1, bytes = bytes - OLD.size; END""",
    """CREATE TRIGGER IF NOT EXISTS dead_added AFTER INSERT ON dead_letters BEGIN
        UPDATE totals SET rows = rows + 1, bytes = bytes + NEW.size; END""",
    """CREATE TRIGGER IF NOT EXISTS dead_removed AFTER DELETE ON dead_letters BEGIN
        UPDATE totals SET rows = rows - 1, bytes = bytes - OLD.size; END""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
]


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, timezone.utc) if ts is not None else None


@dataclass(frozen=True)
class Row:
    id: int
    body: bytes
    attempts: int

    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


@dataclass(frozen=True)
class DeadLetter:
    """An event the server refused for good, with what the server said."""

    id: int
    destination: str
    event: dict[str, Any]
    created_at: datetime
    dead_at: datetime
    attempts: int
    status: int
    code: str
    message: str
    details: Any
    request_id: str | None


@dataclass(frozen=True)
class DestinationStatus:
    pending: int
    in_flight: int
    dead: int


@dataclass(frozen=True)
class SpoolStatus:
    path: str
    pending: int            # events waiting to be sent (in flight included)
    pending_bytes: int
    in_flight: int          # pending rows under a live lease right now
    due: int                # pending rows a sender may claim right now
    dead: int
    dead_bytes: int
    oldest_pending_at: datetime | None
    next_attempt_at: datetime | None
    destinations: dict[str, DestinationStatus] = field(default_factory=dict)


class SpoolDB:
    """One connection to the spool file. Not shared between threads without the guard."""

    def __init__(self, path: Path, busy_timeout: float = 10.0) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                # Created 0600 before SQLite opens it; the -wal and -shm files copy its mode.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            with _forksafe.guard():
                self.conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None,
                                            check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
                # FULL: emit() returns only once the row is on disk, even if the OS crashes.
                self.conn.execute("PRAGMA synchronous=FULL")
                self._ensure_schema()
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the spool at {path}: {exc}. Check that its directory is "
                             f"writable, or set SpoolConfig(path=...) / RECALLED_SPOOL_PATH.") from exc

    def _ensure_schema(self) -> None:
        (version,) = self.conn.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise SpoolError(f"the spool at {self.path} was written by a newer client (schema {version})")
        with self.transaction():
            for statement in _SCHEMA:
                self.conn.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once (BEGIN IMMEDIATE) so it never fails half-way
        on a lock upgrade; waits up to busy_timeout for other processes."""
        with _forksafe.guard():
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise SpoolError(f"the spool at {self.path} is busy or unwritable: {exc}") from exc
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self.conn.execute("ROLLBACK")
                raise SpoolError(f"could not commit to the spool at {self.path}: {exc}") from exc

    def read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with _forksafe.guard():
            try:
                return self.conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"could not read the spool at {self.path}: {exc}") from exc

    def close(self) -> None:
        with _forksafe.guard():
            self.conn.close()

    # --- emit -----------------------------------------------------------------------------

    def enqueue(self, destination: str, body: bytes, *, max_rows: int, max_bytes: int,
                drop_oldest: bool) -> tuple[int, list[Row]]:
        """Insert one event; returns its row id and the rows dropped to make room."""
        size = len(body)
        if size > max_bytes:
            raise SpoolFullError(f"the event is {size} bytes, more than the spool's max_bytes ({max_bytes})")
        now = time.time()
        dropped: list[Row] = []
        with self.transaction() as conn:
            rows, used = conn.execute("SELECT rows, bytes FROM totals").fetchone()
            while rows + 1 > max_rows or used + size > max_bytes:
                if not drop_oldest:
                    raise SpoolFullError(
                        f"the spool at {self.path} is full ({rows} events, {used} bytes; bounds "
                        f"{max_rows} events, {max_bytes} bytes). Is the server reachable? "
                        f"See `python -m recalled spool status --path {self.path}`.")
                victim = conn.execute(
                    "SELECT id, body, attempts, size FROM outbox WHERE lease_until <= ? ORDER BY id LIMIT 1",
                    (now,)).fetchone()
                table = "outbox"
                if victim is None:
                    victim = conn.execute(
                        "SELECT id, body, attempts, size FROM dead_letters ORDER BY id LIMIT 1").fetchone()
                    table = "dead_letters"
                if victim is None:
                    raise SpoolFullError(f"the spool at {self.path} is full of events being sent right now")
                conn.execute(f"DELETE FROM {table} WHERE id = ?", (victim[0],))
                dropped.append(Row(victim[0], victim[1], victim[2]))
                rows, used = rows - 1, used - victim[3]
            cursor = conn.execute(
                "INSERT INTO outbox (destination, body, size, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                (destination, body, size, now, now))
            row_id = cursor.lastrowid
        assert row_id is not None
        return row_id, dropped

    # --- sending --------------------------------------------------------------------------

    def release_dead_owners(self, is_dead: Callable[[str], bool]) -> int:
        """Free the leases of senders known to be gone, so their rows go out now rather than
        when the lease runs out."""
        now = time.time()
        owners = [o for (o,) in self.read(
            "SELECT DISTINCT lease_owner FROM outbox WHERE lease_owner IS NOT NULL AND lease_until > ?", (now,))]
        dead = [o for o in owners if is_dead(o)]
        if not dead:
            return 0
        released = 0
        with self.transaction() as conn:
            for owner in dead:
                released += conn.execute(
                    "UPDATE outbox SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ?",
                    (owner,)).rowcount
        return released

    def claim(self, destination: str, owner: str, *, lease_seconds: float, max_events: int,
              max_bytes: int) -> list[Row]:
        now = time.time()
        with self.transaction() as conn:
            found = conn.execute(
                "SELECT id, body, attempts FROM outbox WHERE destination = ? AND next_attempt_at <= ? "
                "AND lease_until <= ? ORDER BY id LIMIT ?", (destination, now, now, max_events)).fetchall()
            rows: list[Row] = []
            used = 0
            for row_id, body, attempts in found:
                if rows and used + len(body) + 1 > max_bytes:
                    break
                rows.append(Row(row_id, body, attempts))
                used += len(body) + 1
            if rows:
                conn.executemany("UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE id = ?",
                                 [(owner, now + lease_seconds, r.id) for r in rows])
        return rows

    def extend_lease(self, ids: list[int], owner: str, lease_seconds: float) -> None:
        until = time.time() + lease_seconds
        with self.transaction() as conn:
            conn.executemany("UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE id = ?",
                             [(owner, until, i) for i in ids])

    def ack(self, ids: list[int]) -> None:
        with self.transaction() as conn:
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def reschedule(self, ids: list[int], *, next_attempt_at: float, hold_until: float, error: str) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, hold_until = ?, "
                "lease_owner = NULL, lease_until = 0, last_error = ? WHERE id = ?",
                [(next_attempt_at, hold_until, error[:1000], i) for i in ids])

    def dead_letter(self, ids: list[int], error: dict[str, Any]) -> None:
        now = time.time()
        details = json.dumps(error.get("details")) if error.get("details") is not None else None
        with self.transaction() as conn:
            for row_id in ids:
                conn.execute(
                    "INSERT INTO dead_letters (id, destination, body, size, created_at, attempts, "
                    "dead_at, status, code, message, details, request_id) SELECT id, destination, body, size, "
                    "created_at, attempts + 1, ?, ?, ?, ?, ?, ? FROM outbox WHERE id = ?",
                    (now, int(error.get("status") or 0), str(error.get("code")), str(error.get("message")),
                     details, error.get("request_id"), row_id))
                conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def next_wakeup(self, destination: str) -> float | None:
        """When a row of this destination next becomes claimable (due, or its lease ends)."""
        (when,) = self.read(
            "SELECT MIN(MAX(next_attempt_at, lease_until)) FROM outbox WHERE destination = ?", (destination,))[0]
        return float(when) if when is not None else None

    # --- flush ----------------------------------------------------------------------------

    def last_id(self, destination: str) -> int | None:
        (last,) = self.read("SELECT MAX(id) FROM outbox WHERE destination = ?", (destination,))[0]
        return int(last) if last is not None else None

    def make_due(self, destination: str) -> None:
        """An explicit flush tries at once, except where the server asked for a wait."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute("UPDATE outbox SET next_attempt_at = MAX(?, hold_until) "
                         "WHERE destination = ? AND next_attempt_at > ?", (now, destination, now))

    def outlook(self, destination: str, up_to_id: int) -> tuple[int, int, float | None]:
        """(rows left, rows in flight, earliest next attempt) among rows up to ``up_to_id``."""
        now = time.time()
        left, flying, next_at = self.read(
            "SELECT COUNT(*), COALESCE(SUM(lease_until > ?), 0), MIN(next_attempt_at) FROM outbox "
            "WHERE destination = ? AND id <= ?", (now, destination, up_to_id))[0]
        return int(left), int(flying), next_at

    def pending(self, destination: str | None = None, up_to_id: int | None = None) -> int:
        sql, params = "SELECT COUNT(*) FROM outbox WHERE 1", list[Any]()
        if destination is not None:
            sql += " AND destination = ?"
            params.append(destination)
        if up_to_id is not None:
            sql += " AND id <= ?"
            params.append(up_to_id)
        return int(self.read(sql, params)[0][0])

    # --- operators ------------------------------------------------------------------------

    def status(self) -> SpoolStatus:
        now = time.time()
        pending, pending_bytes, in_flight, due, oldest, next_at = self.read(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(lease_until > ?), 0), "
            "COALESCE(SUM(lease_until <= ? AND next_attempt_at <= ?), 0), MIN(created_at), "
            "MIN(CASE WHEN lease_until <= ? THEN next_attempt_at END) FROM outbox", (now, now, now, now))[0]
        dead, dead_bytes = self.read("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM dead_letters")[0]
        per: dict[str, list[int]] = {}
        for dest, count, flying in self.read(
                "SELECT destination, COUNT(*), SUM(lease_until > ?) FROM outbox GROUP BY destination", (now,)):
            per.setdefault(dest, [0, 0, 0])[:2] = [count, flying]
        for dest, count in self.read("SELECT destination, COUNT(*) FROM dead_letters GROUP BY destination"):
            per.setdefault(dest, [0, 0, 0])[2] = count
        return SpoolStatus(
            path=str(self.path), pending=pending, pending_bytes=pending_bytes, in_flight=in_flight, due=due,
            dead=dead, dead_bytes=dead_bytes, oldest_pending_at=_utc(oldest), next_attempt_at=_utc(next_at),
            destinations={d: DestinationStatus(*v) for d, v in sorted(per.items())})

    def dead_letters(self, limit: int | None = None, destination: str | None = None) -> list[DeadLetter]:
        sql = ("SELECT id, destination, body, created_at, dead_at, attempts, status, code, message, details, "
               "request_id FROM dead_letters")
        params: list[Any] = []
        if destination is not None:
            sql += " WHERE destination = ?"
            params.append(destination)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [DeadLetter(id=r[0], destination=r[1], event=json.loads(r[2]), created_at=_utc(r[3]) or _utc(0),  # type: ignore[arg-type]
                           dead_at=_utc(r[4]), attempts=r[5], status=r[6], code=r[7],  # type: ignore[arg-type]
                           message=r[8], details=json.loads(r[9]) if r[9] else None, request_id=r[10])
                for r in self.read(sql, params)]

    def retry_dead(self, ids: list[int] | None = None, retarget: str | None = None,
                   destination: str | None = None) -> int:
        """Move dead letters back to the outbox (``ids``, or those of ``destination``, or all);
        ``retarget`` hands them to another destination (after the key they were refused with
        was replaced)."""
        now = time.time()
        where, params = self._dead_filter(ids, destination)
        with self.transaction() as conn:
            moved = conn.execute(
                "INSERT INTO outbox (id, destination, body, size, created_at, attempts, next_attempt_at) "
                f"SELECT id, COALESCE(?, destination), body, size, created_at, 0, ? FROM dead_letters{where}",
                [retarget, now, *params]).rowcount
            conn.execute(f"DELETE FROM dead_letters{where}", params)
        return moved

    @staticmethod
    def _dead_filter(ids: list[int] | None, destination: str | None) -> tuple[str, list[Any]]:
        if ids:
            return f" WHERE id IN ({','.join('?' * len(ids))})", list(ids)
        if destination is not None:
            return " WHERE destination = ?", [destination]
        return "", []

    def purge_dead(self, ids: list[int] | None = None, destination: str | None = None) -> int:
        where, params = self._dead_filter(ids, destination)
        with self.transaction() as conn:
            return conn.execute(f"DELETE FROM dead_letters{where}", params).rowcount
