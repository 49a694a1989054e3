"""The read side on PostgreSQL gives SQLite's answers: list filters (every one, behind the
organization wall or not), pages and cursors, tailing, the chain head, the per-organization
counts, and exports (rows, order, windows, tombstones), on the same rows in both.
"""

from __future__ import annotations

import itertools

import pytest

from recalled_lite.cursors import Cursor
from recalled_lite.storage.filters import ListFilters
from recalled_lite.storage.postgres import reads
from pg_reads_support import (
    BASE_MS, DAY, build_sqlite, copy_to_pg, drop_pg, corpus, pg_read, pg_row_extras, run_sqlite,
)
from pg_support import create_database


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    path = tmp_path_factory.mktemp("reads") / "r.db"
    build_sqlite(path, corpus(500, seed=11))
    url = create_database("reads")
    try:
        copy_to_pg(path, url)
        yield path, url
    finally:
        drop_pg(url)


FILTERS = [
    {}, {"organization": "org_acme"}, {"organization": "org_nope"}, {"actor_id": "user_1"},
    {"actor_id": "user@example.com", "organization": "org_globex"}, {"action": "invoice.paid"},
    {"action": "invoice.*"}, {"action": "invoice*"}, {"action": "*"}, {"action": "user.login", "organization": "org_acme"},
    {"action": "user.*", "organization": "org_initech"}, {"target_type": "invoice"},
    {"target_type": "invoice", "target_id": "inv_3"}, {"target_id": "inv_7"},
    {"target_type": "report", "actor_id": "user_2"}, {"date_from_ms": BASE_MS - 10 * DAY},
    {"date_to_ms": BASE_MS + 3_600_000}, {"date_from_ms": BASE_MS - 5 * DAY, "date_to_ms": BASE_MS + 60_000,
                                          "organization": "org_acme"},
]


def _walk(fetch, limit):
    ids, cursor = [], None
    while True:
        page, more = fetch(cursor, limit)
        ids += [e.id for e in page]
        if not more:
            return ids
        cursor = Cursor(page[-1].occurred_at, page[-1].seq)


@pytest.mark.parametrize("wall", [None, "org_acme"])
def test_every_list_filter_gives_the_same_pages(both, wall):
    path, url = both
    for spec, limit in itertools.product(FILTERS, [7, 200]):
        def lite(cursor, n):
            return run_sqlite(path, "list_events", ListFilters(limit=n, cursor=cursor, **spec), wall)

        def pg(cursor, n):
            return pg_read(url, reads.list_page, ListFilters(limit=n, cursor=cursor, **spec), wall)

        want = _walk(lite, limit)
        got = _walk(pg, limit)
        assert got == want, (spec, limit)
        assert len(set(got)) == len(got)
    # Not vacuous: the unfiltered walk has every event, newest occurred_at first.
    everything = _walk(lambda c, n: pg_read(url, reads.list_page, ListFilters(limit=n, cursor=c), None), 100)
    assert len(everything) == 500


def test_records_are_identical_field_by_field(both):
    path, url = both
    lite, _ = run_sqlite(path, "list_events", ListFilters(limit=500), None)
    pg, _ = pg_read(url, reads.list_page, ListFilters(limit=500), None)
    assert [tuple(r) for r in pg] == [tuple(r) for r in lite]


def test_tailing_after_seq_ascending(both):
    path, url = both
    for after in (0, 123, 499, 500):
        f = ListFilters(limit=50, after_seq=after)
        lite = run_sqlite(path, "list_events", f, None)
        pg = pg_read(url, reads.list_page, f, None)
        assert [e.seq for e in pg[0]] == [e.seq for e in lite[0]] and pg[1] == lite[1]
    with pytest.raises(ValueError):
        pg_read(url, reads.list_page, ListFilters(after_seq=1, cursor=Cursor(1, 1)), None)


def test_chain_head_and_counts_per_organization(both):
    path, url = both
    assert pg_read(url, reads.chain_head) == run_sqlite(path, "chain_head")
    for since, prefix in [(0, "recalled."), (BASE_MS + 10_000_300, "invoice."), (0, "")]:
        assert (pg_read(url, reads.events_per_organization, since, prefix)
                == run_sqlite(path, "events_per_organization", since, prefix))


def _export_all(fetch, upto):
    rows, after = [], 0
    while after is not None:
        chunk, after = fetch(after, upto)
        rows += chunk
    return rows


@pytest.mark.parametrize("spec", [{}, {"organization": "org_globex"}, {"actor_id": "user_3"},
                                  {"action": "invoice.*", "target_type": "invoice"}])
