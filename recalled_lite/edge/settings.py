"""The HTTP layer's limits, taken from the [server] section of the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EdgeSettings:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive: float = 5.0
    max_url_bytes: int = 16 * 1024
    max_header_bytes: int = 64 * 1024
    max_request_bytes: int = 5 * 1024 * 1024
    max_connections: int = 1024
    linger_seconds: float = 2.0
    linger_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_server_config(cls, server: Any) -> "EdgeSettings":
        return cls(
            header_timeout=server.header_timeout_seconds,
            body_timeout=server.body_timeout_seconds,
            keepalive=server.keepalive_seconds,
            max_url_bytes=server.max_url_bytes,
            max_header_bytes=server.max_header_bytes,
            max_request_bytes=server.max_request_bytes,
            max_connections=server.max_connections,
            linger_seconds=server.linger_seconds,
            linger_bytes=server.linger_bytes,
        )
