"""C2SP tlog-checkpoint bodies, and what the log's leaves are (docs/integrity.md §7).

The leaf of event `seq` is leaf index `seq - 1`; its data is

    ascii(hash) || 0x0A || ascii(signature)

the event's `hash` ("sha256:<hex>") and `signature` ("hmac-sha256:<hex>") strings as they
appear in the event, joined by a newline. The chain hash commits to the core document and,
through `personalDigest` only, to the personal fields, so erasure leaves every leaf (and
every proof and checkpoint) unchanged; including the HMAC fixes it publicly as well.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from .merkle import HASH_SIZE, leaf_hash


class CheckpointError(ValueError):
    """The text is not a tlog-checkpoint body."""


def leaf_data(event_hash: str, signature: str) -> bytes:
    return event_hash.encode("ascii") + b"\n" + signature.encode("ascii")


def event_leaf_hash(event_hash: str, signature: str) -> bytes:
    return leaf_hash(leaf_data(event_hash, signature))


def default_origin(project_id: str) -> str:
    return f"recalled-lite/{project_id}"


def valid_origin(origin: str) -> bool:
    return bool(origin) and "+" not in origin and not any(c.isspace() for c in origin) and origin.isprintable()


def format_checkpoint(origin: str, tree_size: int, root: bytes) -> str:
    if not valid_origin(origin):
        raise CheckpointError(f"invalid origin {origin!r}: non-empty, no spaces or '+'")
    return f"{origin}\n{tree_size}\n{base64.b64encode(root).decode()}\n"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root: bytes
    extensions: tuple[str, ...] = ()


_SIZE = re.compile(r"(0|[1-9][0-9]{0,19})\Z")


def parse_checkpoint(text: str) -> Checkpoint:
    if not text.endswith("\n"):
        raise CheckpointError("a checkpoint ends in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise CheckpointError("a checkpoint has at least three non-empty lines")
    origin, size_text, root_text, *extensions = lines
    if not _SIZE.match(size_text):
        raise CheckpointError("the tree size is not a decimal number without leading zeros")
    try:
        root = base64.b64decode(root_text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CheckpointError("the root hash is not base64") from None
    if len(root) != HASH_SIZE:
        raise CheckpointError("the root hash is not 32 bytes")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))
