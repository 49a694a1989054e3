"""The Merkle tree's storage: tiles, checkpoints, signing keys and receipts in SQLite.

The tree math is integrity/merkle.py and integrity/tiles.py; this module only persists what
they compute. The writer keeps the tree's right edge (a TreeEdge) in its state next to the
chain head: `append_leaves` runs inside AppendEvents' transaction and upserts, once, each
512-byte strip of a tile the group touched (a tile is stored as its strips: migration 006
says why). After a failed group the writer reloads the edge from the stored tiles
(`load_tree`), exactly as it reloads the chain head.

SqliteStore mixes in `MerkleStore` for the Store protocol's tree, checkpoint and receipt
methods (storage/base.py); receipts' own SQL is in receipts.py.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from typing import Any, Callable

from ...errors import ConfigError
from ...integrity.checkpoint import event_leaf_hash
from ...integrity.merkle import ProofError
from ...integrity.tiles import TreeEdge
from .. import merkle_tiles
from ..base import CheckpointRecord, EventRecord, ReceiptRecord, SigningKeyRecord
from ..merkle_tiles import stored_tree_size, strip_rows
from .receipts import get_receipt, receipt_for_event, revoke_receipts
from .writer import Writer, WriteOp

log = logging.getLogger("recalled_lite.store")

_UPSERT_STRIP = (
    "INSERT INTO merkle_tiles (level, idx, strip, hashes) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (level, idx, strip) DO UPDATE SET hashes = excluded.hashes"
)
_CHECKPOINT_COLUMNS = "id, tree_size, root_hash, key_name, created_at, note"
BACKFILL_CHUNK = 20_000

_make_checkpoint = CheckpointRecord._make
_sha256 = hashlib.sha256


# -- tiles --------------------------------------------------------------------------------------


def read_tile(conn: sqlite3.Connection, level: int, index: int) -> bytes | None:
    strips = conn.execute("SELECT hashes FROM merkle_tiles WHERE level = ? AND idx = ? ORDER BY strip",
                          (level, index)).fetchall()
    return b"".join(row[0] for row in strips) if strips else None


def load_tree(conn: sqlite3.Connection, size: int | None = None) -> TreeEdge:
    return merkle_tiles.load_tree(conn, read_tile, size)


def append_leaves(conn: sqlite3.Connection, edge: TreeEdge, records: list[EventRecord]) -> TreeEdge:
    """Add the events' leaves to the tree in this transaction; returns the new edge.

    The caller stores the new edge only once its statements are done (like the chain head).
    An edge that does not end where these events start is stale (a group was rolled back
    without the writer reloading): it is re-read from the tiles this transaction sees.
    """
    first = records[0].seq
    if edge.size != first - 1:
        edge = load_tree(conn, first - 1)
    # event_leaf_hash inlined: this runs for every event on the writer thread.
    new_edge, tiles = edge.append([_sha256(b"\x00" + r.hash.encode() + b"\n" + r.signature.encode()).digest()
                                   for r in records])
    conn.executemany(_UPSERT_STRIP, strip_rows(tiles))
    return new_edge


def backfill_tree(conn: sqlite3.Connection, chunk: int = BACKFILL_CHUNK) -> TreeEdge:
    """Build the tree over events stored before it existed (a database from before 006).

    One write transaction per chunk, so a crash midway resumes where it stopped. The tree
    and the log are compared in one snapshot: a server appending meanwhile keeps them equal.
    """
    conn.execute("BEGIN")
    try:
        head_seq = conn.execute("SELECT ifnull(max(seq), 0) FROM events").fetchone()[0]
        edge = load_tree(conn)
    finally:
        conn.execute("COMMIT")
    if edge.size > head_seq:
        raise ConfigError(
            f"the Merkle tree has {edge.size} leaves but the log has only {head_seq} events: the database "
            "was altered or restored from mismatched copies; restore a consistent backup"
        )
    if edge.size < head_seq:
        log.info("building the Merkle tree over existing events",
                 extra={"fields": {"from_seq": edge.size + 1, "to_seq": head_seq}})
    started = time.monotonic()
    while edge.size < head_seq:
        conn.execute("BEGIN IMMEDIATE")
        try:
            edge = load_tree(conn)  # another process may have done part of it meanwhile
            rows = conn.execute(
                "SELECT hash, signature FROM events WHERE seq > ? AND seq <= ? ORDER BY seq",
                (edge.size, min(edge.size + chunk, head_seq)),
            ).fetchall()
            if edge.size < head_seq and len(rows) != min(chunk, head_seq - edge.size):
                raise ConfigError(f"events are missing after seq {edge.size}: the log has a gap; "
                                  "run `recalled-lite verify` and restore a backup")
            edge, tiles = edge.append([event_leaf_hash(h, s) for h, s in rows])
            conn.executemany(_UPSERT_STRIP, strip_rows(tiles))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("Merkle tree progress", extra={"fields": {
            "leaves": edge.size, "of": head_seq, "seconds": round(time.monotonic() - started, 1)}})
    return edge


def leaf_entries(conn: sqlite3.Connection, first_seq: int, count: int) -> list[tuple[str, str]]:
    # A purged event's entry is its tombstone's (retention keeps hash and signature): the
    # bundles, like the tiles, stay whole.
    rows = conn.execute(
        "SELECT seq, hash, signature FROM events WHERE seq >= ?1 AND seq < ?2 UNION ALL "
        "SELECT seq, hash, signature FROM retention_tombstones WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
        (first_seq, first_seq + count),
    ).fetchall()
    return [(h, s) for _, h, s in rows]


# -- checkpoints --------------------------------------------------------------------------------


def latest_checkpoint(conn: sqlite3.Connection) -> CheckpointRecord | None:
    row = conn.execute(f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    return _make_checkpoint(row) if row else None


def checkpoint_with_size(conn: sqlite3.Connection, tree_size: int) -> CheckpointRecord | None:
    row = conn.execute(
        f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE tree_size = ? ORDER BY id DESC LIMIT 1", (tree_size,)
    ).fetchone()
    return _make_checkpoint(row) if row else None


def checkpoints_page(conn: sqlite3.Connection, after_size: int, after_id: int,
                     limit: int) -> tuple[list[CheckpointRecord], bool]:
    """Checkpoints with tree_size > after_size and id > after_id, in signing order (the tree
    only grows, so that is also tree-size order)."""
    rows = conn.execute(
        f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE tree_size > ? AND id > ? ORDER BY id LIMIT ?",
        (after_size, after_id, limit + 1),
    ).fetchall()
    return [_make_checkpoint(r) for r in rows[:limit]], len(rows) > limit


class AppendCheckpoint(WriteOp):
    """Sign the writer's current tree head and store it, in one write transaction."""

    __slots__ = ("build_note", "created_at", "on_commit")

    def __init__(self, build_note: Callable[[int, bytes], tuple[str, str]], created_at: int,
                 on_commit: Callable[[CheckpointRecord], None]) -> None:
        self.build_note = build_note
        self.created_at = created_at
        self.on_commit = on_commit

    def apply(self, conn: sqlite3.Connection, writer: Writer) -> CheckpointRecord:
        state = writer.state
        edge: TreeEdge = state["tree"]
        if edge.size != state["head_seq"]:
            edge = state["tree"] = load_tree(conn, state["head_seq"])
        root = edge.root()
        note, key_name = self.build_note(edge.size, root)
        cursor = conn.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, key_name, created_at, note) VALUES (?,?,?,?,?)",
            (edge.size, root, key_name, self.created_at, note),
        )
        return CheckpointRecord(cursor.lastrowid, edge.size, root, key_name, self.created_at, note)

    def after_commit(self, writer: Writer, result: CheckpointRecord) -> None:
        self.on_commit(result)


