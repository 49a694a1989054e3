"""C2SP tlog-tiles arithmetic: tile coordinates and paths, the tree's right edge, a node source.

A tile at level L, index N holds up to 256 consecutive hashes of tree level 8*L: hash i is
MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L]). The rightmost tile of a level is
usually partial (1..255 hashes); a partial tile of width W is a prefix of the tile it grows
into, so a store keeps one row per (L, N), the widest version, and serves any narrower one as
its prefix. Nothing here touches storage: the writer feeds leaf hashes to a TreeEdge and
persists the tiles it reports; readers hand TileNodes a function that reads a stored tile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .merkle import EMPTY_ROOT, HASH_SIZE, ProofError, complete_subtree_hash, fold

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes
FULL_TILE_BYTES = TILE_WIDTH * HASH_SIZE  # 8192
ENTRIES = "entries"

TileReader = Callable[[int, int], "bytes | None"]  # (level, index) -> the stored (widest) tile


def tile_width(level: int, index: int, tree_size: int) -> int:
    """How many hashes tile (level, index) has in a tree of `tree_size` leaves (0 = none yet)."""
    hashes_at_level = tree_size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, hashes_at_level - index * TILE_WIDTH))


def tiles_for_size(tree_size: int) -> list[tuple[int, int, int]]:
    """The rightmost tile of each level for `tree_size`: (level, index, width), widths >= 1.

    Full tiles left of these are complete and never change; these are the ones a client
    fetches (as `.p/<W>` when W < 256) to check a checkpoint of that size.
    """
    out = []
    level = 0
    while tree_size >> (TILE_HEIGHT * level):
        count = tree_size >> (TILE_HEIGHT * level)
        width = count % TILE_WIDTH
        if width:
            out.append((level, count // TILE_WIDTH, width))
        level += 1
    return out


# -- paths --------------------------------------------------------------------------------------


def encode_index(index: int) -> str:
    """1234067 -> "x001/x234/067" (zero-padded 3-digit elements, all but the last x-prefixed)."""
    if index < 0:
        raise ValueError("a tile index is non-negative")
    text = f"{index % 1000:03d}"
    index //= 1000
    while index:
        text = f"x{index % 1000:03d}/{text}"
        index //= 1000
    return text


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    """The path below the log prefix: tile/<L>/<N>[.p/<W>] (level may be "entries")."""
    path = f"tile/{level}/{encode_index(index)}"
    return path if width == TILE_WIDTH else f"{path}.p/{width}"


_LEVEL = re.compile(r"(0|[1-9][0-9]?)\Z")
_WIDTH = re.compile(r"([1-9][0-9]{0,2})\Z")
_ELEMENT = re.compile(r"x?[0-9]{3}\Z")


@dataclass(frozen=True, slots=True)
class TileRef:
    level: int | str  # an int 0..63, or "entries" for an entry bundle
    index: int
    width: int  # 256 for a full tile


def parse_tile_path(path: str) -> TileRef | None:
    """The tile a path after "tile/" names, or None unless it is canonical C2SP form."""
    level_text, slash, rest = path.partition("/")
    if not slash or not rest:
        return None
    if level_text == ENTRIES:
        level: int | str = ENTRIES
    elif _LEVEL.match(level_text) and int(level_text) <= 63:
        level = int(level_text)
    else:
        return None
    width = TILE_WIDTH
    index_text, dot_p, width_text = rest.partition(".p/")
    if dot_p:
        if not _WIDTH.match(width_text) or int(width_text) >= TILE_WIDTH:
            return None
        width = int(width_text)
    elements = index_text.split("/")
    if not all(_ELEMENT.match(e) for e in elements):
        return None
    index = 0
    for element in elements:
        index = index * 1000 + int(element.lstrip("x"))
    # The one spelling encode_index produces (no "x000/" padding, x on all but the last).
    if encode_index(index) != index_text:
        return None
    return TileRef(level, index, width)


# -- the writer's right edge ------------------------------------------------------------------


class TreeEdge:
    """The rightmost (partial) tile of every level: all an append needs.

    `append` takes the new leaf hashes of a write group and returns the tiles to persist,
    each once: tiles that became full, and the new rightmost partial tiles. The edge is
    copied, changed and returned (the caller keeps the old one until its transaction
    commits), so a failed group leaves the in-memory edge as it was.
    """

    __slots__ = ("size", "partial")

    def __init__(self, size: int = 0, partial: list[bytes] | None = None) -> None:
        self.size = size
        self.partial = partial if partial is not None else []

    @classmethod
    def load(cls, tree_size: int, read_tile: TileReader) -> "TreeEdge":
        """Rebuild the edge of a tree of `tree_size` leaves from its stored tiles."""
        partial: list[bytes] = []
        level = 0
        while tree_size >> (TILE_HEIGHT * level):
            count = tree_size >> (TILE_HEIGHT * level)
            width = count % TILE_WIDTH
            data = b""
            if width:
                stored = read_tile(level, count // TILE_WIDTH) or b""
                if len(stored) < width * HASH_SIZE:
                    raise ProofError(f"tile {tile_path(level, count // TILE_WIDTH, width)} is missing "
                                     f"or too short for a tree of {tree_size} leaves")
                data = bytes(stored[: width * HASH_SIZE])
            partial.append(data)
            level += 1
        return cls(tree_size, partial)

    def append(self, leaf_hashes: list[bytes]) -> tuple["TreeEdge", list[tuple[int, int, int, bytes]]]:
        """(the new edge, [(level, index, hashes it had before, tile bytes), ...]) after
        appending the leaves: a store need only write what lies past the old width."""
        size = self.size
        first = self.partial[0] if self.partial else b""
        if len(first) + len(leaf_hashes) * HASH_SIZE < FULL_TILE_BYTES:
            # The common case (255 appends in 256): the level-0 tile grows and fills no tile.
            grown = first + b"".join(leaf_hashes)
            partial = [grown, *self.partial[1:]] if self.partial else [grown]
            had = len(first) // HASH_SIZE
            return TreeEdge(size + len(leaf_hashes), partial), [(0, size // TILE_WIDTH, had, grown)]
        partial = list(self.partial)
        written: list[tuple[int, int, int, bytes]] = []
        pending: list[bytes] = list(leaf_hashes)
        level = 0
        # Level by level: what overflows a tile becomes one hash on the level above.
        while pending:
            if level == len(partial):
                partial.append(b"")
            count_before = size >> (TILE_HEIGHT * level)  # hashes on this level so far
            buffer = bytearray(partial[level])
            had = len(buffer) // HASH_SIZE
            promoted: list[bytes] = []
            index = count_before // TILE_WIDTH
            for h in pending:
                buffer += h
                if len(buffer) == FULL_TILE_BYTES:
                    full = bytes(buffer)
                    written.append((level, index, had, full))
                    promoted.append(complete_subtree_hash(
                        [full[i:i + HASH_SIZE] for i in range(0, FULL_TILE_BYTES, HASH_SIZE)]))
                    buffer = bytearray()
                    had = 0
                    index += 1
            partial[level] = bytes(buffer)
            if buffer:
                written.append((level, index, had, partial[level]))
            pending = promoted
            level += 1
        return TreeEdge(size + len(leaf_hashes), partial), written

    def root(self) -> bytes:
        """The tree hash at `size`: the right edge's complete subtrees, folded."""
        if self.size == 0:
            return EMPTY_ROOT
        subtrees: list[bytes] = []
        for level in range(len(self.partial) - 1, -1, -1):
            data = self.partial[level]
            hashes = [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
            position = 0
            for bit in range(TILE_HEIGHT - 1, -1, -1):
                if len(hashes) >> bit & 1:
                    subtrees.append(complete_subtree_hash(hashes[position:position + (1 << bit)]))
                    position += 1 << bit
        return fold(subtrees)


# -- reading nodes out of tiles ---------------------------------------------------------------


class TileNodes:
    """A node source (merkle.NodeSource) over stored tiles, for a tree of `tree_size` leaves.

    Node (level, index) lives in tile level level // 8; a node between tile levels is the
    complete subtree over 2**(level % 8) of that tile's hashes. Tiles are read once per
    instance (one proof or one request).
    """

    def __init__(self, tree_size: int, read_tile: TileReader) -> None:
        self.tree_size = tree_size
        self.read_tile = read_tile
        self._tiles: dict[tuple[int, int], bytes] = {}

    def _tile(self, level: int, index: int) -> bytes:
        key = (level, index)
        data = self._tiles.get(key)
        if data is None:
            data = self.read_tile(level, index) or b""
            self._tiles[key] = data
        return data

    def __call__(self, level: int, index: int) -> bytes:
        if (index + 1) << level > self.tree_size:
            raise ProofError(f"node ({level}, {index}) is beyond a tree of {self.tree_size} leaves")
        tile_level, sub = divmod(level, TILE_HEIGHT)
        first = index << sub  # position on tree level 8 * tile_level
        tile_index, offset = divmod(first, TILE_WIDTH)
        data = self._tile(tile_level, tile_index)
        end = (offset + (1 << sub)) * HASH_SIZE
        if len(data) < end:
            raise ProofError(f"tile {tile_path(tile_level, tile_index)} is missing or too short")
        if sub == 0:
            return data[offset * HASH_SIZE:end]
        return complete_subtree_hash([data[i:i + HASH_SIZE] for i in range(offset * HASH_SIZE, end, HASH_SIZE)])
