"""The HTTP/1.1 connection: framing, deadlines, flow control, lingering close, the connection
cap and graceful shutdown. uvicorn.Server runs it (sockets, signals, lifespan); see
edge/__init__.py for what it defends and why.

Framing is ours: the head ends at the first empty line (CRLF CRLF, the only terminator the strict
parser accepts), httptools parses exactly those bytes, and the body is then read by its declared
length or chunk by chunk (edge/framing.py). So a body is always consumed as a body, whatever the
head says (an `Upgrade` we do not perform is just a header), and the next request is parsed only
after the current response is complete: pipelined requests are answered in order, and junk
after a valid request gets its 400 after that request's response.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import APIError, RequestTimeout, Unavailable
from ..ids import new_id
from .cycle import RequestCycle
from .framing import ChunkedBody
from .head import HeadRefused, RequestHead
from .replies import error_body, error_headers, error_reply
from .settings import EdgeSettings
from .table import ConnectionTable

log = logging.getLogger("recalled_lite.edge")

_HEAD_END = b"\r\n\r\n"
# At shutdown a connection waiting for its next request gets this long before it is closed: a
# client that just read a response is usually writing its next request, which then gets a 503
# instead of a reset. A connection quiet for longer is closed at once.
SHUTDOWN_IDLE_GRACE = 0.5
# Making room at the connection cap closes a keep-alive connection only if it has been idle at
# least this long: one idle for less is probably about to send its next request.
EVICT_MIN_IDLE = 1.0

# Phases of a connection.
_HEAD = 0       # reading a request head (or idle between requests)
_BODY = 1       # the application runs, its body is still arriving
_WAIT = 2       # the request is in, its response is not complete: input is kept, reading paused
_STALLED = 3    # the body failed (timeout, bad framing): input is dropped, reading paused
_LINGER = 4     # the last response is written: input is drained and dropped, then close
_CLOSED = 5


class EdgeProtocol(asyncio.Protocol):
    # Set per server by protocol_class().
    settings: EdgeSettings
    table: ConnectionTable

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.root_path = config.root_path
        self.app_state = app_state
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks

        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.phase = _HEAD
        self.cycle: RequestCycle | None = None
        self.write_paused = False
        self._drain_waiter: asyncio.Future | None = None
        self._read_paused = False
        self._pending = b""          # input after the current request, parsed once it is answered
        self._reusable = True        # False once the connection must close after this response
        self._peer_done = False      # the client half-closed its side
        self._shutting_down = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._other_timer: asyncio.TimerHandle | None = None  # linger end, or shutdown close
        self._linger_left = 0
        self._body_left = 0
        self._chunked: ChunkedBody | None = None
        self._quiet_since = 0.0
        self.head: RequestHead = None  # type: ignore[assignment]

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        settings = self.settings
        if len(self.connections) >= settings.max_connections and not self._make_room():
            self._refuse_connection(transport)
            return
        self.connections.add(self)
        server, client = _addresses(transport)
        self._base_scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "server": server, "client": client,
            "scheme": "https" if transport.get_extra_info("sslcontext") else "http",
            "root_path": self.root_path, "state": self.app_state,
        }
        self.head = RequestHead(settings, self._base_scope)
        self._quiet_since = self.loop.time()
        self._head_timer = self.loop.call_later(settings.header_timeout, self._head_too_slow)
        if self.table.shutting_down:
            self.shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = _CLOSED
        if self.head is not None:
            self.head.release()
        self.connections.discard(self)
        self.table.forget(self)
        self._cancel_timers()
        if self.cycle is not None:
            self.cycle.lose_connection()
        self._writable()

    def eof_received(self) -> bool | None:
        # The client will send nothing more. A request already in is still answered (the
        # transport stays open for writing); a body cut short is a client disconnect.
        self._peer_done = True
        if self.phase == _WAIT or (self.phase == _STALLED and self.cycle is not None):
            self._reusable = False
            return True
        return False

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == _HEAD:
            self.table.forget(self)
            self._receive_head(data)
        elif phase == _BODY:
            rest = self._receive_body(data)
            if rest:
                self._keep_pending(rest)
        elif phase == _WAIT:
            self._keep_pending(data)
        elif phase == _LINGER:
            self._linger_left -= len(data)
            if self._linger_left <= 0:
                self.transport.close()
        else:  # _STALLED: the body failed; nothing more of this connection is read
            self.pause_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self._writable()

    def _writable(self) -> None:
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        if self.write_paused:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter

    # -- what the server calls (uvicorn.Server.shutdown) ----------------------------------------

    def shutdown(self) -> None:
        """Graceful shutdown: in-flight and received requests are answered (503 for those not
        started yet), idle connections are closed; see SHUTDOWN_IDLE_GRACE."""
        self.table.shutting_down = True
        if self._shutting_down:
            return
        self._shutting_down = True
        if self.phase == _HEAD:
            self._close_when_quiet()

    # -- reading a head ----------------------------------------------------------------------

    def _receive_head(self, data: bytes) -> None:
        try:
            rest = self.head.feed(data)
        except HeadRefused as refused:
            self._refuse(refused.error)
            return
        if rest is None:
            if self._head_timer is None:  # the deadline runs from the head's first byte
                self._head_timer = self.loop.call_later(self.settings.header_timeout, self._head_too_slow)
            return
        self._start_request(rest)

    # -- a request ---------------------------------------------------------------------------

    def _start_request(self, rest: bytes) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        head = self.head
        self.head = RequestHead(self.settings, self._base_scope)
        cycle = RequestCycle(self, head.scope, head.keep_alive)
        self.cycle = cycle
        if head.body_length is None:
            self._chunked = ChunkedBody(self.settings.max_request_bytes, self.settings.max_header_bytes)
        else:
            self._chunked, self._body_left = None, head.body_length
        self.phase = _BODY
        if self._chunked is None and not self._body_left:
            cycle.end_body()
            self.phase = _WAIT
        elif rest:
            rest = self._receive_body(rest)
        if self.phase == _BODY:
            cycle.waiting_for_100_continue = head.expect_continue
            self._body_timer = self.loop.call_later(self.settings.body_timeout, self._body_too_slow)
        elif rest:
            self._keep_pending(rest)
        app = _unavailable if self._shutting_down else self.app
        task = self.loop.create_task(cycle.run(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _receive_body(self, data: bytes) -> bytes | None:
        """Hand body bytes to the application; returns what follows the body once it is complete."""
        cycle = self.cycle
        chunked = self._chunked
        if chunked is None:
            left = self._body_left
            if len(data) < left:
                self._body_left = left - len(data)
                cycle.add_body(data)  # type: ignore[union-attr]
                return None
            self._body_left = 0
            cycle.add_body(data if len(data) == left else data[:left])  # type: ignore[union-attr]
            rest = data[left:] if len(data) > left else b""
        else:
            try:
                rest = chunked.feed(data, cycle.add_body)  # type: ignore[union-attr]
            except APIError as error:
                self._fail_body(error)
                return None
            if rest is None:
                return None
            self._chunked = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self.phase = _WAIT
        cycle.end_body()  # type: ignore[union-attr]
        return rest

    def _keep_pending(self, data: bytes) -> None:
        self._pending += data
        self.pause_reading()

    def _fail_body(self, error: APIError) -> None:
        self._reusable = False
        self.phase = _STALLED
        self.pause_reading()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self.cycle is not None:
            self.cycle.fail_body(error)

    def may_keep_alive(self, cycle: RequestCycle) -> bool:
        """Asked when a response starts: may the connection serve another request after it?"""
        if cycle.more_body or not self._reusable or self._peer_done:
            return False  # the body is not all read: what follows it cannot be trusted as a request
        if self._shutting_down:
            return _HEAD_END in self._pending  # answer (with 503) what is already received
        return True

    def response_done(self, cycle: RequestCycle) -> None:
        self.server_state.total_requests += 1
        if cycle is not self.cycle:
            return
        self.cycle = None
        if self.phase == _CLOSED or self.transport.is_closing():
            return
        if not cycle.keep_alive or self._peer_done:
            if self.phase == _WAIT and not self._pending and not self._shutting_down:
                self.phase = _CLOSED
                self.transport.close()  # everything sent was read: nothing to drain
            else:
                self._linger()
            return
        self.phase = _HEAD
        data, self._pending = self._pending, b""
        self.resume_reading()
        if data:
            self._receive_head(data)
        else:
            self._quiet_since = now = self.loop.time()
            if self._shutting_down:
                self._close_when_quiet()
            else:
                self.table.mark_idle(self, now, self.loop)

    # -- deadlines ---------------------------------------------------------------------------

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.phase == _HEAD and not self.transport.is_closing():
            self._refuse(RequestTimeout(
                f"the request head did not arrive within {self.settings.header_timeout:g} s",
                {"limit_seconds": self.settings.header_timeout}))

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self.phase != _BODY or self.cycle is None:
            return
        if self._read_paused:
            # We stopped reading (the application is not taking the body): not the client's fault.
            self._body_timer = self.loop.call_later(self.settings.body_timeout, self._body_too_slow)
            return
        limit = self.settings.body_timeout
        self._fail_body(RequestTimeout(
            f"the request body did not arrive within {limit:g} s of the request head",
            {"limit_seconds": limit}, headers={"Connection": "close"}))

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._other_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._other_timer = None

    # -- closing -----------------------------------------------------------------------------

    def _refuse(self, error: APIError) -> None:
        """Answer an error ourselves (no request is running) and close."""
        if self.transport.is_closing():
            return
        self.transport.write(self._error_reply(error))
        self._linger()

    def _error_reply(self, error: APIError) -> bytes:
        # No access line is written for these (the application never saw them): this is it.
        request_id = new_id("req")
        log.info("refused by the HTTP layer", extra={"fields": {
            "request_id": request_id, "status": error.status, "code": error.code, "message": error.message}})
        return error_reply(error, self.server_state.default_headers, request_id.encode())

    def _linger(self) -> None:
        """Close after the last response without resetting the connection: a client still sending
        (a body we refused, pipelined requests) would otherwise get ECONNRESET / EPIPE, often
        before it reads our answer. Input is read and dropped until the client closes, or up to
        server.linger_bytes / server.linger_seconds."""
        self.phase = _LINGER
        self._cancel_timers()
        self.table.forget(self)
        self._pending = b""
        transport = self.transport
        if transport.is_closing():
            return
        if self._peer_done:
            transport.close()
            return
        if transport.can_write_eof():
            transport.write_eof()
        self._linger_left = self.settings.linger_bytes
        self._other_timer = self.loop.call_later(self.settings.linger_seconds, transport.close)
        self.resume_reading()

    def close_idle(self) -> None:
        """Close a connection that is between requests (keep-alive timeout, making room, shutdown)."""
        if self.phase == _HEAD and not self.transport.is_closing():
            self.phase = _CLOSED
            self.connections.discard(self)
            self.table.forget(self)
            self._cancel_timers()
            self.transport.close()

    def _close_when_quiet(self) -> None:
        if self.head.seen:
            wait = SHUTDOWN_IDLE_GRACE  # a head is arriving: it gets the grace to complete
        else:
            wait = self._quiet_since + SHUTDOWN_IDLE_GRACE - self.loop.time()
        if wait <= 0:
            self.close_idle()
            return
        if self._other_timer is None:
            self._other_timer = self.loop.call_later(wait, self._shutdown_close)

    def _shutdown_close(self) -> None:
        self._other_timer = None
        self.close_idle()

    def abort(self) -> None:
        self.phase = _CLOSED
        self.transport.close()

    def _make_room(self) -> bool:
        victim = self.table.longest_idle(self.loop.time(), EVICT_MIN_IDLE)
        if victim is None:
            return False
        victim.close_idle()
        return True

    def _refuse_connection(self, transport: asyncio.Transport) -> None:
        """Past server.max_connections with no idle connection to close: 503 and close, having
        parsed nothing. The connection is not counted (it never joins server_state.connections)."""
        self.phase = _LINGER
        error = Unavailable(f"the server is at its limit of {self.settings.max_connections} connections; retry shortly",
                            retry_after=1, details={"limit": self.settings.max_connections})
        transport.write(self._error_reply(error))
        self._linger()

    # -- flow control ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self._read_paused and not self.transport.is_closing():
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and not self.transport.is_closing():
            self._read_paused = False
            self.transport.resume_reading()


async def _unavailable(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What requests that arrive during shutdown get instead of the application."""
    error = Unavailable("the server is shutting down; retry shortly", retry_after=1)
    body = error_body(error)
    await send({"type": "http.response.start", "status": error.status,
                "headers": error_headers(error, body)})
    await send({"type": "http.response.body", "body": body})


def _addresses(transport: asyncio.Transport) -> tuple[Any, Any]:
    sock = transport.get_extra_info("socket")
    try:
        local = sock.getsockname() if sock is not None else transport.get_extra_info("sockname")
        remote = sock.getpeername() if sock is not None else transport.get_extra_info("peername")
    except OSError:
        return None, None
    server = (str(local[0]), int(local[1])) if isinstance(local, tuple) else None
    client = (str(remote[0]), int(remote[1])) if isinstance(remote, tuple) else None
    return server, client