# -- signing keys --------------------------------------------------------------------------------


def signing_keys(conn: sqlite3.Connection) -> list[SigningKeyRecord]:
    rows = conn.execute(
        "SELECT verifier_key, created_at, retired_at FROM signing_keys ORDER BY created_at, verifier_key"
    ).fetchall()
    return [SigningKeyRecord(*row) for row in rows]


def install_signing_key(conn: sqlite3.Connection, verifier_key: str, now: int) -> None:
    """Make `verifier_key` the current key; any other current key is retired now."""
    conn.execute("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL AND verifier_key != ?",
                 (now, verifier_key))
    conn.execute("INSERT INTO signing_keys (verifier_key, created_at, retired_at) VALUES (?, ?, NULL) "
                 "ON CONFLICT (verifier_key) DO UPDATE SET retired_at = NULL", (verifier_key, now))


# -- the Store protocol's part ------------------------------------------------------------------


class MerkleStore:
    """Mixed into SqliteStore: uses its writer, reader pool and write connection."""

    _conn: sqlite3.Connection
    writer: Writer
    latest_checkpoint: CheckpointRecord | None = None

    def _init_tree(self) -> None:
        """At open: build the tree over events that predate it, load the right edge."""
        self.writer.state["tree"] = backfill_tree(self._conn)
        self.latest_checkpoint = latest_checkpoint(self._conn)

    def _reload_tree(self, conn: sqlite3.Connection) -> None:
        try:
            self.writer.state["tree"] = load_tree(conn)
        except ProofError:
            # Left stale on purpose: append_leaves re-reads it, and fails that group loudly.
            log.exception("could not reload the Merkle tree's right edge from its tiles")

    @property
    def tree_size(self) -> int:
        return self.writer.state["tree"].size

    def _remember_checkpoint(self, record: CheckpointRecord) -> None:
        self.latest_checkpoint = record

    async def append_checkpoint(self, build_note: Callable[[int, bytes], tuple[str, str]],
                                created_at: int) -> CheckpointRecord:
        return await self.writer.submit(AppendCheckpoint(build_note, created_at, self._remember_checkpoint))

    def append_checkpoint_sync(self, build_note: Callable[[int, bytes], tuple[str, str]],
                               created_at: int) -> CheckpointRecord:
        return self.writer.run_sync(AppendCheckpoint(build_note, created_at, self._remember_checkpoint))

    async def checkpoint_with_size(self, tree_size: int) -> CheckpointRecord | None:
        return await self.read(checkpoint_with_size, tree_size)  # type: ignore[attr-defined]

    async def checkpoints_page(self, after_size: int, after_id: int,
                               limit: int) -> tuple[list[CheckpointRecord], bool]:
        return await self.read(checkpoints_page, after_size, after_id, limit)  # type: ignore[attr-defined]

    async def with_tiles(self, fn: Callable[[Callable[[int, int], bytes | None]], Any]) -> Any:
        return await self.read(_with_tiles, fn)  # type: ignore[attr-defined]

    async def leaf_entries(self, first_seq: int, count: int) -> list[tuple[str, str]]:
        return await self.read(leaf_entries, first_seq, count)  # type: ignore[attr-defined]

    def signing_keys_sync(self) -> list[SigningKeyRecord]:
        return signing_keys(self._conn)

    async def signing_keys(self) -> list[SigningKeyRecord]:
        return await self.read(signing_keys)  # type: ignore[attr-defined]

    def install_signing_key_sync(self, verifier_key: str, now: int) -> None:
        self.write_sync(install_signing_key, verifier_key, now)  # type: ignore[attr-defined]

    async def receipt_for_event(self, event_seq: int, new_id: str, created_at: int) -> ReceiptRecord:
        return await self.write(receipt_for_event, event_seq, new_id, created_at)  # type: ignore[attr-defined]

    async def get_receipt(self, receipt_id: str) -> ReceiptRecord | None:
        return await self.read(get_receipt, receipt_id)  # type: ignore[attr-defined]

    async def revoke_receipts(self, event_seq: int, revoked_at: int) -> int:
        return await self.write(revoke_receipts, event_seq, revoked_at)  # type: ignore[attr-defined]

    async def get_event_by_seq(self, seq: int) -> EventRecord | None:
        return await self.read(_event_by_seq, seq)  # type: ignore[attr-defined]


def _with_tiles(conn: sqlite3.Connection, fn: Callable[[Callable[[int, int], bytes | None]], Any]) -> Any:
    return fn(lambda level, index: read_tile(conn, level, index))


def _event_by_seq(conn: sqlite3.Connection, seq: int) -> EventRecord | None:
    row = conn.execute(f"SELECT {', '.join(EventRecord._fields)} FROM events WHERE seq = ?", (seq,)).fetchone()
    return EventRecord._make(row) if row else None
