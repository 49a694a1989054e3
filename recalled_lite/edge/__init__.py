"""The HTTP/1.1 layer: our own asyncio protocol on httptools, run by uvicorn.Server.

uvicorn keeps the sockets, signals and lifespan; this package owns everything between the bytes
and the ASGI application, because uvicorn's own protocol lets real clients break it:

- **Framing is ours** (protocol.py, framing.py): httptools parses the head only; the body is read
  by its Content-Length or chunk by chunk. An `Upgrade` the server does not perform (all of them:
  h2c from the JDK's HttpClient, websocket) is ignored and the request served as HTTP/1.1 with
  its body (RFC 9110 §7.8), and a body is never run as a request (no smuggling).
- **Pipelining**: the next request is parsed only when the current response is complete, so
  responses go out in order and junk after a valid request gets its 400 after that response.
- **Transfer codings**: only chunked; any other is 501. Transfer-Encoding with Content-Length is
  400 and close (RFC 9112 §6.3). A chunk whose declared size would pass
  `server.max_request_bytes` is 413 before any of it is read.
- **Deadlines**, one timer each and only while needed: the head within
  `server.header_timeout_seconds` of its first byte (408), the whole body within
  `server.body_timeout_seconds` of the head (408; after that a trickling body is only drained
  by the lingering close, then cut off), keep-alive idle `server.keepalive_seconds` (one timer
  for the whole server).
- **Lingering close**: after a response that ends the connection while the client may still be
  sending (413, 408, 400, shutdown), the server half-closes and reads and drops input until the
  client closes, up to `server.linger_bytes` / `server.linger_seconds`, so the client reads the
  answer instead of a reset.
- **Connection cap** `server.max_connections`: at the cap, the connection idle the longest (at
  least 1 s) is closed to make room; if none is, the newcomer gets 503 and is closed.
- **Graceful shutdown** (SIGTERM): in-flight requests finish; requests already received but not
  started, pipelined ones included, get 503 with Retry-After; connections waiting for a request
  are closed (after a short grace if they just got a response).

Errors answered here use the one error shape with `details` always present and carry an
`x-request-id`.
"""

from __future__ import annotations

import logging
import resource

from .protocol import EdgeProtocol
from .settings import EdgeSettings
from .table import ConnectionTable

__all__ = ["EdgeProtocol", "EdgeSettings", "protocol_class", "ensure_file_descriptors"]

log = logging.getLogger("recalled_lite.edge")

# Descriptors beyond the connections: the database and its WAL, readers, the listening socket,
# webhook connections, logs.
_SPARE_DESCRIPTORS = 256


def protocol_class(settings: EdgeSettings) -> type[EdgeProtocol]:
    """The protocol class for uvicorn.Config(http=...): one per server, with its own table."""
    return type("EdgeProtocol", (EdgeProtocol,), {
        "settings": settings,
        "table": ConnectionTable(settings.keepalive),
    })


def ensure_file_descriptors(max_connections: int) -> None:
    """Raise the soft descriptor limit so that the connection cap, not EMFILE, is what refuses
    connections (a soft limit of 1024 is common); warn when the hard limit does not allow it."""
    wanted = max_connections + _SPARE_DESCRIPTORS
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            if target < wanted:
                log.warning("the open-file limit is below server.max_connections", extra={"fields": {
                    "limit": target, "max_connections": max_connections,
                    "hint": "raise LimitNOFILE / ulimit -n, or lower server.max_connections"}})
    except (OSError, ValueError) as exc:
        log.warning("could not check the open-file limit", extra={"fields": {"error": str(exc)}})
