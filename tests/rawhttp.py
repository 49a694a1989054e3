"""Raw-socket HTTP/1.1 for protocol tests: write exact bytes, read back every response a
connection gets (each parsed: status, headers, body), and see how the connection ended."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = b""

    def json(self):
        return json.loads(self.body)

    @property
    def closes(self) -> bool:
        return "close" in self.headers.get("connection", "").lower()


@dataclass
class Exchange:
    responses: list[Response] = field(default_factory=list)
    ended: str = "open"       # "eof" | "reset" | "open" (still open when we stopped reading)
    leftover: bytes = b""     # bytes that did not form a complete response


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            *, key: str | None = None, content_length: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if content_length and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def parse_responses(data: bytes) -> tuple[list[Response], bytes]:
    out = []
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            return out, data
        head = data[:head_end].decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        rest = data[head_end + 4:]
        if 100 <= status < 200:
            out.append(Response(status, headers, b"", data[:head_end]))
            data = rest
            continue
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, pos = b"", 0
            while True:
                line_end = rest.find(b"\r\n", pos)
                if line_end < 0:
                    return out, data
                size = int(rest[pos:line_end].split(b";")[0], 16)
                if len(rest) < line_end + 2 + size + 2:
                    return out, data
                body += rest[line_end + 2:line_end + 2 + size]
                pos = line_end + 2 + size + 2
                if size == 0:
                    break
            out.append(Response(status, headers, body, data[:head_end]))
            data = rest[pos:]
            continue
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            return out, data
        out.append(Response(status, headers, rest[:length], data[:head_end]))
        data = rest[length:]


def read_exchange(sock: socket.socket, *, expect: int | None = None, quiet: float = 1.0,
                  deadline: float = 20.0, already: bytes = b"") -> Exchange:
    """Read until the peer closes, or `expect` responses have arrived and nothing more comes for
    `quiet` seconds, or `deadline` passes. `already`: bytes of the answer read before."""
    data = already
    exchange = Exchange()
    stop_at = time.monotonic() + deadline
    while time.monotonic() < stop_at:
        done = expect is not None and len(parse_responses(data)[0]) >= expect
        sock.settimeout(quiet if done else max(0.05, min(1.0, stop_at - time.monotonic())))
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            if done:
                break
            continue
        except ConnectionResetError:
            exchange.ended = "reset"
            break
        if not chunk:
            exchange.ended = "eof"
            break
        data += chunk
    exchange.responses, exchange.leftover = parse_responses(data)
    return exchange


def one_shot(port: int, data: bytes, **kwargs) -> Exchange:
    with connect(port) as sock:
        sock.sendall(data)
        return read_exchange(sock, **kwargs)
