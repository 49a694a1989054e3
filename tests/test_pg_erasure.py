"""Erasure on PostgreSQL changes exactly what it changes on SQLite: the same rows, field by
field, after erasing the same actor; the actor's text is no longer searchable while the
event stays findable by action, organization and target; the append-only trigger refuses any
other UPDATE; a legal hold refuses the erasure; chunks never erase (or count) a row twice.
"""

from __future__ import annotations

import psycopg
import pytest

from recalled_lite.ids import new_id
from recalled_lite.retention import Hold, LegalHoldActive
from recalled_lite.search_query import parse_search_query
from recalled_lite.storage.filters import ListFilters
from recalled_lite.storage.postgres import erasure, reads, retention
from pg_reads_support import (
    build_sqlite, copy_to_pg, drop_pg, corpus, export_rows, pg_read, pg_write, run_sqlite, with_sqlite,
)
from pg_support import create_database

ERASED_AT = 1_790_000_000_000


@pytest.fixture
def both(tmp_path):
    path = tmp_path / "e.db"
    build_sqlite(path, corpus(300, seed=5))
    url = create_database("erase")
    try:
        copy_to_pg(path, url)
        yield path, url
    finally:
        drop_pg(url)


def _erase_pg(url, actor, org, chunk):
    total = 0
    while True:
        if chunk is None:  # what ErasureStore.erase_actor runs per write op
            done = pg_write(url, retention.erase_chunk_unless_held, actor, org, ERASED_AT)
        else:  # smaller chunks, so a walk over several is exercised
            done = pg_write(url, erasure.erase_chunk, actor, org, ERASED_AT, chunk)
        total += done
        if done < (chunk or erasure.ERASE_CHUNK):
            return total


@pytest.mark.parametrize("actor, org, chunk", [("user_1", None, None), ("user_2", "org_acme", None),
                                               ("user@example.com", None, 7), ("nobody", None, None)])
def test_the_same_rows_as_sqlite_after_erasure(both, actor, org, chunk):
    path, url = both
    lite_count = with_sqlite(path, lambda s: s.erase_actor(actor, org, ERASED_AT))
    pg_count = _erase_pg(url, actor, org, chunk)
    assert pg_count == lite_count
    assert (actor == "nobody") == (pg_count == 0)
    lite = export_rows(lambda a, u: run_sqlite(path, "export_chunk", ListFilters(), None, a, u, list), 10_000)
    pg = export_rows(lambda a, u: pg_read(url, reads.export_chunk, ListFilters(), None, a, u, list), 10_000)
    assert pg == lite
    # Again: nothing left to erase, nothing counted twice.
    assert _erase_pg(url, actor, org, chunk) == 0


def test_erased_text_is_not_searchable_but_the_event_is(both):
    path, url = both
    before = pg_read(url, reads.list_page, ListFilters(actor_id="user_3", limit=500), None)[0]
    assert before
    probe = before[0]
    assert _erase_pg(url, "user_3", None, None) == len(before)
    with_sqlite(path, lambda s: s.erase_actor("user_3", None, ERASED_AT))
    for q in ["user_3", "actor:user_3", "actor:[deleted]", f"action:{probe.action}", "deleted",
              "target:invoice", "invoice", "cafe", '"user_3"']:
        query = parse_search_query(q)
        lite = run_sqlite(path, "search_events", query, None, 500, None)
        pg = pg_read(url, reads.search_page, query, None, 500, None)
        assert [e.id for e in pg[0]] == [e.id for e in lite[0]], q
    assert pg_read(url, reads.search_page, parse_search_query("user_3"), None, 500, None)[0] == []
    assert not pg_read(url, reads.list_page, ListFilters(actor_id="user_3"), None)[0]
    found = pg_read(url, reads.search_page, parse_search_query(f"action:{probe.action}"), None, 500, None)[0]
    erased = next(e for e in found if e.id == probe.id)
    assert erased.actor_id == "[deleted]" and erased.metadata is None and erased.ip_address is None
    with psycopg.connect(url) as conn:
        keys, salt, digest = conn.execute("SELECT keys, personal_salt, request_digest FROM events WHERE id = %s",
                                          (probe.id,)).fetchone()
    assert salt is None and digest is None
    from recalled_lite.storage.keys import key

    assert key("a", "user_3") not in keys and key("a", "[deleted]") in keys


def test_the_trigger_allows_only_the_erasure_update(both):
    _, url = both
    with psycopg.connect(url) as conn:
        for sql in ["UPDATE events SET action = 'x' WHERE seq = 5",
                    "UPDATE events SET metadata = NULL WHERE seq = 5",
                    "UPDATE events SET actor_id = 'someone', erased_at = 1, personal_salt = NULL, metadata = NULL, "
                    "ip_address = NULL, user_agent = NULL WHERE seq = 5",
                    "DELETE FROM events WHERE seq = 5"]:
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(sql)
            conn.rollback()


