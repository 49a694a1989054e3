"""The Merkle tree's storage on PostgreSQL: tiles, checkpoints, signing keys and receipts.

The same layout as storage/sqlite/merkle.py (tiles stored as strips of 16 hashes, migration
001 here), and the same pure math from integrity/. The writer keeps the tree's right edge in
its state next to the chain head; `grow_tree` runs inside the intake transaction, under
the chain-head lock, so the tree of every instance grows in one order (chain.py writes
the strips `grow_tree` returns in the statement that moves the head). After a failed group,
or when another instance moved the head, the edge is reloaded from the stored tiles.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Callable

import psycopg

from ...errors import ConfigError, StorageError
from ...integrity.merkle import HASH_SIZE, ProofError
from ...integrity.tiles import TILE_WIDTH, TreeEdge
from ..base import CheckpointRecord, EventRecord, ReceiptRecord, SigningKeyRecord
from ..group_writer import WriteOp
from .writer import Writer

log = logging.getLogger("recalled_lite.store")

STRIP_HASHES = 16
_STRIP_BYTES = STRIP_HASHES * HASH_SIZE
_CHECKPOINT_COLUMNS = "id, tree_size, root_hash, key_name, created_at, note"
_RECEIPT_COLUMNS = "id, event_seq, created_at, revoked_at"
EVENT_COLUMNS = ", ".join(EventRecord._fields)

_sha256 = hashlib.sha256


def _checkpoint(row: tuple[Any, ...]) -> CheckpointRecord:
    return CheckpointRecord(row[0], row[1], bytes(row[2]), row[3], row[4], row[5])


# -- tiles --------------------------------------------------------------------------------------


def read_tile(conn: psycopg.Connection, level: int, index: int) -> bytes | None:
    strips = conn.execute("SELECT hashes FROM merkle_tiles WHERE level = %s AND idx = %s ORDER BY strip",
                          (level, index)).fetchall()
    return b"".join(bytes(row[0]) for row in strips) if strips else None


def _strip_rows(tiles: list[tuple[int, int, int, bytes]]) -> list[tuple[int, int, int, bytes]]:
    """The strips a TreeEdge.append touched: from the one holding its first new hash on."""
    rows = []
    for level, index, had, data in tiles:
        for strip in range(had // STRIP_HASHES, (len(data) - 1) // _STRIP_BYTES + 1):
            rows.append((level, index, strip, data[strip * _STRIP_BYTES:(strip + 1) * _STRIP_BYTES]))
    return rows


def stored_tree_size(conn: psycopg.Connection) -> int:
    """Leaves in the stored tree: where the last level-0 strip ends."""
    row = conn.execute(
        "SELECT idx, strip, length(hashes) FROM merkle_tiles WHERE level = 0 ORDER BY idx DESC, strip DESC LIMIT 1"
    ).fetchone()
    return row[0] * TILE_WIDTH + row[1] * STRIP_HASHES + row[2] // HASH_SIZE if row else 0


def load_tree(conn: psycopg.Connection, size: int | None = None) -> TreeEdge:
    if size is None:
        size = stored_tree_size(conn)
    return TreeEdge.load(size, lambda level, index: read_tile(conn, level, index))


def grow_tree(conn: psycopg.Connection, edge: TreeEdge,
              records: list[EventRecord]) -> tuple[TreeEdge, list[tuple[int, int, int, bytes]]]:
    """The events' leaves added to the tree: (the new edge, the strip rows to upsert). The
    caller writes the rows in this transaction (chain.py, in the statement that moves the
    head) and keeps the new edge only once its statements are done, like the chain head. An
    edge that does not end where these events start is stale and re-read from the tiles."""
    first = records[0].seq
    if edge.size != first - 1:
        edge = load_tree(conn, first - 1)
    new_edge, tiles = edge.append([_sha256(b"\x00" + r.hash.encode() + b"\n" + r.signature.encode()).digest()
                                   for r in records])
    return new_edge, _strip_rows(tiles)


def check_tree(conn: psycopg.Connection, head_seq: int, tree_size: int) -> None:
    """At open: the tree has one leaf per event, and its tiles end where chain_head says."""
    stored = stored_tree_size(conn)
    if stored != tree_size or tree_size != head_seq:
        raise ConfigError(
            f"the Merkle tree has {stored} stored leaves, chain_head says {tree_size} and the log has "
            f"{head_seq} events: the database was altered or restored from mismatched copies; "
            "restore a consistent backup")


def leaf_entries(conn: psycopg.Connection, first_seq: int, count: int) -> list[tuple[str, str]]:
    # A purged event's entry is its tombstone's (retention keeps hash and signature): the
    # bundles, like the tiles, stay whole.
    end = first_seq + count
    rows = conn.execute(
        "SELECT seq, hash, signature FROM events WHERE seq >= %s AND seq < %s UNION ALL "
        "SELECT seq, hash, signature FROM retention_tombstones WHERE seq >= %s AND seq < %s ORDER BY seq",
        (first_seq, end, first_seq, end)).fetchall()
    return [(h, s) for _, h, s in rows]


# -- checkpoints --------------------------------------------------------------------------------


def latest_checkpoint(conn: psycopg.Connection) -> CheckpointRecord | None:
    row = conn.execute(f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    return _checkpoint(row) if row else None


def checkpoint_with_size(conn: psycopg.Connection, tree_size: int) -> CheckpointRecord | None:
    row = conn.execute(
        f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE tree_size = %s ORDER BY id DESC LIMIT 1",
        (tree_size,)).fetchone()
    return _checkpoint(row) if row else None


def checkpoints_page(conn: psycopg.Connection, after_size: int, after_id: int,
                     limit: int) -> tuple[list[CheckpointRecord], bool]:
    rows = conn.execute(
        f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE tree_size > %s AND id > %s ORDER BY id LIMIT %s",
        (after_size, after_id, limit + 1)).fetchall()
    return [_checkpoint(r) for r in rows[:limit]], len(rows) > limit


class AppendCheckpoint(WriteOp):
    """Sign the tree head and store it. Under the chain-head lock (as every write group), so
    the head it signs is the committed head of every instance, and ids follow signing order."""

    __slots__ = ("build_note", "created_at", "on_commit")

    def __init__(self, build_note: Callable[[int, bytes], tuple[str, str]], created_at: int,
                 on_commit: Callable[[CheckpointRecord], None]) -> None:
        self.build_note = build_note
        self.created_at = created_at
        self.on_commit = on_commit

    def apply(self, conn: psycopg.Connection, writer: Writer) -> CheckpointRecord:
        state = writer.state
        if not state.get("chain_locked"):
            raise StorageError("internal error: a checkpoint without the chain-head lock")
        edge: TreeEdge = state["tree"]
        if edge.size != state["head_seq"]:
            edge = state["tree"] = load_tree(conn, state["head_seq"])
        root = edge.root()
        note, key_name = self.build_note(edge.size, root)
        (new_id,) = conn.execute(
            "INSERT INTO checkpoints (id, tree_size, root_hash, key_name, created_at, note) "
            "SELECT coalesce(max(id), 0) + 1, %s, %s, %s, %s, %s FROM checkpoints RETURNING id",
            (edge.size, root, key_name, self.created_at, note)).fetchone()
        return CheckpointRecord(new_id, edge.size, root, key_name, self.created_at, note)

    def after_commit(self, writer: Writer, result: CheckpointRecord) -> None:
        self.on_commit(result)


# -- signing keys and receipts -------------------------------------------------------------------


def signing_keys(conn: psycopg.Connection) -> list[SigningKeyRecord]:
    rows = conn.execute(
        "SELECT verifier_key, created_at, retired_at FROM signing_keys ORDER BY created_at, verifier_key"
    ).fetchall()
    return [SigningKeyRecord(*row) for row in rows]


def install_signing_key(conn: psycopg.Connection, verifier_key: str, now: int) -> None:
    """Make `verifier_key` the current key; any other current key is retired now."""
    conn.execute("UPDATE signing_keys SET retired_at = %s WHERE retired_at IS NULL AND verifier_key != %s",
                 (now, verifier_key))
    conn.execute("INSERT INTO signing_keys (verifier_key, created_at, retired_at) VALUES (%s, %s, NULL) "
                 "ON CONFLICT (verifier_key) DO UPDATE SET retired_at = NULL", (verifier_key, now))


def receipt_for_event(conn: psycopg.Connection, event_seq: int, new_id: str, created_at: int) -> ReceiptRecord:
    # Two instances asking at once: the event's row lock makes the second wait for the
    # first's COMMIT and then find its receipt (one active receipt per event).
    conn.execute("SELECT 1 FROM events WHERE seq = %s FOR UPDATE", (event_seq,))
    row = conn.execute(
        f"SELECT {_RECEIPT_COLUMNS} FROM receipts WHERE event_seq = %s AND revoked_at IS NULL "
        "ORDER BY created_at LIMIT 1", (event_seq,)).fetchone()
    if row is not None:
        return ReceiptRecord(*row)
    conn.execute("INSERT INTO receipts (id, event_seq, created_at, revoked_at) VALUES (%s, %s, %s, NULL)",
                 (new_id, event_seq, created_at))
    return ReceiptRecord(new_id, event_seq, created_at, None)


def get_receipt(conn: psycopg.Connection, receipt_id: str) -> ReceiptRecord | None:
    row = conn.execute(f"SELECT {_RECEIPT_COLUMNS} FROM receipts WHERE id = %s", (receipt_id,)).fetchone()
    return ReceiptRecord(*row) if row else None


def revoke_receipts(conn: psycopg.Connection, event_seq: int, revoked_at: int) -> int:
    return conn.execute("UPDATE receipts SET revoked_at = %s WHERE event_seq = %s AND revoked_at IS NULL",
                        (revoked_at, event_seq)).rowcount


def event_by_seq(conn: psycopg.Connection, seq: int) -> EventRecord | None:
    row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = %s", (seq,)).fetchone()
    return EventRecord._make(row) if row else None


# -- the Store protocol's part ------------------------------------------------------------------


class MerkleStore:
    """Mixed into PostgresStore: uses its writer and reader pool."""

    writer: Writer
    latest_checkpoint: CheckpointRecord | None = None
    read: Any
    write: Any
    write_sync: Any

    def _reload_tree(self, conn: psycopg.Connection, size: int) -> None:
        try:
            self.writer.state["tree"] = load_tree(conn, size)
        except ProofError:
            # Left stale on purpose: grow_tree re-reads it, and fails that group loudly.
            log.exception("could not reload the Merkle tree's right edge from its tiles")

    @property
    def tree_size(self) -> int:
        return self.writer.state["tree"].size

    def _remember_checkpoint(self, record: CheckpointRecord) -> None:
        latest = self.latest_checkpoint
        if latest is None or record.id > latest.id:
            self.latest_checkpoint = record

    async def append_checkpoint(self, build_note: Callable[[int, bytes], tuple[str, str]],
                                created_at: int) -> CheckpointRecord:
        return await self.writer.submit(AppendCheckpoint(build_note, created_at, self._remember_checkpoint))

    def append_checkpoint_sync(self, build_note: Callable[[int, bytes], tuple[str, str]],
                               created_at: int) -> CheckpointRecord:
        return self.writer.run_sync(AppendCheckpoint(build_note, created_at, self._remember_checkpoint))

    async def checkpoint_with_size(self, tree_size: int) -> CheckpointRecord | None:
        return await self.read(checkpoint_with_size, tree_size)

    async def checkpoints_page(self, after_size: int, after_id: int,
                               limit: int) -> tuple[list[CheckpointRecord], bool]:
        return await self.read(checkpoints_page, after_size, after_id, limit)

    async def with_tiles(self, fn: Callable[[Callable[[int, int], bytes | None]], Any]) -> Any:
        return await self.read(_with_tiles, fn)

    async def leaf_entries(self, first_seq: int, count: int) -> list[tuple[str, str]]:
        return await self.read(leaf_entries, first_seq, count)

    def signing_keys_sync(self) -> list[SigningKeyRecord]:
        return self._read_sync(signing_keys)  # type: ignore[attr-defined]

    async def signing_keys(self) -> list[SigningKeyRecord]:
        return await self.read(signing_keys)

    def install_signing_key_sync(self, verifier_key: str, now: int) -> None:
        self.write_sync(install_signing_key, verifier_key, now)

    async def receipt_for_event(self, event_seq: int, new_id: str, created_at: int) -> ReceiptRecord:
        return await self.write(receipt_for_event, event_seq, new_id, created_at)

    async def get_receipt(self, receipt_id: str) -> ReceiptRecord | None:
        return await self.read(get_receipt, receipt_id)

    async def revoke_receipts(self, event_seq: int, revoked_at: int) -> int:
        return await self.write(revoke_receipts, event_seq, revoked_at)

    async def get_event_by_seq(self, seq: int) -> EventRecord | None:
        return await self.read(event_by_seq, seq)


def _with_tiles(conn: psycopg.Connection, fn: Callable[[Callable[[int, int], bytes | None]], Any]) -> Any:
    return fn(lambda level, index: read_tile(conn, level, index))
