"""Export formats (csv, json, ndjson), shared by `GET /v1/exports` and `recalled-lite export`.

Every exported event is the Event object of §4.3 plus the three fields an offline
verifier needs (docs/integrity.md): ``personalSalt`` (hex, null once erased),
``personalDigest`` and ``erasedAt`` (null unless erased). Events come in ascending
``seq``; the export ends with the chain head ``{seq, hash, checkpoint}`` as of its start,
``checkpoint`` being the signed checkpoint (a C2SP signed note) the export was cut at:
the one of tree size ``seq`` for ``GET /v1/exports``, the latest one signed for
``recalled-lite export`` (docs/integrity.md §9 says what each proves):

* json:   ``{"data": [event, ...], "head": {"seq": N, "hash": "sha256:...", "checkpoint": "..."}}``
* ndjson: one event per line, then a last line ``{"head": {"seq": N, "hash": "...", "checkpoint": "..."}}``

In an export of the whole log (no filter), a seq that a retention purge removed appears in
its place as ``{"purged": {"seq": N, "hash": "...", "signature": "..."}}`` (json, ndjson) or a
csv row whose ``record`` is ``purged`` with only ``seq``, ``hash`` and ``signature`` filled:
its tombstone, from which the chain and the Merkle leaf continue (docs/retention.md).
* csv:    a header row, then one row per event; the first column, ``record``, is
          ``event`` on those rows and ``head`` on the last row, which fills only
          ``seq``, ``hash`` and the last column, ``checkpoint`` (empty on event rows).
          ``targets`` and ``metadata`` are JSON text. A null
          is an empty unquoted field; every string is quoted, so ``""`` is an empty
          string (RFC 4180 quoting, CRLF line ends).

A renderer is fed chunk after chunk (on a reader thread, one call at a time) and
keeps only the little state the format needs (json: whether a comma is due).
"""

from __future__ import annotations

from typing import Any, Iterable

import msgspec
from msgspec import Raw

from .schemas import ActorOut, EventOut
from .storage.base import ExportRecord
from .timefmt import format_ms

FORMATS = ("csv", "json", "ndjson")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
}


class ExportEvent(EventOut):
    """The Event object plus what offline verification needs."""

    personal_salt: str | None
    personal_digest: str
    erased_at: str | None


_encoder = msgspec.json.Encoder()


def export_event(record: ExportRecord, project_id: str) -> ExportEvent:
    return ExportEvent(
        id=record.id, project_id=project_id, organization=record.organization, action=record.action,
        actor=ActorOut(record.actor_type, record.actor_id, record.actor_name, record.actor_email),
        targets=Raw(record.targets) if record.targets is not None else None,
        metadata=Raw(record.metadata) if record.metadata is not None else None,
        ip_address=record.ip_address, user_agent=record.user_agent,
        occurred_at=format_ms(record.occurred_at), received_at=format_ms(record.received_at),
        idempotency_key=record.idempotency_key, seq=record.seq, hash=record.hash,
        prev_hash=record.prev_hash, signature=record.signature,
        personal_salt=record.personal_salt.hex() if record.personal_salt is not None else None,
        personal_digest=record.personal_digest,
        erased_at=format_ms(record.erased_at) if record.erased_at is not None else None,
    )


def purged_record(stone: Any) -> dict[str, Any]:
    """A purged seq in an export: `{"purged": {"seq", "hash", "signature"}}` (the tombstone)."""
    return {"purged": {"seq": stone.seq, "hash": stone.hash, "signature": stone.signature}}


CSV_COLUMNS = (
    "record", "seq", "id", "projectId", "organization", "action", "actorType", "actorId",
    "actorName", "actorEmail", "targets", "metadata", "ipAddress", "userAgent", "occurredAt",
    "receivedAt", "idempotencyKey", "prevHash", "hash", "signature", "personalSalt",
    "personalDigest", "erasedAt", "checkpoint",
)


def _csv_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace('"', '""') + '"'


def _csv_line(values: Iterable[Any]) -> str:
    return ",".join(map(_csv_field, values)) + "\r\n"


class Renderer:
    """Turns chunks of ExportRecords into bytes of one format."""

    def __init__(self, fmt: str, project_id: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}")
        self.format = fmt
        self.project_id = project_id
        self.count = 0   # events written (tombstones not counted)
        self._items = 0  # events and tombstones: json needs a comma before the next one

    def header(self) -> bytes:
        if self.format == "json":
            return b'{"data":['
        if self.format == "csv":
            return ",".join(CSV_COLUMNS).encode() + b"\r\n"
        return b""

    def chunk(self, records: list[Any]) -> bytes:
        """ExportRecords, and (in a whole-log export) tombstones of purged seqs in their place."""
        if not records:
            return b""
        project_id = self.project_id
        if self.format == "csv":
            out = []
            for r in records:
                if type(r) is not ExportRecord:
                    out.append(_csv_line(("purged", r.seq) + (None,) * 16 + (r.hash, r.signature) + (None,) * 4))
                    continue
                out.append(_csv_line((
                    "event", r.seq, r.id, project_id, r.organization, r.action, r.actor_type,
                    r.actor_id, r.actor_name, r.actor_email, r.targets, r.metadata, r.ip_address,
                    r.user_agent, format_ms(r.occurred_at), format_ms(r.received_at),
                    r.idempotency_key, r.prev_hash, r.hash, r.signature,
                    r.personal_salt.hex() if r.personal_salt is not None else None,
                    r.personal_digest, format_ms(r.erased_at) if r.erased_at is not None else None,
                    None,
                )))
            data = "".join(out).encode("utf-8")
        else:
            events = [export_event(r, project_id) if type(r) is ExportRecord else purged_record(r) for r in records]
            if self.format == "ndjson":
                data = _encoder.encode_lines(events)
            else:
                data = _encoder.encode(events)[1:-1]  # the items of the array, comma-separated
                if self._items:
                    data = b"," + data
        self.count += sum(1 for r in records if type(r) is ExportRecord)
        self._items += len(records)
        return data

    def footer(self, head_seq: int, head_hash: str | None, checkpoint: str | None = None) -> bytes:
        head = {"seq": head_seq, "hash": head_hash, "checkpoint": checkpoint}
        if self.format == "json":
            return b'],"head":' + _encoder.encode(head) + b"}\n"
        if self.format == "ndjson":
            return _encoder.encode({"head": head}) + b"\n"
        return _csv_line(("head", head_seq) + (None,) * 16 + (head_hash,) + (None,) * 4 + (checkpoint,)).encode()
