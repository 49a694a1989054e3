"""`recalled-lite verify --export FILE --key VERIFIER_KEY`: check an export without the secret.

What is checked (docs/integrity.md §9 is the specification):

1. The file is exactly what the server writes for the values it holds: every ndjson line,
   csv row and the json document re-encode to the same bytes. An edit that still parses
   (a space, another escape, another timestamp spelling) is caught here.
2. The head's checkpoint is a signed note that verifies with VERIFIER_KEY, and a
   tlog-checkpoint body.
3. Each event on its own: its personalDigest (when the salt is there) and its hash, from its
   core document and its own prevHash (integrity/verify.py, without the HMAC).
4. A complete export (seq 1, 2, ... up to the head, each prevHash the previous hash) is the
   whole log: its leaves are recomputed (checkpoint.py) and the Merkle root over the first
   `tree size` of them must equal the checkpoint's root; the last event must be the head.
   Events after the checkpoint's size (a `recalled-lite export` cut while events arrived)
   are covered by the chain only, and reported.
5. A seq a retention purge removed is a `purged` record (its tombstone: seq, hash, signature)
   in a whole-log export: the next event's prevHash must be its hash and its leaf counts
   toward the root, so the checkpoint still proves the log; the report lists the purged ranges.
6. A filtered export holds some events only: each is genuine (3) and the checkpoint is
   genuine (2), but membership in the signed tree is not proven by the file, nor that no
   matching event is missing. The result says `complete: false`.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterator

import msgspec

from ..exporting import CSV_COLUMNS, _csv_line
from ..storage.base import ExportRecord
from ..timefmt import format_ms, parse_rfc3339_ms
from .checkpoint import CheckpointError, event_leaf_hash, parse_checkpoint
from .note import NoteError, Verifier, open_note
from .tiles import TreeEdge
from .retention import PurgedRanges
from .verify import ChainVerifier

_decode = msgspec.json.decode
_encode = msgspec.json.encode
_EVENT_KEYS = ["id", "projectId", "organization", "action", "actor", "targets", "metadata", "ipAddress",
               "userAgent", "occurredAt", "receivedAt", "idempotencyKey", "seq", "hash", "prevHash",
               "signature", "personalSalt", "personalDigest", "erasedAt"]
_ACTOR_KEYS = ["type", "id", "name", "email"]
_LEAF_CHUNK = 4096


class ExportFileError(ValueError):
    """The file is not an export this verifier can read."""


# -- readers: yield ("event" | "head", object, exact bytes?, bytes read so far) -------------------


def _ndjson(path: str) -> Iterator[tuple[str, dict, bool, int]]:
    done = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            done += len(line)
            body = line[:-1] if line.endswith(b"\n") else line
            try:
                obj = _decode(body)
            except msgspec.DecodeError as exc:
                raise ExportFileError(f"line {number} is not JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise ExportFileError(f"line {number} is not a JSON object")
            exact = line.endswith(b"\n") and _encode(obj) == body
            yield _kind(obj), obj, exact, done


def _kind(obj: dict) -> str:
    keys = list(obj)
    return "head" if keys == ["head"] else "purged" if keys == ["purged"] else "event"


def _json(path: str) -> Iterator[tuple[str, dict, bool, int]]:
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = _decode(data)
    except msgspec.DecodeError as exc:
        raise ExportFileError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or list(obj) != ["data", "head"] or not isinstance(obj["data"], list):
        raise ExportFileError('a json export is {"data": [...], "head": {...}}')
    exact = _encode(obj) + b"\n" == data
    for event in obj["data"]:
        yield ("purged" if isinstance(event, dict) and list(event) == ["purged"] else "event"), event, exact, 0
    yield "head", {"head": obj["head"]}, exact, len(data)


# One field: quoted (doubled quotes inside) or bare, then its separator.
_CSV_FIELD = re.compile(r'(?:"((?:[^"]|"")*)"|([^,"\r\n]*))(,|\r\n|$)', re.DOTALL)


def _csv_rows(text: str) -> Iterator[tuple[list[Any], str]]:
    position, row, start = 0, [], 0
    while position < len(text):
        match = _CSV_FIELD.match(text, position)
        if match is None or match.end() == position:
            raise ExportFileError(f"malformed csv at character {position}")
        quoted, bare, separator = match.groups()
        if quoted is not None:
            row.append(quoted.replace('""', '"'))
        elif bare == "":
            row.append(None)
        elif bare.isdigit() or (bare.startswith("-") and bare[1:].isdigit()):
            row.append(int(bare))
        else:
            raise ExportFileError(f"malformed csv field {bare!r}: strings are quoted")
        position = match.end()
        if separator != ",":
            yield row, text[start:position]
            row, start = [], position


def _csv(path: str) -> Iterator[tuple[str, dict, bool, int]]:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ExportFileError("the csv is not UTF-8") from None
    header_text = ",".join(CSV_COLUMNS) + "\r\n"  # the one unquoted row
    if not text.startswith(header_text):
        raise ExportFileError("the csv header is not the export's")
    rows = _csv_rows(text[len(header_text):])
    done = len(header_text)
    for row, row_text in rows:
        done += len(row_text.encode("utf-8"))
        if len(row) != len(CSV_COLUMNS):
            raise ExportFileError(f"a csv row has {len(row)} fields, not {len(CSV_COLUMNS)}")
        exact = _csv_line(row) == row_text
        rec = dict(zip(CSV_COLUMNS, row))
        if rec["record"] == "head":
            yield "head", {"head": {"seq": rec["seq"], "hash": rec["hash"], "checkpoint": rec["checkpoint"]}}, exact, done
            continue
        if rec["record"] == "purged":
            rest = [v for k, v in rec.items() if k not in ("record", "seq", "hash", "signature")]
            yield "purged", {"purged": {"seq": rec["seq"], "hash": rec["hash"], "signature": rec["signature"]}}, \
                exact and all(v is None for v in rest), done
            continue
        if rec["record"] != "event":
            raise ExportFileError("a csv row's record is neither event, purged nor head")
        try:
            targets = _decode(rec["targets"]) if rec["targets"] is not None else None
            metadata = _decode(rec["metadata"]) if rec["metadata"] is not None else None
        except (msgspec.DecodeError, TypeError):
            exact, targets, metadata = False, None, None
        yield "event", {
            "id": rec["id"], "projectId": rec["projectId"], "organization": rec["organization"],
            "action": rec["action"],
            "actor": {"type": rec["actorType"], "id": rec["actorId"], "name": rec["actorName"],
                      "email": rec["actorEmail"]},
            "targets": targets, "metadata": metadata, "ipAddress": rec["ipAddress"],
            "userAgent": rec["userAgent"], "occurredAt": rec["occurredAt"], "receivedAt": rec["receivedAt"],
            "idempotencyKey": rec["idempotencyKey"], "seq": rec["seq"], "hash": rec["hash"],
            "prevHash": rec["prevHash"], "signature": rec["signature"], "personalSalt": rec["personalSalt"],
            "personalDigest": rec["personalDigest"], "erasedAt": rec["erasedAt"],
        }, exact and rec["checkpoint"] is None, done


def _peek_tree_size(path: str, fmt: str) -> int | None:
    """The tree size the head's checkpoint claims (unverified: it is checked later), read
    before the events so the root can be taken at exactly that many leaves."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 65536))
            tail = f.read()
        if fmt == "json":
            note = _decode(tail[tail.rindex(b'"head":') + 7:-2])["checkpoint"]
        elif fmt == "csv":
            note = list(_csv_rows(tail[tail.rindex(b'\r\n"head",') + 2:].decode("utf-8")))[0][0][-1]
        else:
            note = _decode(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])["head"]["checkpoint"]
        return parse_checkpoint(note[: note.rindex("\n\n") + 1]).tree_size
    except (ValueError, KeyError, TypeError, IndexError, msgspec.DecodeError, CheckpointError):
        return None  # reported when the head itself is checked


