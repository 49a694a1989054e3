"""The proofs and checkpoint bodies the API hands out, from the pure tree code over the
store's tiles (read on a reader thread; storage only reads tiles). Hashes are standard
base64, as in C2SP."""

from __future__ import annotations

import base64
from typing import Any

from .integrity import merkle
from .integrity.checkpoint import event_leaf_hash
from .integrity.tiles import TileNodes
from .storage.base import CheckpointRecord
from .timefmt import format_ms


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def checkpoint_out(record: CheckpointRecord) -> dict[str, Any]:
    return {
        "treeSize": record.tree_size,
        "rootHash": b64(record.root_hash),
        "keyName": record.key_name,
        "createdAt": format_ms(record.created_at),
        "checkpoint": record.note,
    }


async def inclusion(store: Any, seq: int, event_hash: str, signature: str,
                    checkpoint: CheckpointRecord) -> dict[str, Any]:
    size = checkpoint.tree_size
    proof = await store.with_tiles(lambda read: merkle.inclusion_proof(seq - 1, size, TileNodes(size, read)))
    return {
        "leafIndex": seq - 1,
        "leafHash": b64(event_leaf_hash(event_hash, signature)),
        "treeSize": size,
        "proof": [b64(p) for p in proof],
        "checkpoint": checkpoint.note,
    }


async def consistency(store: Any, old_size: int, new_size: int) -> list[str]:
    proof = await store.with_tiles(
        lambda read: merkle.consistency_proof(old_size, new_size, TileNodes(new_size, read)))
    return [b64(p) for p in proof]
