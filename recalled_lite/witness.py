"""`recalled-lite witness URL --key VERIFIER_KEY --state FILE [--interval SECONDS]`.

A witness remembers the last checkpoint it accepted and refuses any later one that does not
extend it: a smaller tree (rollback), the same size with another root, or a larger tree
without a valid consistency proof (a fork: history was rewritten). Every checkpoint must
carry a valid signature by VERIFIER_KEY. Only a checkpoint that passed is stored, atomically
(written beside the state file, fsynced, renamed), so the state never holds a half write.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
import time
from pathlib import Path

import httpx

from .integrity.checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from .integrity.merkle import verify_consistency
from .integrity.note import NoteError, Verifier, open_note

EXIT_OK, EXIT_INCONSISTENT, EXIT_UNREACHABLE = 0, 1, 3


class Inconsistent(Exception):
    """The log contradicts what it showed before, or is not signed by the key: alarm."""


class Unreachable(Exception):
    """The server could not be asked (network, 5xx, malformed answer): try again later."""


def _get(client: httpx.Client, path: str, **params: int) -> httpx.Response:
    try:
        response = client.get(path, params=params or None)
    except httpx.HTTPError as exc:
        raise Unreachable(f"GET {path}: {exc}") from None
    if response.status_code != 200:
        raise Unreachable(f"GET {path}: HTTP {response.status_code} {response.text[:200]}")
    return response


def _parse(note: str, verifier: Verifier, what: str) -> Checkpoint:
    try:
        return parse_checkpoint(open_note(note, [verifier]).text)
    except (NoteError, CheckpointError) as exc:
        raise Inconsistent(f"{what} does not verify with the given key: {exc}") from None


def read_state(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write_state(path: Path, note: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(note)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def check_once(client: httpx.Client, verifier: Verifier, state_path: Path) -> str:
    """Fetch, check against the stored checkpoint, store. Returns what happened."""
    note = _get(client, "/v1/checkpoint").text
    new = _parse(note, verifier, "the server's checkpoint")
    old_note = read_state(state_path)
    if old_note is None:
        write_state(state_path, note)
        return f"trusting the first checkpoint seen: {new.origin} at tree size {new.tree_size}"
    try:
        old = parse_checkpoint(old_note[: old_note.rindex("\n\n") + 1])
    except (ValueError, CheckpointError) as exc:
        raise Unreachable(f"the state file {state_path} is not a checkpoint ({exc}); "
                          "restore it, or delete it to trust the server's current checkpoint") from None
    if new.origin != old.origin:
        raise Inconsistent(f"the origin changed from {old.origin!r} to {new.origin!r}")
    if new.tree_size < old.tree_size:
        raise Inconsistent(f"ROLLBACK: the log now shows {new.tree_size} events, fewer than the "
                           f"{old.tree_size} it signed before")
    if new.tree_size == old.tree_size:
        if new.root != old.root:
            raise Inconsistent(f"FORK: two different roots signed for tree size {new.tree_size}: "
                               "history was rewritten")
        write_state(state_path, note)
        return f"unchanged: tree size {new.tree_size}"
    body = _get(client, "/v1/checkpoint/consistency", **{"from": old.tree_size, "to": new.tree_size})
    try:
        data = body.json()["data"]
        proof = [base64.b64decode(p, validate=True) for p in data["proof"]]
        if (data["from"], data["to"]) != (old.tree_size, new.tree_size):
            raise ValueError("the proof is for other sizes")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise Unreachable(f"malformed consistency proof: {exc}") from None
    if not verify_consistency(old.tree_size, new.tree_size, old.root, new.root, proof):
        raise Inconsistent(f"FORK: tree size {new.tree_size} does not extend the tree size {old.tree_size} "
                           "signed before (the consistency proof fails): history was rewritten")
    write_state(state_path, note)
    return f"consistent: tree size {old.tree_size} -> {new.tree_size}"


def run(url: str, verifier: Verifier, state_path: Path, interval: float | None,
        timeout: float = 30.0) -> int:
    say = sys.stderr.write
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client:
        while True:
            try:
                say(f"witness: {check_once(client, verifier, state_path)}\n")
            except Inconsistent as exc:
                say(f"witness: ALERT: {exc}. The state file keeps the last good checkpoint; "
                    "keep it as evidence and investigate the server.\n")
                return EXIT_INCONSISTENT
            except Unreachable as exc:
                say(f"witness: could not check: {exc}\n")
                if interval is None:
                    return EXIT_UNREACHABLE
            if interval is None:
                return EXIT_OK
            time.sleep(interval)
