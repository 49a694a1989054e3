"""How the spool behaves: where it lives, how big it may grow, how it sends and retries."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from .._settings import default_spool_path

if TYPE_CHECKING:
    from ..errors import RecalledError
    from ..types import Event

# on_delivered(event_input, stored_event); on_error(error, event_input) on every failed
# attempt that is retried or dead-lettered (a batch split to get around a 413 or one bad
# event is not an attempt of its own); on_drop(event_input, reason, error) when an event leaves the
# outbox unsent: reason "dead_letter" (refused for good; kept in the dead-letter table) or
# "spool_full" (dropped by when_full="drop_oldest"; gone).
OnDelivered = Callable[[dict[str, Any], "Event"], None]
OnError = Callable[["RecalledError", dict[str, Any]], None]
OnDrop = Callable[[dict[str, Any], str, "RecalledError | None"], None]


@dataclass
class SpoolConfig:
    #: The spool file. None: ``$RECALLED_SPOOL_PATH``, else the per-user state directory
    #: (``~/.local/state/recalled/spool.db`` on Linux; see ``default_spool_path``).
    path: str | os.PathLike[str] | None = None
    #: Bound on events kept (outbox and dead letters together).
    max_rows: int = 100_000
    #: Bound on their encoded size, in bytes.
    max_bytes: int = 256 * 1024 * 1024
    #: At the bound: "raise" (emit() raises SpoolFullError; nothing accepted is ever lost)
    #: or "drop_oldest" (the oldest unsent event is deleted and reported to on_drop).
    when_full: Literal["raise", "drop_oldest"] = "raise"
    #: Events per POST /v1/events/batch (the server takes at most 1000).
    max_batch_events: int = 1000
    #: Bytes per batch body; below the server's 5 MiB max_request_bytes. A 413 splits anyway.
    max_batch_bytes: int = 4 * 1024 * 1024
    #: Backoff between failed attempts: exponential from min to max seconds, with jitter.
    min_backoff: float = 1.0
    max_backoff: float = 600.0
    #: Timeout of one batch request; must be shorter than the lease.
    send_timeout: float = 30.0
    #: How long a claimed batch belongs to its sender before another process may take it.
    lease_seconds: float = 90.0
    #: How often an idle sender looks for rows written by other processes.
    poll_interval: float = 1.0
    #: The bounded flush run at interpreter exit (atexit); what is left stays on disk.
    exit_flush_timeout: float = 2.0
    #: Events that keep getting an unexpected answer (500, 405, ...) are dead-lettered after
    #: this many attempts, so a request the server chokes on cannot block the spool forever.
    max_unexpected_attempts: int = 10
    on_delivered: OnDelivered | None = None
    on_error: OnError | None = None
    on_drop: OnDrop | None = None

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser() if self.path is not None else default_spool_path()

    def check(self) -> None:
        if self.when_full not in ("raise", "drop_oldest"):
            raise ValueError('when_full must be "raise" or "drop_oldest"')
        if not 1 <= self.max_batch_events <= 1000:
            raise ValueError("max_batch_events must be within 1..1000 (the server's batch limit)")
        if self.send_timeout >= self.lease_seconds:
            raise ValueError("send_timeout must be shorter than lease_seconds, or two processes could "
                             "send the same batch at once")
        if self.max_rows < 1 or self.max_bytes < 1 or self.max_batch_bytes < 1:
            raise ValueError("max_rows, max_bytes and max_batch_bytes must be positive")
        if not 0 < self.min_backoff <= self.max_backoff:
            raise ValueError("0 < min_backoff <= max_backoff is required")
