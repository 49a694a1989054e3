"""RFC 9162 (RFC 6962) Merkle tree hashing, proofs, and their verification.

Pure functions, shared by every storage backend. A proof is built from a *node source*:
a callable ``node(level, index)`` that returns the hash of the complete subtree at tree
level ``level`` (0 = leaves) covering leaves ``[index * 2**level, (index + 1) * 2**level)``.
The tiles of integrity/tiles.py provide one; tests build one from a list of leaves.

Every proof here is the list RFC 9162 §2.1.3.1 (PATH) and §2.1.4.1 (PROOF) define, deepest
node first, so it verifies with the algorithms of §2.1.3.2 and §2.1.4.2 (implemented below)
and with any RFC 6962 client (Go's x/mod/sumdb/tlog, transparency-dev/merkle, CT tools).
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256

NodeSource = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof was asked for a leaf or size the tree does not have."""


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def complete_subtree_hash(hashes: Sequence[bytes]) -> bytes:
    """The root over a power-of-two number of hashes (a complete subtree), pairwise."""
    level = list(hashes)
    if not level or len(level) & (len(level) - 1):
        raise ValueError(f"a complete subtree needs a power-of-two count, got {len(level)}")
    while len(level) > 1:
        level = [_sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


def split_point(n: int) -> int:
    """The largest power of two strictly below n (n > 1): where RFC 9162 splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def decompose(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as its maximal aligned complete subtrees, left to right: (level, index).

    For the ranges Merkle tree hashing meets (start is a multiple of a power of two at
    least as large as the range), these are exactly the subtrees RFC 9162 folds.
    """
    parts = []
    size = end - start
    position = start
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            if position % (1 << level):
                raise ValueError(f"range [{start}, {end}) is not aligned for Merkle tree hashing")
            parts.append((level, position >> level))
            position += 1 << level
    return parts


def fold(hashes: Sequence[bytes]) -> bytes:
    """Fold subtree hashes (left to right, decreasing sizes) right to left into one root."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def range_hash(start: int, end: int, node: NodeSource) -> bytes:
    """MTH(D[start:end]) from the node source."""
    return fold([node(level, index) for level, index in decompose(start, end)])


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH of a whole list of leaf hashes (reference implementation, any length)."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = split_point(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


def inclusion_proof(index: int, size: int, node: NodeSource) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    start, n, m = 0, size, index
    # Walk from the root down, collecting siblings; the proof lists them bottom up.
    siblings: list[tuple[int, int]] = []
    while n > 1:
        k = split_point(n)
        if m < k:
            siblings.append((start + k, start + n))
            n = k
        else:
            siblings.append((start, start + k))
            start, n, m = start + k, n - k, m - k
    for low, high in reversed(siblings):
        proof.append(range_hash(low, high, node))
    return proof


def consistency_proof(old_size: int, new_size: int, node: NodeSource) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1 (empty when old is 0 or equal)."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    parts: list[tuple[int, int]] = []
    start, n, m, whole = 0, new_size, old_size, True
    while m != n:
        k = split_point(n)
        if m <= k:
            parts.append((start + k, start + n))
            n = k
        else:
            parts.append((start, start + k))
            start, n, m, whole = start + k, n - k, m - k, False
    if not whole:
        parts.append((start, start + n))  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
    return [range_hash(low, high, node) for low, high in reversed(parts)]


# -- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ---------------------------------------------


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes | None:
    """The root the proof leads to, or None if the proof has the wrong shape."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != HASH_SIZE or sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    return root_from_inclusion_proof(index, size, leaf, proof) == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # every tree extends the empty one
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