def sniff_format(path: str) -> str:
    with open(path, "rb") as f:
        start = f.read(16)
    if start.startswith(b"record,"):
        return "csv"
    if start.startswith(b'{"data":'):
        return "json"
    return "ndjson"


# -- checks --------------------------------------------------------------------------------------


def _ms(value: Any, name: str) -> int:
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a timestamp")
    ms = parse_rfc3339_ms(value)
    if format_ms(ms) != value:
        raise ValueError(f"{name} is not in the export's form YYYY-MM-DDTHH:MM:SS.mmmZ")
    return ms


def _record(event: dict) -> ExportRecord:
    """The event as the chain verifier reads it; ValueError when a field is malformed."""
    if list(event) != _EVENT_KEYS or not isinstance(event["actor"], dict) or list(event["actor"]) != _ACTOR_KEYS:
        raise ValueError("the event object does not have the export's fields")
    salt = event["personalSalt"]
    if salt is not None and (not isinstance(salt, str) or bytes.fromhex(salt).hex() != salt):
        raise ValueError("personalSalt is not lowercase hex")
    if not isinstance(event["seq"], int) or isinstance(event["seq"], bool) or event["seq"] < 1:
        raise ValueError("seq is not a positive integer")
    for name in ("hash", "signature", "personalDigest", "id", "action"):
        if not isinstance(event[name], str):
            raise ValueError(f"{name} is not a string")
    actor = event["actor"]
    return ExportRecord(
        event["seq"], event["id"], event["organization"], event["action"], actor["type"], actor["id"],
        actor["name"], actor["email"],
        _encode(event["targets"]) if event["targets"] is not None else None,
        _encode(event["metadata"]) if event["metadata"] is not None else None,
        event["ipAddress"], event["userAgent"], _ms(event["occurredAt"], "occurredAt"),
        _ms(event["receivedAt"], "receivedAt"), event["idempotencyKey"], event["prevHash"], event["hash"],
        event["signature"], bytes.fromhex(salt) if salt is not None else None, event["personalDigest"],
        _ms(event["erasedAt"], "erasedAt") if event["erasedAt"] is not None else None,
    )


