"""The client's side of the spool: ``emit()`` commits a row, a sender thread delivers it.

Process model:

- The sender is started lazily: at the first ``emit()`` or ``flush()``, or when the client is
  created and a spool file already exists (what an earlier run left is sent without
  waiting for a new event).
- Fork: the at-fork hooks of ``_forksafe`` drop the inherited sender, SQLite connection and
  locks in the child; the child starts its own sender on its first ``emit()``. A PID check
  on every call covers a fork that bypassed ``os.fork``.
- Exit: one ``atexit`` hook flushes every outbox of this process that emitted something,
  within ``exit_flush_timeout`` (2 s) in all, then lets the daemon sender die with the
  interpreter. Rows not delivered by then stay on disk (a lease held by the dead process is
  released by the next sender on the host at once).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
import weakref
from typing import Any

from .. import _forksafe
from .._settings import destination_fingerprint
from .._wire import dumps, now_rfc3339
from ..errors import SpoolFullError
from .config import SpoolConfig
from .sender import Sender, Signal, _call
from .store import DeadLetter, Row, SpoolDB, SpoolStatus

log = logging.getLogger("recalled.spool")

_live: "weakref.WeakSet[Outbox]" = weakref.WeakSet()


def new_idempotency_key() -> str:
    return f"rcl_{uuid.uuid4().hex}"


class Outbox:
    def __init__(self, config: SpoolConfig, *, base_url: str, api_key: str) -> None:
        config.check()
        self.config = config
        self.path = config.resolved_path()
        self.base_url = base_url
        self.api_key = api_key
        self.destination = destination_fingerprint(base_url, api_key)
        self._state_lock = threading.Lock()
        self._signal = Signal()
        self._db: SpoolDB | None = None
        self._sender: Sender | None = None
        self._pid = os.getpid()
        self._used = False  # emitted or flushed in this process: flush at exit
        self._closed = False
        _forksafe.register(self)
        _live.add(self)
        if self.path.exists():
            self._ensure_sender()

    # --- process model --------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        # Only the forking thread exists in the child: the sender is gone, and its lock
        # and condition may have been held by it at the fork.
        _forksafe.abandon(self._db, self._sender)
        self._db = None
        self._sender = None
        self._state_lock = threading.Lock()
        self._signal = Signal()
        self._pid = os.getpid()
        self._used = False

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._after_fork_in_child()

    def _database(self) -> SpoolDB:
        self._check_pid()
        with self._state_lock:
            if self._db is None:
                self._db = SpoolDB(self.path)
            return self._db

    def _ensure_sender(self) -> None:
        self._check_pid()
        with self._state_lock:
            if self._closed:
                return
            if self._sender is not None and self._sender.is_alive():
                return
            self._signal.stopping = False
            self._sender = Sender(config=self.config, db_path=self.path, destination=self.destination,
                                  base_url=self.base_url, api_key=self.api_key, signal=self._signal)
            self._sender.start()

    # --- emit / flush ---------------------------------------------------------------------

    def enqueue(self, body: dict[str, Any]) -> str:
        """Commit one event to the spool; returns its idempotency key."""
        if self._closed:
            raise RuntimeError("this client is closed")
        body = dict(body)
        key = body.setdefault("idempotency_key", new_idempotency_key())
        # The time it happened, not the time the spool got it to the server.
        body.setdefault("occurred_at", now_rfc3339())
        encoded = dumps(body)
        db = self._database()
        _, dropped = db.enqueue(self.destination, encoded, max_rows=self.config.max_rows,
                                max_bytes=self.config.max_bytes,
                                drop_oldest=self.config.when_full == "drop_oldest")
        self._used = True
        try:
            self._ensure_sender()
        except RuntimeError:
            # No new thread can start (interpreter shutdown). The event is committed all
            # the same, and goes out from the next process that uses the spool.
            log.warning("recalled spool: could not start the sender; the event stays in %s", self.path)
        self._signal.ring()
        for row in dropped:
            self._report_drop(row)
        return str(key)

    def _report_drop(self, row: Row) -> None:
        error = SpoolFullError("dropped to make room in a full spool (when_full='drop_oldest')")
        log.warning("recalled spool: dropped event row %d to make room (when_full='drop_oldest')", row.id)
        _call(self.config.on_drop, row.event(), "spool_full", error)

    def flush(self, timeout: float = 30.0) -> int:
        """Send what is in the spool for this client now; wait at most ``timeout`` seconds.

        Covers every row of this server and key that is in the spool when flush starts,
        whichever process wrote it. Returns how many of them are still waiting (0: all were
        stored or dead-lettered). Backoff waits are skipped, Retry-After waits are not.
        """
        if self._closed:
            raise RuntimeError("this client is closed")
        deadline = time.monotonic() + max(0.0, timeout)
        if not self.path.exists():
            return 0  # nothing was ever spooled here; do not create the file just to look
        self._used = True
        db = self._database()
        last = db.last_id(self.destination)
        if last is None:
            return 0
        db.make_due(self.destination)
        self._ensure_sender()
        self._signal.ring(unpause=True)
        seen = self._signal.progress
        while True:
            remaining, in_flight, next_attempt = db.outlook(self.destination, last)
            left = deadline - time.monotonic()
            if remaining == 0 or left <= 0:
                return remaining
            if not in_flight and next_attempt is not None and next_attempt > time.time() + left:
                return remaining  # every row waits out a backoff past the deadline: nothing to wait for
            if self._sender is None or not self._sender.is_alive():
                self._ensure_sender()
            # Woken by every batch outcome; the cap also catches other processes' progress.
            seen = self._signal.wait_progress(seen, min(left, 0.1))

    def pending(self) -> int:
        """Events of this server and key waiting in the spool (any process)."""
        if not self.path.exists():
            return 0
        return self._database().pending(self.destination)

    def close(self, timeout: float | None = None) -> int:
        """Flush for up to ``timeout`` (default ``exit_flush_timeout``), stop the sender, and
        close the spool. Returns the events still waiting (they stay on disk)."""
        if self._closed:
            return 0
        self._check_pid()
        remaining = 0
        if self._used:
            remaining = self.flush(self.config.exit_flush_timeout if timeout is None else timeout)
        self._stop()
        with self._state_lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None
        _live.discard(self)
        return remaining

    def _stop(self, join: float = 0.5) -> None:
        sender = self._sender
        with self._signal.cond:
            self._signal.stopping = True
            self._signal.cond.notify_all()
        if sender is not None and sender is not threading.current_thread():
            # A sender stuck in a request to an unreachable server is a daemon thread: it
            # is not waited for beyond this, and its lease is released by the next sender.
            sender.join(join)

    # --- operators ------------------------------------------------------------------------

    def status(self) -> SpoolStatus:
        return self._database().status()

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        return self._database().dead_letters(limit, destination=self.destination)

    def retry_dead(self, ids: list[int] | None = None) -> int:
        """Send dead letters again with this client's server and key: ``ids`` (any
        destination: after a key was replaced, the old key's), or all of this client's."""
        moved = self._database().retry_dead(ids, retarget=self.destination, destination=self.destination)
        if moved:
            self._ensure_sender()
            self._signal.ring(unpause=True)
        return moved

    def purge_dead(self, ids: list[int] | None = None) -> int:
        """Delete dead letters: ``ids``, or all of this client's server and key."""
        return self._database().purge_dead(ids, destination=self.destination)

def _flush_at_exit() -> None:
    outboxes = [o for o in list(_live) if o._used and not o._closed and o._pid == os.getpid()]
    if not outboxes:
        return
    budget = max(o.config.exit_flush_timeout for o in outboxes)
    deadline = time.monotonic() + budget
    for outbox in outboxes:
        try:
            left = outbox.flush(max(0.0, deadline - time.monotonic()))
            if left:
                log.warning("recalled: %d events are still in the spool at %s; they are sent at the next start",
                            left, outbox.path)
            outbox._stop(join=0.0)
        except Exception:
            log.exception("recalled: the exit flush of %s failed; the events stay on disk", outbox.path)


atexit.register(_flush_at_exit)
