"""PostgresStore below the HTTP layer, on a real PostgreSQL database (storage/postgres/):
the group writer's isolation of a bad op and abandonment on a database error, the
reconnect, the chain-head lock between two stores (instances) on one database, and the
tree they build together. Groups are built deterministically with the writer's own
`_run_group`, as tests/test_writer_isolation.py does on SQLite."""

from __future__ import annotations

import threading

import msgspec
import psycopg
import pytest

from pg_reads_support import drop_pg
from pg_support import create_database
from recalled_lite.auth import new_key_record
from recalled_lite.config import EventsConfig
from recalled_lite.errors import ConfigError, StorageError, StorageUnavailable
from recalled_lite.integrity.merkle import root_from_leaf_hashes
from recalled_lite.integrity.checkpoint import event_leaf_hash
from recalled_lite.intake import prepare_event
from recalled_lite.schemas import EventIn
from recalled_lite.storage.base import IdempotencyKeyReused
from recalled_lite.storage.group_writer import CallOp
from recalled_lite.storage.postgres.chain import AppendEvents, append_in_op
from recalled_lite.storage.postgres.store import PostgresStore

_, KEY = new_key_record("k", frozenset({"admin"}), None)
SECRET = b"s" * 64
POISON = "poison.pill"


@pytest.fixture
def url():
    u = create_database("store")
    yield u
    drop_pg(u)


@pytest.fixture
def store(url):
    s = PostgresStore(url, secret=SECRET)
    yield s
    s.close()


def prepared(action: str, key: str | None = None, **fields):
    event = msgspec.convert({"action": action, "idempotency_key": key, **fields}, EventIn)
    return prepare_event(event, KEY, EventsConfig(), 1_800_000_000_000)


def op(action: str, key: str | None = None, **fields) -> AppendEvents:
    return AppendEvents([prepared(action, key, **fields)])


def run_group(store, ops):
    return [(result, error) for _, result, error in store.writer._run_group([(o, None) for o in ops])]


def stored(url) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT seq, action FROM events ORDER BY seq").fetchall()


def head_row(url) -> tuple[int, str | None, int]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT seq, hash, tree_size FROM chain_head").fetchone()


def poison(url) -> None:
    # A real constraint inside the intake batch's INSERT, raised by PostgreSQL itself.
    with psycopg.connect(url) as conn:
        conn.execute(f"""CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.action = '{POISON}' THEN RAISE EXCEPTION 'poisoned event'; END IF;
            RETURN NEW; END $$""")
        conn.execute("CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()")


def test_a_failing_event_in_the_intake_batch_fails_only_its_request(store, url):
    poison(url)
    outcomes = run_group(store, [op("before", "k1"), op(POISON), op("after"), op("before", "k1"),
                                 op(POISON, "k2"), op("last")])
    assert [i for i, (_, error) in enumerate(outcomes) if error is None] == [0, 2, 3, 5]
    for i in (1, 4):
        error = outcomes[i][1]
        assert isinstance(error, StorageError) and not isinstance(error, StorageUnavailable)
        assert "poisoned event" in str(error)
    first = outcomes[0][0][0]
    assert outcomes[3][0][0].deduplicated and outcomes[3][0][0].event.id == first.event.id
    assert [a for _, a in stored(url)] == ["before", "after", "last"]
    assert head_row(url)[0] == 3 and store.head_seq == 3 and store.tree_size == 3


def test_a_constraint_failure_in_a_plain_op_fails_only_that_op(store, url):
    _, record = new_key_record("dup", frozenset({"admin"}), None)
    store.create_key_sync(record)

    def insert_again(conn):
        conn.execute("INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, created_at) "
                     "VALUES (%s, 'x', 'other', 'h', '[]', 0)", (record.id,))

    outcomes = run_group(store, [op("one"), CallOp(insert_again), op("two")])
    assert outcomes[0][1] is None and outcomes[2][1] is None
    assert isinstance(outcomes[1][1], StorageError) and "duplicate key" in str(outcomes[1][1])
    assert [a for _, a in stored(url)] == ["one", "two"]


