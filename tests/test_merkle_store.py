"""The writer keeps the Merkle tiles in the events' transaction (in process, real SQLite file)."""

from __future__ import annotations

import sqlite3

import msgspec
import pytest

from recalled_lite.auth import new_key_record
from recalled_lite.config import EventsConfig
from recalled_lite.integrity import merkle
from recalled_lite.integrity.checkpoint import event_leaf_hash, format_checkpoint
from recalled_lite.integrity.tiles import TileNodes, TreeEdge
from recalled_lite.intake import prepare_event
from recalled_lite.schemas import EventIn
from recalled_lite.storage.sqlite import merkle as merkle_store
from recalled_lite.storage.sqlite.store import AppendEvents, CallOp, SqliteStore

_, KEY = new_key_record("k", frozenset({"admin"}), None)


def op(action: str, n: int = 1) -> AppendEvents:
    events = [prepare_event(msgspec.convert({"action": action, "actor": {"id": f"u{i}"}}, EventIn),
                            KEY, EventsConfig(), 1_800_000_000_000) for i in range(n)]
    return AppendEvents(events)


def run_group(store, ops):
    return store.writer._run_group([(o, None) for o in ops])


def leaf_hashes(path) -> list[bytes]:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT hash, signature FROM events ORDER BY seq").fetchall()
    conn.close()
    return [event_leaf_hash(h, s) for h, s in rows]


def stored_root(path, size) -> bytes:
    conn = sqlite3.connect(path)
    try:
        return merkle.range_hash(0, size, TileNodes(size, lambda lv, ix: merkle_store.read_tile(conn, lv, ix))) \
            if size else merkle.EMPTY_ROOT
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "m.db", secret=b"s" * 64)
    yield s
    s.close()


def test_groups_keep_tiles_equal_to_the_reference_tree(store, tmp_path):
    sizes = [1, 3, 250, 2, 1, 300, 1, 1000]
    for n in sizes:
        run_group(store, [op("a", n), op("b"), op("c", 2)])
        total = store.writer.state["head_seq"]
        assert store.tree_size == total
        hashes = leaf_hashes(store.path)
        assert len(hashes) == total
        assert stored_root(store.path, total) == merkle.root_from_leaf_hashes(hashes)
        assert store.writer.state["tree"].root() == merkle.root_from_leaf_hashes(hashes)


def test_a_failed_group_leaves_no_tiles_and_the_edge_reloads(store):
    run_group(store, [op("a", 300)])
    edge_before = store.writer.state["tree"]
    # A full disk abandons the whole group (writer.py): cap the file just above its size, and
    # send more than fits. (An error raised by one op alone only rolls that op back.)
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count={pages + 2}")
    try:
        results = run_group(store, [op("b", 5), op("big", 2000)])
    finally:
        store._conn.execute("PRAGMA max_page_count=0")
    assert all(error is not None for _, _, error in results)
    assert store.writer.state["head_seq"] == 300 and store.tree_size == 300
    assert store.writer.state["tree"].partial == edge_before.partial
    assert len(leaf_hashes(store.path)) == 300
    run_group(store, [op("c", 10)])
    assert stored_root(store.path, 310) == merkle.root_from_leaf_hashes(leaf_hashes(store.path))


def test_a_stale_edge_is_re_read_inside_the_transaction(store):
    run_group(store, [op("a", 20)])
    store.writer.state["tree"] = TreeEdge()  # as if a rolled-back group had left it behind
    run_group(store, [op("b", 3)])
    assert store.tree_size == 23
    assert stored_root(store.path, 23) == merkle.root_from_leaf_hashes(leaf_hashes(store.path))


