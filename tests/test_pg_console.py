"""The console's storage on PostgreSQL, through a real PostgresStore: sessions (create, load,
touch never backwards, delete, purge of idle ones and of revoked keys' ones), one-time links
(peek, redeem once, expiry), verification records, key usage, the chain record behind the
wall, and the webhook figures (delegated to the webhook storage)."""

from __future__ import annotations

import asyncio

import pytest

from recalled_lite.auth import new_key_record
from recalled_lite.storage.base import ChainVerificationRecord, ConsoleSession
from recalled_lite.storage.postgres.store import PostgresStore
from pg_reads_support import SECRET, corpus, drop_pg, prepared
from pg_support import create_database


@pytest.fixture
def url():
    u = create_database("console")
    try:
        yield u
    finally:
        drop_pg(u)


def run(url, body, before=None):
    async def main():
        store = PostgresStore(url, secret=SECRET)
        if before is not None:
            before(store)  # as the CLI does: the *_sync methods on a store not started
        store.start(asyncio.get_running_loop())
        try:
            return await body(store)
        finally:
            store.close()

    return asyncio.run(main())


def test_sessions_links_and_verifications(url):
    async def body(store):
        _, key = new_key_record("console", frozenset({"admin"}), None)
        await store.create_key(key)
        _, revoked = new_key_record("old", frozenset({"admin"}), None)
        await store.create_key(revoked)
        await store.create_console_session(ConsoleSession("h1", key.id, 100, 100))
        await store.create_console_session(ConsoleSession("h2", key.id, 100, 100))
        await store.create_console_session(ConsoleSession("h3", revoked.id, 100, 900))
        assert await store.load_console_session("h1") == ConsoleSession("h1", key.id, 100, 100)
        assert await store.load_console_session("nope") is None
        await store.touch_console_sessions({"h1": 500, "h2": 50})
        assert (await store.load_console_session("h1")).last_seen_at == 500
        assert (await store.load_console_session("h2")).last_seen_at == 100  # never backwards
        await store.revoke_key(revoked.id, None)
        # h2 is idle (seen before 200); h3 belongs to a revoked key.
        assert await store.purge_console_sessions(200, 1000) == 2
        assert await store.load_console_session("h1") is not None
        assert await store.load_console_session("h3") is None
        await store.delete_console_sessions(["h1"])
        assert await store.load_console_session("h1") is None

        assert await store.redeem_console_link("l1", 50, consume=False) == "key_any"
        assert await store.redeem_console_link("l1", 50, consume=True) == "key_any"
        assert await store.redeem_console_link("l1", 60, consume=True) is None  # once only
        assert await store.redeem_console_link("l2", 50, consume=True) is None  # expired
        # Concurrent redemptions of one link from two instances: exactly one wins.
        other = PostgresStore(url, secret=SECRET)
        other.start(asyncio.get_running_loop())
        try:
            won = await asyncio.gather(*[s.redeem_console_link("l3", 70, consume=True)
                                         for s in (store, other) * 3])
        finally:
            other.close()
        assert won.count("key_any") == 1 and won.count(None) == 5

        assert await store.last_chain_verification() is None
        for i, valid in enumerate([True, False], start=1):
            await store.record_chain_verification(ChainVerificationRecord(
                f"ver_{i}", 1, 2, valid, 10 * i, 3, "sha256:x",
                None if valid else {"seq": 2, "id": None, "reason": "hash mismatch"}, key.id))
        last = await store.last_chain_verification()
        assert last.id == "ver_2" and last.valid is False and last.first_invalid["reason"] == "hash mismatch"

        await store.record_key_usage({key.id: 5000})
        await store.record_key_usage({key.id: 4000})
        assert store.key_by_id(key.id).last_used_at == 5000
        assert store.key_by_id("key_missing") is None
        return True

    def links(store):
        for token, expires in [("l1", 1000), ("l2", 20), ("l3", 1000)]:
            store.create_console_link_sync(token, "key_any", 10, expires)

    assert run(url, body, before=links)


def test_chain_record_and_webhook_figures(url):
    async def body(store):
        (result,) = await store.append_events([prepared(corpus(1, seed=2)[0] | {"organization": "org_a"}, 1_800_000_000_000)])
        event = result.event
        record = await store.get_event_chain_record(event.id, None)
        assert record.seq == event.seq and record.hash == event.hash and record.personal_salt is not None
        assert await store.get_event_chain_record(event.id, "org_a") is not None
        assert await store.get_event_chain_record(event.id, "org_b") is None  # the wall
        assert await store.webhook_backlog() == {}
        return True

    assert run(url, body)
