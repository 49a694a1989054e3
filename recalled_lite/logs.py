"""The server's log: one JSON object per line on stderr, and the access line of each request.

Under load one turn of the event loop answers many requests (a whole write group's worth), so
their access lines are held and leave in one write() at the end of that turn instead of one
write() each. Any other record first writes out the lines held before it, so the order on the
stream is the order of events; a process killed with SIGKILL loses at most the access lines of
its last turn, whose responses were written a moment before.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import msgspec

from .timefmt import format_ms

access_log = logging.getLogger("recalled_lite.access")
_lib_log = logging.getLogger("recalled_lite")
_INFO = logging.INFO
_encode = msgspec.json.Encoder().encode


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: easy to grep, easy to ship."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


class JsonLineHandler(logging.StreamHandler):
    """A stream handler that can hold access lines until the end of the event loop's turn."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._held: list[str] = []

    def hold(self, line: str) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._held.append(line)
            first = len(self._held) == 1
        if first:
            try:
                asyncio.get_running_loop().call_soon(self._write_held)
            except RuntimeError:  # no loop in this thread: nothing would come back for them
                self._write_held()

    def _write_held(self) -> None:
        try:
            self.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "access lines"}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._held:
                lines = "".join(self._held)
                self._held = []
                self.stream.write(lines)
            super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        if self._held:
            self.flush()
        super().emit(record)


def write_access_line(fields: dict[str, Any]) -> None:
    """The access line, the same JSON as JsonLineFormatter makes of access_log.info("request").

    While logging is as configure_logging() left it (one JsonLineHandler on "recalled_lite",
    nothing on the access logger), the line is made here (~2 us instead of ~9 us through
    Logger.info: LogRecord, findCaller) and held for the end of the loop's turn. Any other
    setup (a test's handler, a filter, another formatter) takes the logging path.
    """
    handlers = _lib_log.handlers
    if (len(handlers) == 1 and not access_log.handlers and access_log.propagate
            and not _lib_log.propagate and not access_log.filters and not _lib_log.filters):
        handler = handlers[0]
        if (type(handler) is JsonLineHandler and type(handler.formatter) is JsonLineFormatter
                and not handler.filters and handler.level <= _INFO and access_log.isEnabledFor(_INFO)):
            line = _encode({"ts": format_ms(time.time_ns() // 1_000_000), "level": "info",
                            "logger": access_log.name, "msg": "request", **fields})
            handler.hold(line.decode() + "\n")
            return
        if not access_log.isEnabledFor(_INFO):
            return
    access_log.info("request", extra={"fields": fields})


def configure_logging(level: str) -> None:
    handler = JsonLineHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    # uvicorn's own messages (startup, protocol errors) go through the same formatter.
    for name in ("recalled_lite", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
