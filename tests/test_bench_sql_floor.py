"""The SQLite floor (`bench/sql_floor.py`) must write what the server writes: it replays the
statements `AppendEvents.apply_group` makes, group by group. When the store's layout
changes (migration 009 gave the block upsert a fourth parameter), a floor that rebuilt the
rows itself broke in `make bench` and nowhere else; this runs it on a small log and checks
the result the way an operator would."""

from __future__ import annotations

import sqlite3

import pytest

from bench import sql_floor
from recalled_lite.integrity.checkpoint import event_leaf_hash
from recalled_lite.integrity.merkle import root_from_leaf_hashes
from recalled_lite.storage.keys import BLOCK_SHIFT
from recalled_lite.storage.sqlite import store as S
from recalled_lite.storage.sqlite.merkle import load_tree

pytestmark = pytest.mark.sqlite_only("the SQLite floor writes and reads the SQLite file itself")

SECRET = b"f" * 64


def test_the_floor_writes_a_log_that_verifies_with_its_blocks_and_full_text(tmp_path):
    db = tmp_path / "recalled.db"
    n, group = 1_300, 64  # 21 groups, the last one short, across two blocks of 1,024

    result = sql_floor.measure(db, SECRET, group, n, seed=7)

    assert result["events"] == n and result["events_per_s"] > 0
    # The Merkle tiles were replayed too, read here before a store's open could backfill
    # them: the tree they hold is the tree of the events.
    raw = sqlite3.connect(db)
    try:
        leaves = [event_leaf_hash(h, s) for h, s in raw.execute("SELECT hash, signature FROM events ORDER BY seq")]
        edge = load_tree(raw)
    finally:
        raw.close()
    assert edge.size == n and edge.root() == root_from_leaf_hashes(leaves)
    store = S.SqliteStore(db, secret=SECRET)
    try:
        conn = store._conn
        assert conn.execute("SELECT count(*), min(seq), max(seq) FROM events").fetchone() == (n, 1, n)
        assert conn.execute("SELECT count(*) FROM events_fts").fetchone()[0] == n
        assert conn.execute("SELECT count(*) FROM events_keys").fetchone()[0] == n
        blocks = conn.execute(
            "SELECT block, min_occurred, max_occurred FROM event_blocks ORDER BY block").fetchall()
        actual = conn.execute(
            f"SELECT seq >> {BLOCK_SHIFT}, min(occurred_at), max(occurred_at) FROM events "
            "GROUP BY 1 ORDER BY 1").fetchall()
        assert blocks == actual and len(blocks) == 2
        report = store.verify_chain_sync()
        assert report["valid"] is True and report["checked"] == n, report
    finally:
        store.close()


def test_leaving_the_full_text_out_writes_no_fts_rows(tmp_path):
    db = tmp_path / "recalled.db"
    sql_floor.measure(db, SECRET, 32, 100, seed=3, leave_out=("fts",))
    store = S.SqliteStore(db, secret=SECRET)
    try:
        assert store._conn.execute("SELECT count(*) FROM events").fetchone()[0] == 100
        assert store._conn.execute("SELECT count(*) FROM events_fts").fetchone()[0] == 0
    finally:
        store.close()
