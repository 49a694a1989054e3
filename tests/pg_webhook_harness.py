"""A bare-hands stand-in for the PostgresStore, for unit tests of the webhook SQL only.

It gives storage/postgres/webhooks.py exactly the store surface it uses (write / read /
add_intake_hook / add_commit_listener / writer.state, savepoint_listeners, reload_state /
url), with one autocommit connection: every write is its own transaction (or a savepoint of
an open ``group()``), commit listeners run after COMMIT. Events are inserted by hand under
the chain-head lock, and the intake hooks run in that transaction, like an append would.
It is NOT the store: the server tests (tests/test_pg_webhooks.py) run the real one.
"""

from __future__ import annotations

import contextlib
import hashlib
from types import SimpleNamespace
from typing import Any, Callable

import psycopg

from recalled_lite.ids import ulids
from recalled_lite.storage.base import EventRecord
from recalled_lite.storage.postgres.migrate import migrate
from recalled_lite.timefmt import now_ms

SECRET = b"s" * 32
EVENT_COLUMNS = (
    "seq, id, organization, action, actor_type, actor_id, actor_name, actor_email, targets, metadata, "
    "ip_address, user_agent, occurred_at, received_at, idempotency_key, prev_hash, hash, signature"
)


def migrated(url: str) -> None:
    with psycopg.connect(url) as conn:
        migrate(conn)


class HarnessStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        self.rconn = psycopg.connect(url, autocommit=True)
        self.writer = SimpleNamespace(state={"secret": SECRET}, savepoint_listeners=[],
                                      reload_state=lambda conn: None)
        self.hooks: list[Callable[[Any, list[EventRecord]], None]] = []
        self.listeners: list[Callable[[], None]] = []
        self._group = 0

    def close(self) -> None:
        self.conn.close()
        self.rconn.close()

    def add_intake_hook(self, hook: Callable[[Any, list[EventRecord]], None]) -> None:
        self.hooks.append(hook)

    def add_commit_listener(self, fn: Callable[[], None]) -> None:
        self.listeners.append(fn)

    @contextlib.contextmanager
    def group(self):
        """An open group transaction: the writes inside are savepoints; COMMIT at the end."""
        with self.conn.transaction():
            self._group += 1
            try:
                yield self.conn
            finally:
                self._group -= 1
        self._committed()

    def _committed(self) -> None:
        for fn in self.listeners:
            fn()

    def write_sync(self, fn: Callable[..., Any], *args: Any, on_commit: Any = None, audit: Any = None) -> Any:
        marks = [mark() for mark, _ in self.writer.savepoint_listeners]
        try:
            with self.conn.transaction():
                result = fn(self.conn, *args)
        except BaseException:
            for (_, rewind), mark in zip(self.writer.savepoint_listeners, marks):
                rewind(mark)
            raise
        if not self._group:
            self._committed()
        return result

    async def write(self, fn: Callable[..., Any], *args: Any, on_commit: Any = None, audit: Any = None) -> Any:
        return self.write_sync(fn, *args)

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self.rconn.transaction():
            return fn(self.rconn, *args)

    def append(self, actions: list[str], organization: str | None = None) -> list[EventRecord]:
        """Events inserted by hand, numbered under the chain-head lock, hooks in the same txn."""
        def op(conn: Any) -> list[EventRecord]:
            seq, prev = conn.execute("SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE").fetchone()
            now = now_ms()
            records = []
            for action in actions:
                seq += 1
                digest = hashlib.sha256(f"{seq}{action}".encode()).hexdigest()
                record = EventRecord(seq, "evt_" + ulids.new(), organization, action, "user", "u1", None, None,
                                     "[]", "{}", None, None, now, now, None, prev, digest, "hmac-sha256:" + digest)
                conn.execute(
                    f"INSERT INTO events ({EVENT_COLUMNS}, personal_digest) VALUES "
                    "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", (*record, digest))
                records.append(record)
                prev = digest
            conn.execute("UPDATE chain_head SET seq = %s, hash = %s WHERE id = 1", (seq, prev))
            for hook in self.hooks:
                hook(conn, records)
            return records
        return self.write_sync(op)