def test_a_lost_connection_abandons_the_group_and_the_next_reconnects(store, url):
    outcomes = run_group(store, [op("doomed.a"),
                                 CallOp(lambda conn: conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")),
                                 op("doomed.b")])
    assert all(isinstance(error, StorageUnavailable) for _, error in outcomes), outcomes
    assert stored(url) == [] and store.head_seq == 0 and store.tree_size == 0
    (result, error), = run_group(store, [op("after.reconnect")])
    assert error is None and result[0].event.seq == 1 and result[0].event.prev_hash is None
    assert store.verify_chain_sync()["valid"] is True


def test_an_idempotency_conflict_is_a_business_error(store):
    (first, _), = run_group(store, [op("order.created", "key-1")])
    outcomes = run_group(store, [op("order.cancelled", "key-1"), op("order.created", "key-1")])
    assert isinstance(outcomes[0][1], IdempotencyKeyReused)
    assert outcomes[0][1].event_id == first[0].event.id
    assert outcomes[1][0][0].deduplicated is True


def test_every_group_holds_the_chain_head_lock(store, url):
    # Also a group without an append: the chain head is the first lock of every write
    # transaction, so two instances' groups (mixing appends, webhook rows, key rows in any
    # order) cannot deadlock.
    (result, error), = run_group(store, [CallOp(lambda conn: store.writer.state["chain_locked"])])
    assert error is None and result is True
    with psycopg.connect(url) as other:
        other.execute("SET lock_timeout = '200ms'")
        other.execute("BEGIN")
        other.execute("SELECT 1 FROM chain_head WHERE id = 1 FOR UPDATE")
        # While another transaction holds the chain head, a write group waits (then fails
        # with 503 after lock_timeout) instead of writing beside it.
        store.writer.conn.execute("SET lock_timeout = '300ms'")
        (_, error), = run_group(store, [CallOp(lambda conn: conn.execute("SELECT 1"))])
        assert isinstance(error, StorageUnavailable) and "busy" in str(error)
        other.execute("ROLLBACK")
    (result, error), = run_group(store, [CallOp(lambda conn: append_in_op(conn, store.writer, [prepared("inside")]))])
    assert error is None and [a for _, a in stored(url)] == ["inside"]


def test_an_audited_key_creation_appends_its_event_in_the_same_transaction(store, url):
    from recalled_lite.audit import AdminAction, Caller, key_created
    from recalled_lite.actions import AuditAction

    _, record = new_key_record("audited", frozenset({"events:read"}), None)
    store.create_key_sync(record, audit=AdminAction(Caller.for_command("test"), AuditAction("recalled.key.created"),
                                                    key_created(record)))
    assert [a for _, a in stored(url)] == ["recalled.key.created"]
    assert store.key_by_prefix(record.prefix) is not None


def test_two_stores_on_one_database_build_one_chain_and_one_tree(url):
    a = PostgresStore(url, secret=SECRET)
    b = PostgresStore(url, secret=SECRET)
    try:
        assert a.project_id == b.project_id
        errors: list[BaseException] = []

        def append_many(s: PostgresStore, name: str) -> None:
            try:
                for i in range(60):
                    ops = [op(f"{name}.keyed.{i % 7}", f"{name}-{i % 7}") if j == 0 else op(f"{name}.{i}.{j}")
                           for j in range(3)]
                    for _, _, error in s.writer._run_group([(o, None) for o in ops]):
                        if error is not None:
                            raise error
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=append_many, args=(s, n)) for s, n in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        rows = stored(url)
        seqs = [seq for seq, _ in rows]
        assert seqs == list(range(1, len(rows) + 1))
        # 60 rounds x 3 events per store, less the keyed repeats (7 keys per store replayed).
        assert len(rows) == 2 * (60 * 3 - (60 - 7))
        assert a.verify_chain_sync()["valid"] is True
        seq, head_hash, tree_size = head_row(url)
        assert (seq, tree_size) == (len(rows), len(rows))
        with psycopg.connect(url) as conn:
            leaves = [event_leaf_hash(h, sig) for h, sig in
                      conn.execute("SELECT hash, signature FROM events ORDER BY seq").fetchall()]
        # Whichever store appended last holds the current edge; the other reloads on its next group.
        last = a if a.head_seq == seq else b
        assert last.writer.state["tree"].root() == root_from_leaf_hashes(leaves)
        other = b if last is a else a
        (result, error), = run_group(other, [op("after.both")])
        assert error is None and result[0].event.seq == seq + 1 and result[0].event.prev_hash == head_hash
        assert other.writer.state["tree"].root() == root_from_leaf_hashes(
            leaves + [event_leaf_hash(result[0].event.hash, result[0].event.signature)])
    finally:
        a.close()
        b.close()


def test_a_different_secret_is_refused_with_the_sqlite_message(store, url):
    with pytest.raises(ConfigError, match="server.secret does not match the secret this database was created with"):
        PostgresStore(url, secret=b"x" * 64)


def test_the_filter_keys_and_the_search_document_are_stored_with_the_event(store, url):
    from recalled_lite.storage.postgres.search_doc import search_document

    event = prepared("invoice.paid", organization="org_k", actor={"id": "user_1", "name": "Ada Lovelace"},
                     targets=[{"type": "invoice", "id": "inv_9"}], metadata={"note": "late fee"})
    (result, error), = run_group(store, [AppendEvents([event])])
    assert error is None
    with psycopg.connect(url) as conn:
        keys, same_search, request_digest = conn.execute(
            "SELECT keys, search = %s::tsvector, request_digest FROM events WHERE seq = 1",
            (search_document(event.fts),)).fetchone()
    assert keys == event.keys.split() and keys
    assert same_search is True
    assert request_digest is None  # no idempotency key, no fingerprint


def test_leaf_entries_take_a_purged_event_from_its_tombstone(store, url):
    from recalled_lite.storage.postgres.merkle import leaf_entries

    outcomes = run_group(store, [op("leaf.one"), op("leaf.two"), op("leaf.three")])
    assert all(error is None for _, error in outcomes)
    with psycopg.connect(url) as conn:
        before = leaf_entries(conn, 1, 3)
        with conn.transaction():
            conn.execute("SET LOCAL recalled.retention_purge = 'on'")
            conn.execute("INSERT INTO retention_tombstones (seq, hash, signature, checkpoint_id) "
                         "SELECT seq, hash, signature, 1 FROM events WHERE seq = 2")
            conn.execute("DELETE FROM events WHERE seq = 2")
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 2
        assert leaf_entries(conn, 1, 3) == before


def test_a_read_on_a_lost_connection_is_503_and_the_next_read_works(url):
    import asyncio

    s = PostgresStore(url, secret=SECRET, readers=1)

    async def main():
        s.start(asyncio.get_running_loop())
        (appended,) = await s.append_events([prepared("read.me")])
        # Ends the reader's backend from outside, as a server restart or failover would.
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND application_name = 'recalled-lite reader'")
        with pytest.raises(StorageUnavailable):
            await s.get_event(appended.event.id, None)
        assert (await s.get_event(appended.event.id, None)).id == appended.event.id

    try:
        asyncio.run(main())
    finally:
        s.close()