def test_exports_walk_the_same_rows(both, spec):
    path, url = both
    f = ListFilters(**spec)
    lite = _export_all(lambda a, u: run_sqlite(path, "export_chunk", f, None, a, u, list), 480)
    pg = _export_all(lambda a, u: pg_read(url, reads.export_chunk, f, None, a, u, list, 64), 480)
    assert [tuple(r) for r in pg] == [tuple(r) for r in lite]
    assert lite and all(r.seq <= 480 for r in pg)


def test_no_skip_no_repeat_when_events_are_back_dated_between_pages(tmp_path):
    """Events inserted (some back-dated into pages already read, some into pages not yet
    read) between two pages: the walk returns every event that existed at its start exactly
    once, in order, and the back-dated ones that fall after the cursor."""
    import psycopg

    url = create_database("backdate")
    try:
        path = tmp_path / "b.db"
        build_sqlite(path, corpus(120, seed=3))
        copy_to_pg(path, url)
        before = _walk(lambda c, n: pg_read(url, reads.list_page, ListFilters(limit=n, cursor=c), None), 500)
        ids, cursor, inserted = [], None, []
        with psycopg.connect(url) as conn:
            (template,) = conn.execute("SELECT * FROM events ORDER BY seq DESC LIMIT 1").fetchall()
            names = [d.name for d in conn.execute("SELECT * FROM events LIMIT 0").description]
        while True:
            page, more = pg_read(url, reads.list_page, ListFilters(limit=10, cursor=cursor), None)
            ids += [e.id for e in page]
            if not more:
                break
            cursor = Cursor(page[-1].occurred_at, page[-1].seq)
            # One event older than the cursor (the walk must return it) and one newer (it must not).
            with psycopg.connect(url) as conn:
                for occurred in (cursor.occurred_at_ms - 1, cursor.occurred_at_ms + 1):
                    seq = conn.execute("SELECT max(seq) + 1 FROM events").fetchone()[0]
                    row = dict(zip(names, template))
                    row.update(seq=seq, id=f"evt_bd_{seq}", occurred_at=occurred, hash=f"h{seq}")
                    row["keys"], row["search"] = pg_row_extras(row)
                    cols = ", ".join(names)
                    conn.execute(f"INSERT INTO events ({cols}) VALUES ({', '.join(['%s'] * len(names))})",
                                 [row[n] for n in names])
                    inserted.append((row["id"], occurred < cursor.occurred_at_ms))
                conn.commit()
        assert len(ids) == len(set(ids))
        assert [i for i in ids if not i.startswith("evt_bd_")] == before
        older = {i for i, older in inserted if older}
        newer = {i for i, older in inserted if not older}
        assert older <= set(ids) and not (newer & set(ids))
    finally:
        drop_pg(url)


# --- through two real servers ------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    from pg_reads_support import ServerPair

    pair = ServerPair(tmp_path_factory.mktemp("rsrv"), corpus(250, seed=4))
    try:
        yield pair
    finally:
        pair.close()


LIST_PARAMS = [
    {}, {"organization": "org_acme"}, {"actor_id": "user_2"}, {"action": "invoice.*"}, {"action": "user.login"},
    {"target_type": "invoice", "target_id": "inv_4"}, {"target_type": "report"},
    {"date_from": "2025-10-01", "date_to": "2025-10-09"}, {"organization": "org_globex", "action": "user.*"},
]


def test_servers_list_alike(servers):
    for params in LIST_PARAMS:
        for limit in (9, 100):
            lite = servers.walk(servers.lite, "/v1/events", {**params, "limit": limit})
            pg = servers.walk(servers.pg, "/v1/events", {**params, "limit": limit})
            assert pg == lite, params
    tail_lite = servers.walk(servers.lite, "/v1/events", {"after_seq": 200, "limit": 20})
    tail_pg = servers.walk(servers.pg, "/v1/events", {"after_seq": 200, "limit": 20})
    assert tail_pg == tail_lite and tail_pg[0] == 201


def test_servers_export_alike(servers):
    import json

    for params in [{}, {"organization": "org_initech"}, {"actor_id": "user_1", "action": "invoice.*"}]:
        exported = []
        for srv in servers.servers:
            with srv.client() as c:
                r = c.get("/v1/exports", params={**params, "format": "ndjson"})
            assert r.status_code == 200, r.text
            lines = [json.loads(line) for line in r.text.splitlines()]
            exported.append(lines)
        lite, pg = exported
        assert [e.get("seq") for e in pg[:-1]] == [e.get("seq") for e in lite[:-1]] and len(pg) > 1
        assert [e["action"] for e in pg[:-1]] == [e["action"] for e in lite[:-1]]
        assert pg[-1]["head"]["seq"] == lite[-1]["head"]["seq"]
