"""How the Merkle tree's tiles are stored, the same layout on every backend: each tile as
strips of STRIP_HASHES hashes in merkle_tiles (level, idx, strip, hashes), so a group of
appends rewrites only the strips it touched. The tree math is integrity/tiles.py; each
backend's merkle.py reads a tile and upserts strips with its own SQL."""

from __future__ import annotations

from typing import Any, Callable

from ..integrity.merkle import HASH_SIZE
from ..integrity.tiles import TILE_WIDTH, TreeEdge

STRIP_HASHES = 16
STRIP_BYTES = STRIP_HASHES * HASH_SIZE


def strip_rows(tiles: list[tuple[int, int, int, bytes]]) -> list[tuple[int, int, int, bytes]]:
    """The strips a TreeEdge.append touched: from the one holding its first new hash on."""
    rows = []
    for level, index, had, data in tiles:
        for strip in range(had // STRIP_HASHES, (len(data) - 1) // STRIP_BYTES + 1):
            rows.append((level, index, strip, data[strip * STRIP_BYTES:(strip + 1) * STRIP_BYTES]))
    return rows


def stored_tree_size(conn: Any) -> int:
    """Leaves in the stored tree: where the last level-0 strip ends (no parameters: the same
    SQL on every backend)."""
    row = conn.execute(
        "SELECT idx, strip, length(hashes) FROM merkle_tiles WHERE level = 0 ORDER BY idx DESC, strip DESC LIMIT 1"
    ).fetchone()
    return row[0] * TILE_WIDTH + row[1] * STRIP_HASHES + row[2] // HASH_SIZE if row else 0


def load_tree(conn: Any, read_tile: Callable[[Any, int, int], bytes | None], size: int | None = None) -> TreeEdge:
    if size is None:
        size = stored_tree_size(conn)
    return TreeEdge.load(size, lambda level, index: read_tile(conn, level, index))
