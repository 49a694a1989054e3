"""One corpus, stored twice: through a real SqliteStore, and copied row for row (the same
seqs, ids and hashes) into a fresh PostgreSQL database migrated to the current schema, with
its filter keys and full-text document computed the way PostgreSQL intake computes them.

The read-side functions of storage/postgres run on that database exactly as PostgresStore
runs them (`fn(conn, *args)` in a REPEATABLE READ transaction), so the tests compare the two
backends' answers to the same requests on the same rows.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path
from typing import Any, Callable

import msgspec

from recalled_lite.config import EventsConfig
from recalled_lite.intake import prepare_resolved
from recalled_lite.schemas import EventIn
from recalled_lite.storage.fts import fts_columns
from recalled_lite.storage.keys import event_keys
from recalled_lite.storage.sqlite.store import SqliteStore

SECRET = b"r" * 32
BASE_MS = 1_760_000_000_000
DAY = 86_400_000

# Words with accents, case, punctuation, tokenchars, and a few non-Latin scripts, so the
# tokenizer's folding and splitting are exercised by every query table.
WORDS = ["invoice", "Invoice", "INVOICE", "paid", "refund", "café", "cafe", "Café-au-lait", "naïve",
         "résumé", "über", "Straße", "ſtraße", "µ-service", "user@example.com", "snake_case_word",
         "dash-word", "x", "42", "inv_42", "Ωmega", "日本語", "東京", "İstanbul", "déjà-vu",
         "hello.world", "a.b.c", "release-2026", "ÉCOLE", "École", "naive", "resume", "q&a",
         "don't", "C++", "50%", "§7", "→arrow", "«quoted»", "emoji🙂word"]
ORGS = ["org_acme", "org_globex", "org_initech", None]
ACTIONS = ["invoice.paid", "invoice.created", "invoice.refunded", "user.login", "user.logout",
           "user.updated", "invoices.sync", "report.exported"]
ACTORS = ["user_1", "user_2", "user_3", "user@example.com", "svc-billing", None]
TARGET_TYPES = ["invoice", "user", "report"]


def corpus(n: int = 400, seed: int = 7) -> list[dict[str, Any]]:
    """Event bodies as a client sends them: some back-dated, many sharing occurred_at."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        org = rng.choice(ORGS)
        body: dict[str, Any] = {"action": rng.choice(ACTIONS)}
        if org is not None:
            body["organization"] = org
        actor = rng.choice(ACTORS)
        if actor is not None:
            body["actor"] = {"id": actor, "type": "user", "name": rng.choice(WORDS) + " " + rng.choice(WORDS),
                             "email": f"{actor.split('@')[0]}@example.com"}
        if rng.random() < 0.8:
            body["targets"] = [{"type": rng.choice(TARGET_TYPES), "id": f"inv_{rng.randrange(30)}",
                                "name": rng.choice(WORDS)} for _ in range(rng.randrange(1, 3))]
        if rng.random() < 0.9:
            body["metadata"] = {"note": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 6))),
                                "amount": rng.randrange(1000), "nested": {"tag": rng.choice(WORDS)}}
        # Back-dated and shared times: list order is not seq order.
        offset = rng.choice([0, 0, -rng.randrange(30) * DAY, rng.randrange(5) * 1000])
        body["occurred_at"] = _iso(BASE_MS + (i // 3) * 60_000 + offset)
        out.append(body)
    return out


def _iso(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def prepared(body: dict[str, Any], received_at: int) -> Any:
    event = msgspec.convert(body, EventIn)
    return prepare_resolved(event, body["action"], body.get("organization"), EventsConfig(), received_at)


def build_sqlite(path: Path, bodies: list[dict[str, Any]]) -> None:
    """The corpus through a real SqliteStore (closed again: tests open it as they need)."""

    async def main() -> None:
        store = SqliteStore(path, secret=SECRET)
        store.start(asyncio.get_running_loop())
        try:
            for i in range(0, len(bodies), 50):
                await store.append_events([prepared(b, BASE_MS + 10_000_000 + i + j)
                                           for j, b in enumerate(bodies[i:i + 50])])
        finally:
            store.close()

    asyncio.run(main())


def run_sqlite(path: Path, method: str, *args: Any) -> Any:
    """One SqliteStore method, on a started store (the real read path)."""

    async def main() -> Any:
        store = SqliteStore(path, secret=SECRET)
        store.start(asyncio.get_running_loop())
        try:
            return await getattr(store, method)(*args)
        finally:
            store.close()

    return asyncio.run(main())


_COPY_COLUMNS = ("seq, id, organization, action, actor_type, actor_id, actor_name, actor_email, targets, "
                 "metadata, ip_address, user_agent, occurred_at, received_at, idempotency_key, request_digest, "
                 "personal_salt, personal_digest, prev_hash, hash, signature, erased_at")


def pg_row_extras(row: dict[str, Any]) -> tuple[list[str], str]:
    """(keys, search document) of a stored row, as PostgreSQL intake and erasure write them."""
    from recalled_lite.storage.postgres.search_doc import search_document

    targets = msgspec.json.decode(row["targets"]) if row["targets"] else None
    keys = event_keys(row["organization"], row["action"], row["actor_id"], targets).split()
    if row["erased_at"] is not None:
        from recalled_lite.storage.postgres.erasure import erased_fts_columns

        fts = erased_fts_columns(row["action"], row["organization"], row["targets"])
    else:
        fts = fts_columns(row["action"], row["actor_id"], row["actor_name"], row["actor_email"],
                          row["organization"], row["targets"], row["metadata"])
    return keys, search_document(fts)


def copy_to_pg(sqlite_path: Path, url: str) -> None:
    import psycopg

    from recalled_lite.storage.postgres.migrate import available, migrate

    if [n for n, _, _ in available()][:3] != [1, 2, 3]:
        import pytest

        pytest.skip("the PostgreSQL schema needs 002_webhooks.sql (wip/pg-webhooks) before 003")
    src = sqlite3.connect(sqlite_path)
    src.row_factory = sqlite3.Row
    rows = [dict(r) for r in src.execute(f"SELECT {_COPY_COLUMNS} FROM events ORDER BY seq")]
    src.close()
    with psycopg.connect(url) as conn:
        migrate(conn)
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO events ({_COPY_COLUMNS}, keys, search) VALUES "
                f"({', '.join(['%s'] * 22)}, %s::text[], %s::tsvector)",
                [(*[r[c.strip()] for c in _COPY_COLUMNS.split(",")], *pg_row_extras(r)) for r in rows])
        if rows:
            conn.execute("UPDATE chain_head SET seq = %s, hash = %s, tree_size = %s WHERE id = 1",
                         (rows[-1]["seq"], rows[-1]["hash"], rows[-1]["seq"]))
        conn.commit()


def pg_read(url: str, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(conn, *args)` as PostgresStore.read runs it: its own REPEATABLE READ transaction."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            return fn(conn, *args)
        finally:
            conn.rollback()


def pg_write(url: str, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(conn, *args)` in one committed transaction, as the writer runs an op."""
    import psycopg

    with psycopg.connect(url) as conn:
        result = fn(conn, *args)
        conn.commit()
        return result


def with_sqlite(path: Path, body: Callable[[SqliteStore], Any]) -> Any:
    """`await body(store)` on a started SqliteStore (its real write and read paths)."""

    async def main() -> Any:
        store = SqliteStore(path, secret=SECRET)
        store.start(asyncio.get_running_loop())
        try:
            return await body(store)
        finally:
            store.close()

    return asyncio.run(main())


def export_rows(fetch: Callable[[int, int], tuple[list[Any], int | None]], upto: int) -> list[tuple]:
    rows, after = [], 0
    while after is not None:
        chunk, after = fetch(after, upto)
        rows += [tuple(r) for r in chunk]
    return rows


def drop_pg(url: str) -> None:
    """tests/pg_support.drop_database, retried: WITH (FORCE) cannot end a session of another
    role (seen: an autovacuum worker right after a bulk UPDATE), which ends by itself soon."""
    import time

    import psycopg

    from pg_support import drop_database

    for attempt in range(40):
        try:
            return drop_database(url)
        except psycopg.errors.InsufficientPrivilege:
            if attempt == 39:
                raise
            time.sleep(0.25)


class ServerPair:
    """A SQLite server and a PostgreSQL server (`serve --db postgresql://...` on a fresh
    database, whatever RECALLED_TEST_BACKEND says), fed the same events in the same requests,
    so the same seqs name the same events on both."""

    def __init__(self, root: Path, bodies: list[dict[str, Any]]) -> None:
        from conftest import ServerProcess

        self.lite = ServerProcess(root / "lite", backend="sqlite").start()
        try:
            self.pg = ServerProcess(root / "pg", backend="postgres").start()
        except BaseException:
            self.lite.kill()
            raise
        for srv in (self.lite, self.pg):
            with srv.client() as c:
                for i in range(0, len(bodies), 100):
                    r = c.post("/v1/events/batch", json={"events": bodies[i:i + 100]})
                    assert r.status_code == 200, r.text

    @property
    def servers(self) -> tuple[Any, Any]:
        return self.lite, self.pg

    def get_both(self, path: str, params: dict[str, Any] | None = None, key: str | None = "admin",
                 keys: tuple[str | None, str | None] | None = None) -> tuple[Any, Any]:
        out = []
        for srv, k in zip(self.servers, keys or (key, key)):
            with srv.client(k) as c:
                out.append(c.get(path, params=params))
        return out[0], out[1]

    def walk(self, srv: Any, path: str, params: dict[str, Any], key: str | None = "admin") -> list[int]:
        """Every page's seqs, following nextCursor."""
        seqs: list[int] = []
        params = dict(params)
        with srv.client(key) as c:
            while True:
                r = c.get(path, params=params)
                assert r.status_code == 200, r.text
                body = r.json()
                seqs += [e["seq"] for e in body["data"]]
                # A tailing page always has a nextCursor (it continues after its last event).
                if not body.get("nextCursor") or not body["data"]:
                    return seqs
                params.pop("after_seq", None)
                params["cursor"] = body["nextCursor"]

    def close(self) -> None:
        self.lite.drop_database()
        self.pg.drop_database()