def test_tiles_refuse_rewrites_and_deletes(store):
    run_group(store, [op("a", 5)])
    store.append_checkpoint_sync(lambda size, root: (format_checkpoint("o", size, root), "o+00000000"), 1)
    conn = sqlite3.connect(store.path, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="only grow"):
        conn.execute("UPDATE merkle_tiles SET hashes = zeroblob(160) WHERE level = 0")
    with pytest.raises(sqlite3.IntegrityError, match="only grow"):
        conn.execute("UPDATE merkle_tiles SET hashes = substr(hashes, 1, 32) WHERE level = 0")
    with pytest.raises(sqlite3.IntegrityError, match="cannot be deleted"):
        conn.execute("DELETE FROM merkle_tiles")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM checkpoints")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE checkpoints SET tree_size = 4")
    conn.close()


def test_checkpoints_sign_the_writers_head(store):
    run_group(store, [op("a", 7)])
    built = []

    def build(size, root):
        built.append((size, root))
        return format_checkpoint("o", size, root) + "\n\u2014 o AAAA\n", "o+00000000"

    record = store.append_checkpoint_sync(build, 123)
    assert (record.tree_size, record.root_hash) == built[0]
    assert record.root_hash == merkle.root_from_leaf_hashes(leaf_hashes(store.path))
    assert store.latest_checkpoint == record


def test_a_database_from_before_the_tree_is_backfilled_at_open(tmp_path):
    path = tmp_path / "old.db"
    store = SqliteStore(path, secret=b"s" * 64)
    run_group(store, [op("a", 600)])
    store.close()
    conn = sqlite3.connect(path)  # what a pre-006 database looks like: events, no tiles
    conn.execute("DROP TRIGGER merkle_tiles_append_only_delete")
    conn.execute("DELETE FROM merkle_tiles")
    conn.commit()
    conn.close()
    store = SqliteStore(path, secret=b"s" * 64)
    try:
        assert store.tree_size == 600
        assert stored_root(path, 600) == merkle.root_from_leaf_hashes(leaf_hashes(path))
    finally:
        store.close()
    # the chunked path: 600 leaves in chunks of 250
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM merkle_tiles")
    conn.commit()
    edge = merkle_store.backfill_tree(conn, chunk=250)
    assert edge.size == 600 and edge.root() == merkle.root_from_leaf_hashes(leaf_hashes(path))
    conn.close()


def test_a_commit_rewrites_at_most_one_strip(store):
    run_group(store, [op("a", 40)])
    conn = sqlite3.connect(store.path)
    strips = conn.execute("SELECT level, idx, strip, length(hashes) FROM merkle_tiles ORDER BY 1, 2, 3").fetchall()
    assert strips == [(0, 0, 0, 512), (0, 0, 1, 512), (0, 0, 2, 8 * 32)]
    run_group(store, [op("b", 300)])  # fills tile 0 (16 strips), starts tile 1, promotes a level-1 hash
    strips = conn.execute("SELECT level, idx, strip, length(hashes) FROM merkle_tiles ORDER BY 1, 2, 3").fetchall()
    conn.close()
    assert [s[:3] for s in strips if s[:2] == (0, 0)] == [(0, 0, k) for k in range(16)]
    assert [s for s in strips if s[:2] == (0, 1)] == [(0, 1, k, 512) for k in range(5)] + [(0, 1, 5, 4 * 32)]
    assert [s for s in strips if s[0] == 1] == [(1, 0, 0, 32)]
    assert store.tree_size == 340 and merkle_store.stored_tree_size(store._conn) == 340


def test_a_tree_longer_than_the_log_refuses_to_open(tmp_path):
    path = tmp_path / "bad.db"
    store = SqliteStore(path, secret=b"s" * 64)
    run_group(store, [op("a", 3)])
    store.close()
    conn = sqlite3.connect(path)
    (tile,) = conn.execute("SELECT hashes FROM merkle_tiles WHERE level = 0").fetchone()
    conn.execute("UPDATE merkle_tiles SET hashes = ? WHERE level = 0", (tile + bytes(32),))  # grows: allowed
    conn.commit()
    conn.close()
    from recalled_lite.errors import ConfigError
    with pytest.raises(ConfigError, match="4 leaves but the log has only 3"):
        SqliteStore(path, secret=b"s" * 64)
