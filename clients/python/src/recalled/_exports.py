"""Exports: whole (``fetch``) or streamed (``stream``), always checked for their chain head.

The server streams an export and ends it with the chain head (the last JSON member, the last
ndjson line, the last CSV row). An export that ends without it was cut off mid-way: every
reader here raises :class:`~recalled.errors.IncompleteExportError` instead of handing back a
silently truncated log.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import IO, AsyncIterator, Iterator

import httpx

from .errors import IncompleteExportError
from .types import ChainHead, Event, Export

# The head is the last record; its last field (the signed checkpoint) is quoted and spans lines.
_CSV_HEAD = re.compile(rb'(?:^|\r\n)"head",\d+,.*\r\n$', re.DOTALL)


def chain_head_header(response: httpx.Response) -> ChainHead | None:
    """``Recalled-Chain-Head: <seq> <hash>``: known before the body starts."""
    value = response.headers.get("recalled-chain-head")
    if not value:
        return None
    seq, _, digest = value.partition(" ")
    return ChainHead(seq=int(seq), hash=digest or None)


def parse_whole(fmt: str, body: bytes) -> Export:
    if fmt == "json":
        try:
            payload = json.loads(body)
        except ValueError:
            raise IncompleteExportError("the JSON export is cut off (it does not parse)") from None
        if not isinstance(payload, dict) or "head" not in payload:
            raise IncompleteExportError("the JSON export has no chain head")
        return Export([Event.from_wire(e) for e in payload.get("data", [])], ChainHead.from_wire(payload["head"]))
    if fmt == "ndjson":
        events: list[Event] = []
        head: ChainHead | None = None
        for line in body.splitlines():
            head = _ndjson_line(line, events, head)
        if head is None:
            raise IncompleteExportError("the ndjson export ended without its chain head line")
        return Export(events, head)
    raise ValueError("fetch() parses json and ndjson; use exports.stream(format='csv') for the CSV file")


def _ndjson_line(line: bytes, events: list[Event], head: ChainHead | None) -> ChainHead | None:
    if not line.strip():
        return head
    if head is not None:
        raise IncompleteExportError("the ndjson export has data after its chain head")
    try:
        record = json.loads(line)
    except ValueError:
        raise IncompleteExportError("the ndjson export is cut off inside a line") from None
    if "head" in record and "id" not in record:
        return ChainHead.from_wire(record["head"])
    events.append(Event.from_wire(record))
    return None


def ends_with_head(fmt: str, tail: bytes) -> bool:
    """Whether the last bytes of an export are its chain head record."""
    if fmt == "json":
        return re.search(rb'\],"head":\{[^{}]*\}\}\n?$', tail) is not None
    if fmt == "ndjson":
        last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        return last.startswith(b'{"head":')
    return _CSV_HEAD.search(tail) is not None


class _TailKeeper:
    """Remembers the last few KiB that went by, to check the head at the end."""

    def __init__(self) -> None:
        self.tail = b""

    def feed(self, chunk: bytes) -> bytes:
        self.tail = (self.tail + chunk)[-8192:]
        return chunk


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


class ExportStream:
    """An export being received (sync). Use one reader: ``iter_bytes``, ``iter_events``
    (ndjson) or ``write_to``."""

    def __init__(self, fmt: str, response: httpx.Response) -> None:
        self.format = fmt
        self.response = response
        self.chain_head = chain_head_header(response)
        #: The head record read at the end of the body (after a complete read).
        self.head: ChainHead | None = None

    def iter_bytes(self) -> Iterator[bytes]:
        keeper = _TailKeeper()
        for chunk in self.response.iter_bytes():
            yield keeper.feed(chunk)
        if not ends_with_head(self.format, keeper.tail):
            raise IncompleteExportError(f"the {self.format} export ended without its chain head")
        self.head = self.chain_head

    def iter_events(self) -> Iterator[Event]:
        if self.format != "ndjson":
            raise ValueError("iter_events() reads ndjson exports: stream(format='ndjson')")
        events: list[Event] = []
        head: ChainHead | None = None
        for line in self.response.iter_lines():
            head = _ndjson_line(line.encode(), events, head)
            yield from events
            events.clear()
        if head is None:
            raise IncompleteExportError("the ndjson export ended without its chain head line")
        self.head = head

    def write_to(self, target: str | os.PathLike[str] | IO[bytes]) -> int:
        """Write the export; a path gets ``<path>.partial`` renamed once the head arrived."""
        if hasattr(target, "write"):
            return _write(self.iter_bytes(), target)  # type: ignore[arg-type]
        path = Path(target)
        partial = _partial(path)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                written = _write(self.iter_bytes(), out)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, path)
        return written


def _write(chunks: Iterator[bytes], out: IO[bytes]) -> int:
    written = 0
    for chunk in chunks:
        out.write(chunk)
        written += len(chunk)
    return written


class AsyncExportStream:
    """An export being received (async); the same readers as :class:`ExportStream`."""

    def __init__(self, fmt: str, response: httpx.Response) -> None:
        self.format = fmt
        self.response = response
        self.chain_head = chain_head_header(response)
        self.head: ChainHead | None = None

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        keeper = _TailKeeper()
        async for chunk in self.response.aiter_bytes():
            yield keeper.feed(chunk)
        if not ends_with_head(self.format, keeper.tail):
            raise IncompleteExportError(f"the {self.format} export ended without its chain head")
        self.head = self.chain_head

    async def iter_events(self) -> AsyncIterator[Event]:
        if self.format != "ndjson":
            raise ValueError("iter_events() reads ndjson exports: stream(format='ndjson')")
        events: list[Event] = []
        head: ChainHead | None = None
        async for line in self.response.aiter_lines():
            head = _ndjson_line(line.encode(), events, head)
            for event in events:
                yield event
            events.clear()
        if head is None:
            raise IncompleteExportError("the ndjson export ended without its chain head line")
        self.head = head

    async def write_to(self, target: str | os.PathLike[str]) -> int:
        path = Path(target)
        partial = _partial(path)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in self.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, path)
        return written