def test_a_legal_hold_refuses_the_erasure(both):
    _, url = both
    hold = Hold(new_id("hold"), "org_globex", "user_1", "invoice.*", "litigation", 1, None)
    pg_write(url, retention.insert_hold, hold)
    with_actor = pg_read(url, reads.list_page, ListFilters(actor_id="user_1", organization="org_globex",
                                                           action="invoice.*"), None)[0]
    assert with_actor  # the hold shields something
    with pytest.raises(LegalHoldActive) as raised:
        pg_write(url, retention.erase_chunk_unless_held, "user_1", None, ERASED_AT)
    assert raised.value.hold_id == hold.id
    # Another organization's events of the same actor are not shielded.
    assert pg_write(url, retention.erase_chunk_unless_held, "user_1", "org_acme", ERASED_AT) > 0
    pg_write(url, retention.release_hold, hold.id, None, 2)
    assert pg_write(url, retention.erase_chunk_unless_held, "user_1", None, ERASED_AT) > 0


def test_erasure_through_both_servers(tmp_path):
    from pg_reads_support import ServerPair

    pair = ServerPair(tmp_path, corpus(200, seed=8))
    try:
        counts = []
        for srv in pair.servers:
            with srv.client() as c:
                r = c.delete("/v1/actors/user_2")
                assert r.status_code == 200, r.text
                counts.append(r.json()["data"]["anonymized_events"])
                again = c.delete("/v1/actors/user_2")
                assert again.json()["data"]["anonymized_events"] == 0
                verified = c.get("/v1/events/verify").json()["data"]
                assert verified["valid"] is True, verified
        assert counts[0] == counts[1] > 0
        for q in ["user_2", "actor:user_2", "actor:[deleted]", "recalled.actor.erased", "action:recalled.*"]:
            lite = pair.walk(pair.lite, "/v1/events/search", {"q": q, "limit": 50})
            pg = pair.walk(pair.pg, "/v1/events/search", {"q": q, "limit": 50})
            assert pg == lite, q
        assert pair.walk(pair.pg, "/v1/events/search", {"q": "user_2"}) == []
        audit_pg = pair.walk(pair.pg, "/v1/events", {"action": "recalled.actor.erased"})
        assert len(audit_pg) == 2  # each request is audited, the one that erased nothing too
        assert audit_pg == pair.walk(pair.lite, "/v1/events", {"action": "recalled.actor.erased"})
    finally:
        pair.close()


def test_two_instances_erasing_one_actor_erase_each_event_once():
    """Two PostgresStores on one database erase the same actor at once, chunk by chunk: the
    counts add up to the actor's events, every one is erased, none is counted twice."""
    import asyncio

    from recalled_lite.storage.postgres.store import PostgresStore
    from pg_reads_support import SECRET, prepared

    url = create_database("erase2")
    bodies = [{"action": "doc.viewed", "organization": f"org_{i % 3}",
               "actor": {"id": "busy_actor", "name": "Busy Actor", "email": "busy@example.com"},
               "metadata": {"note": f"secret note {i}"}} for i in range(700)]
    bodies += [{"action": "doc.viewed", "actor": {"id": "someone_else"}} for _ in range(50)]

    async def main():
        stores = [PostgresStore(url, secret=SECRET) for _ in range(2)]
        for s in stores:
            s.start(asyncio.get_running_loop())
        try:
            for i in range(0, len(bodies), 100):
                await stores[i % 2].append_events([prepared(b, 1_800_000_000_000) for b in bodies[i:i + 100]])
            counts = await asyncio.gather(*[s.erase_actor("busy_actor", None, ERASED_AT) for s in stores])
            left = await stores[0].list_events(ListFilters(actor_id="busy_actor"), None)
            erased = await stores[1].list_events(ListFilters(actor_id="[deleted]", limit=1000), None)
            other = await stores[1].list_events(ListFilters(actor_id="someone_else", limit=1000), None)
            return counts, left, erased, other
        finally:
            for s in stores:
                s.close()

    try:
        counts, left, erased, other = asyncio.run(main())
        assert sum(counts) == 700 and left == ([], False)
        assert len(erased[0]) == 700 and all(e.metadata is None for e in erased[0])
        assert len(other[0]) == 50
    finally:
        drop_pg(url)


def test_the_audit_hook_counts_every_chunk_and_runs_once():
    """300 events (three chunks): the audit hook prepares once, with the total, in the chunk
    that finishes the erasure; its event is appended in that chunk's transaction."""
    import asyncio

    from recalled_lite.storage.postgres.store import PostgresStore
    from pg_reads_support import SECRET, prepared

    url = create_database("eraudit")

    class Recording:
        def __init__(self):
            self.prepared, self.stored = [], []

        def begin(self):
            pass

        def prepare(self, count):
            self.prepared.append(count)
            return [prepared({"action": "recalled.actor.erased", "metadata": {"count": count}}, 1_800_000_000_000)]

        def committed(self, records):
            self.stored += records

    async def main(hook):
        store = PostgresStore(url, secret=SECRET)
        store.start(asyncio.get_running_loop())
        try:
            await store.append_events([prepared({"action": "doc.read", "actor": {"id": "reader_1"}},
                                                1_800_000_000_000) for _ in range(300)])
            count = await store.erase_actor("reader_1", None, ERASED_AT, audit=hook)
            return count, await store.list_events(ListFilters(action="recalled.actor.erased"), None)
        finally:
            store.close()

    try:
        hook = Recording()
        count, (audited, _) = asyncio.run(main(hook))
        assert count == 300 and hook.prepared == [300]
        assert len(audited) == 1 and audited[0].metadata == '{"count":300}'
        assert [r.id for r in hook.stored] == [audited[0].id]
    finally:
        drop_pg(url)