def verify_export(path: str, verifier: Verifier, *,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Check an export file (see the module doc). Returns the report `verify --export` prints."""
    fmt = sniff_format(path)
    total = os.path.getsize(path)
    reader = {"ndjson": _ndjson, "json": _json, "csv": _csv}[fmt](path)
    failure: dict[str, Any] | None = None
    head: dict[str, Any] | None = None
    project_id: str | None = None
    checked = 0
    last_seq, last_hash = 0, None
    contiguous = True
    leaves: list[bytes] = []
    edge = TreeEdge()
    target = _peek_tree_size(path, fmt)
    purged = PurgedRanges()
    root_at_target = edge.root() if target == 0 else None

    def fail(seq: Any, event_id: Any, reason: str) -> None:
        nonlocal failure
        if failure is None:
            failure = {"seq": seq, "id": event_id, "reason": reason}

    try:
        for kind, obj, exact, done in reader:
            if progress is not None and done:
                progress(done, total)
            if kind == "head":
                if head is not None:
                    fail(None, None, "the export has two heads")
                head = obj["head"] if isinstance(obj.get("head"), dict) else {}
                if not exact:
                    fail(None, None, "the head is not written the way the server writes it (edited?)")
                continue
            if head is not None:
                fail(None, None, "events follow the head")
            if kind == "purged":
                # A seq a retention purge removed: its tombstone links the chain (the next
                # prevHash) and gives the Merkle leaf, so a complete export still proves the root.
                stone = obj["purged"] if isinstance(obj.get("purged"), dict) else {}
                seq = stone.get("seq")
                if not exact:
                    fail(seq, None, "not written the way the server writes it (edited?)")
                if (list(stone) != ["seq", "hash", "signature"] or not isinstance(seq, int) or isinstance(seq, bool)
                        or not isinstance(stone["hash"], str) or not isinstance(stone["signature"], str)):
                    fail(seq, None, "malformed purged record")
                    continue
                if seq <= last_seq:
                    fail(seq, None, f"seq {seq} does not follow seq {last_seq}")
                    continue
                if seq != last_seq + 1:
                    contiguous = False
                if contiguous and target is not None and seq <= target:
                    leaves.append(event_leaf_hash(stone["hash"], stone["signature"]))
                    if seq == target:
                        edge, _ = edge.append(leaves)
                        leaves, root_at_target = [], edge.root()
                    elif len(leaves) >= _LEAF_CHUNK:
                        edge, _ = edge.append(leaves)
                        leaves = []
                purged.add(seq)
                last_seq, last_hash = seq, stone["hash"]
                continue
            seq, event_id = obj.get("seq"), obj.get("id")
            if not exact:
                fail(seq, event_id, "not written the way the server writes it (edited?)")
            try:
                record = _record(obj)
            except (ValueError, TypeError) as exc:
                fail(seq, event_id, f"malformed event: {exc}")
                continue
            if project_id is None:
                project_id = obj["projectId"]
            if not isinstance(obj["projectId"], str) or obj["projectId"] != project_id:
                fail(seq, event_id, "projectId differs from the first event's")
                continue
            if record.seq <= last_seq:
                fail(seq, event_id, f"seq {record.seq} does not follow seq {last_seq}")
                continue
            own = ChainVerifier(project_id, None, prev_hash=record.prev_hash, prev_seq=record.seq - 1)
            if not own.feed(record):
                fail(seq, event_id, own.failure.reason)
                continue
            if record.seq == last_seq + 1:
                if record.prev_hash != last_hash:
                    fail(seq, event_id, "prevHash is not the previous event's hash")
            else:
                contiguous = False
            if contiguous and target is not None and record.seq <= target:
                leaves.append(event_leaf_hash(record.hash, record.signature))
                if record.seq == target:
                    edge, _ = edge.append(leaves)
                    leaves, root_at_target = [], edge.root()
                elif len(leaves) >= _LEAF_CHUNK:
                    edge, _ = edge.append(leaves)
                    leaves = []
            last_seq, last_hash = record.seq, record.hash
            checked += 1
    except ExportFileError as exc:
        fail(None, None, str(exc))

    report: dict[str, Any] = {"format": fmt, "checked": checked, "complete": False, "head": None,
                              "checkpoint": None}
    if head is None:
        fail(None, None, "the export has no head (cut short?)")
    else:
        report["head"] = {"seq": head.get("seq"), "hash": head.get("hash")}
        _check_checkpoint(head, verifier, report, fail)
        complete = contiguous and (last_seq, last_hash) == (head.get("seq"), head.get("hash"))
        report["complete"] = complete
        if contiguous and not complete and checked and last_seq >= (head.get("seq") or 0):
            fail(last_seq, None, "the last event is not the head")
        cp = report["checkpoint"]
        if complete and cp is not None:
            size = cp["treeSize"]
            if size > last_seq:
                fail(None, None, f"the checkpoint covers {size} events but the export holds {last_seq}")
            else:
                # The root over the first `size` leaves (the rest are after the checkpoint).
                matches = size == target and root_at_target == cp["_root"]
                cp["rootMatches"] = matches
                cp["coveredEvents"] = size
                report["afterCheckpoint"] = last_seq - size
                if not matches:
                    fail(None, None, "the Merkle root of the events is not the checkpoint's root")
        if cp is not None:
            cp.pop("_root", None)
    if purged.count:
        report["purged"] = purged.report()
    report["valid"] = failure is None
    report["firstInvalid"] = failure
    return report


def _check_checkpoint(head: dict, verifier: Verifier, report: dict, fail: Callable[..., None]) -> None:
    note = head.get("checkpoint")
    if not isinstance(note, str):
        fail(None, None, "the head carries no checkpoint (an export from before signed checkpoints?)")
        return
    try:
        opened = open_note(note, [verifier])
        checkpoint = parse_checkpoint(opened.text)
    except (NoteError, CheckpointError) as exc:
        fail(None, None, f"the checkpoint does not verify with the key given: {exc}")
        return
    report["checkpoint"] = {"origin": checkpoint.origin, "treeSize": checkpoint.tree_size,
                            "signedBy": verifier.vkey, "rootMatches": None, "_root": checkpoint.root}
