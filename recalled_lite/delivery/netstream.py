"""A lean httpcore network backend on plain asyncio protocols, for the webhook sender.

The sender itself speaks HTTP through ``http1.Http1Pool`` over these streams (dialled by
``ssrf.GuardedBackend``); they keep httpcore's stream interface so that the guard and
``ssrf.GuardedTransport`` (httpx over the same guard) work with them unchanged. What
follows is why this layer exists rather than anyio's.

``GuardedTransport`` (ssrf.py) resolves and checks every destination itself and then asks
a *delegate* backend to dial the checked IP address; httpcore's default delegate goes
through anyio. On the delivery hot path that layer costs more CPU than the HTTP exchange:
an anyio cancel scope around every read and write, and a ``poll()`` system call on every
idle keep-alive connection each time the pool looks for one to reuse. This delegate keeps
httpcore, h11 and the guard exactly as they are and only replaces the socket layer:

* bytes are delivered by the event loop to an ``asyncio.Protocol`` as they arrive, so
  "has the server closed or written to this idle connection?" (``is_readable``, what
  httpcore asks before reusing a connection) is a look at the protocol's state, no syscall;
* a read or write only creates a timer when httpcore passes a timeout (the sender passes
  none: one ``asyncio.timeout`` bounds each whole attempt);
* TLS uses ``loop.start_tls`` with the hostname for SNI and certificate checks.

Errors are httpcore's own exception types, as the anyio backend raises them, so the guard
and httpx map them exactly as before.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import typing

import httpcore

__all__ = ["AsyncioBackend"]

_HIGH_WATER = 256 * 1024  # stop reading from the socket while this much is unread


class _Protocol(asyncio.Protocol):
    __slots__ = ("transport", "buffer", "eof", "exc", "_waiter", "_drain", "_paused_reading",
                 "_paused_writing")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._paused_writing = False

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.exc is None:
            self.exc = exc
        self._wake()
        self._wake_drain(exc)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._wake_drain(None)

    # -- helpers ----------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_drain(self, exc: BaseException | None) -> None:
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                if exc is not None:
                    drain.set_exception(exc)
                else:
                    drain.set_result(None)

    async def wait_readable(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter

    async def drain(self) -> None:
        if self._paused_writing:
            drain = self._drain = asyncio.get_running_loop().create_future()
            await drain

    def take(self, max_bytes: int) -> bytes:
        if len(self.buffer) <= max_bytes:
            data = bytes(self.buffer)
            self.buffer.clear()
        else:
            data = bytes(self.buffer[:max_bytes])
            del self.buffer[:max_bytes]
        if self._paused_reading and len(self.buffer) <= _HIGH_WATER // 2 and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()
        return data


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            try:
                if timeout is None:
                    await protocol.wait_readable()
                else:
                    async with asyncio.timeout(timeout):
                        await protocol.wait_readable()
            except TimeoutError:
                raise httpcore.ReadTimeout("timed out reading from the receiver") from None
        if protocol.buffer:
            return protocol.take(max_bytes)
        if protocol.exc is not None:
            raise httpcore.ReadError(str(protocol.exc) or type(protocol.exc).__name__)
        return b""  # end of stream

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        try:
            if timeout is None:
                await self._protocol.drain()
            else:
                async with asyncio.timeout(timeout):
                    await self._protocol.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("timed out writing to the receiver") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from None

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(self._transport, self._protocol, ssl_context,
                                                 server_hostname=server_hostname)
        except TimeoutError:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        if transport is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._protocol.transport = typing.cast(asyncio.Transport, transport)
        return _Stream(typing.cast(asyncio.Transport, transport), self._protocol)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            # Data or EOF on an idle connection means it cannot be reused; asyncio has
            # already read whatever the socket had, so this needs no system call.
            protocol = self._protocol
            return bool(protocol.buffer) or protocol.eof or self._transport.is_closing()
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Dials the address it is given (the guard has already checked it)."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol, host, port,
                    local_addr=(local_address, 0) if local_address else None)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for option in socket_options or ():
                    sock.setsockopt(*option)
            except OSError:
                pass
        return _Stream(typing.cast(asyncio.Transport, transport), typing.cast(_Protocol, protocol))

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook destinations")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
