"""The background sender: claims rows of the spool, POSTs them to /v1/events/batch, and
records the outcome (delete, reschedule, or dead-letter) in the spool.

One daemon thread per client and process. It owns its own SQLite connection and its own
``httpx.Client``; it talks to the emitting threads only through :class:`Signal`. A batch is
all-or-nothing on the server, so the answer decides for the whole batch, or names the bad
indexes (see ``policy.py``); whatever is not refused for good is sent again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections import defaultdict
from typing import Any, Callable

import httpx

from .._http import USER_AGENT, transport_error
from ..errors import RecalledError, error_from_response
from ..types import Event
from .config import SpoolConfig
from .policy import Decision, backoff, judge, retry_after_delay
from .store import Row, SpoolDB

log = logging.getLogger("recalled.spool")

HOSTNAME = socket.gethostname()


def new_owner() -> str:
    return f"{HOSTNAME}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":
        return True  # os.kill(pid, 0) would terminate it there; let the lease run out instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) still answers kill(0)
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] not in (b"Z", b"X")
    except OSError:
        return True


def owner_is_dead(owner: str) -> bool:
    """Only owners on this host can be checked; anyone else's lease simply expires."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != HOSTNAME or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not _pid_alive(pid)


class Signal:
    """The sender's doorbell: emit() and flush() ring it; flushers wait on it for progress."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.rung = False
        self.stopping = False
        self.pause_until = 0.0
        self.progress = 0  # bumped after every batch outcome

    def ring(self, *, unpause: bool = False) -> None:
        with self.cond:
            self.rung = True
            if unpause:
                self.pause_until = 0.0
            self.cond.notify_all()

    def sleep(self, seconds: float) -> None:
        with self.cond:
            if not self.rung and not self.stopping and seconds > 0:
                self.cond.wait(seconds)
            self.rung = False

    def advanced(self) -> None:
        with self.cond:
            self.progress += 1
            self.cond.notify_all()

    def wait_progress(self, seen: int, seconds: float) -> int:
        with self.cond:
            if self.progress == seen and seconds > 0:
                self.cond.wait(seconds)
            return self.progress


def _call(callback: Callable[..., None] | None, *args: Any) -> None:
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:  # a user's callback must not stop delivery
        log.exception("recalled spool callback %r raised", getattr(callback, "__name__", callback))


class Sender(threading.Thread):
    def __init__(self, *, config: SpoolConfig, db_path: Any, destination: str, base_url: str,
                 api_key: str, signal: Signal) -> None:
        super().__init__(name="recalled-spool-sender", daemon=True)
        self.config = config
        self.db_path = db_path
        self.destination = destination
        self.base_url = base_url
        self.api_key = api_key
        self.signal = signal
        self.owner = new_owner()
        self.failures = 0  # consecutive failed requests: the backoff exponent
        self.db: SpoolDB | None = None
        self.http: httpx.Client | None = None

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.db = SpoolDB(self.db_path)
            self.http = httpx.Client(
                base_url=self.base_url, timeout=self.config.send_timeout,
                headers={"Authorization": f"Bearer {self.api_key}", "User-Agent": USER_AGENT,
                         "Content-Type": "application/json", "Accept": "application/json"})
            self._loop()
        except Exception:
            # The client notices a dead sender at the next emit()/flush() and starts another.
            log.exception("the recalled spool sender stopped; it restarts at the next emit() or flush()")
        finally:
            if self.http is not None:
                self.http.close()
            if self.db is not None:
                self.db.close()

    def _loop(self) -> None:
        assert self.db is not None
        signal, config = self.signal, self.config
        reclaim_every = min(config.lease_seconds / 4, 10.0)
        last_reclaim = 0.0
        while not signal.stopping:
            try:
                now = time.time()
                if now - last_reclaim >= reclaim_every:
                    if self.db.release_dead_owners(owner_is_dead):
                        log.info("recalled spool: took over the rows of a sender that died")
                    last_reclaim = now
                if signal.pause_until > now:
                    signal.sleep(signal.pause_until - now)
                    continue
                rows = self.db.claim(self.destination, self.owner, lease_seconds=config.lease_seconds,
                                     max_events=config.max_batch_events, max_bytes=config.max_batch_bytes)
                if not rows:
                    wake = self.db.next_wakeup(self.destination)
                    delay = config.poll_interval if wake is None else min(config.poll_interval, wake - time.time())
                    signal.sleep(max(0.005, delay))
                    continue
                try:
                    self.deliver(rows)
                finally:
                    signal.advanced()
            except Exception:
                # A spool locked past busy_timeout, a full disk, a bug: the rows are on disk
                # and their leases run out, so keep the thread and try again a little later.
                log.exception("recalled spool: the sender hit an error; it tries again in %.0f s",
                              config.poll_interval * 5)
                signal.sleep(config.poll_interval * 5)

    # --- one claimed batch --------------------------------------------------------------

    def deliver(self, rows: list[Row]) -> None:
        """Send ``rows``, splitting as the server's answers require, until each is stored,
        rescheduled or dead-lettered."""
        assert self.db is not None and self.http is not None
        stack = [rows]
        first = True
        while stack:
            batch = stack.pop()
            if not first:
                self.db.extend_lease([r.id for r in batch], self.owner, self.config.lease_seconds)
            first = False
            body = b'{"events":[' + b",".join(r.body for r in batch) + b"]}"
            try:
                response = self.http.post("/v1/events/batch", content=body)
            except httpx.HTTPError as exc:
                self._retry([r for b in stack for r in b] + batch, transport_error(exc))
                return
            if 200 <= response.status_code < 300:
                if self._delivered(batch, response):
                    continue
                error = RecalledError(f"the server answered {response.status_code} without the stored events",
                                      code="UNEXPECTED_RESPONSE", status=response.status_code)
                self._unexpected(batch, error)
                continue
            error = error_from_response(response.status_code, response.content, response.headers)
            verdict = judge(error, len(batch))
            if verdict.decision is Decision.RETRY:
                self._retry([r for b in stack for r in b] + batch, error)
                return
            self.failures = 0  # the server is up and answering
            if verdict.decision is Decision.DEAD:
                self._dead(batch, error)
            elif verdict.decision is Decision.DEAD_INDEXES:
                bad = set(verdict.indexes)
                self._dead([r for i, r in enumerate(batch) if i in bad], error)
                rest = [r for i, r in enumerate(batch) if i not in bad]
                if rest:
                    stack.append(rest)
            elif verdict.decision is Decision.SPLIT:
                log.info("recalled spool: a batch of %d was refused (%s); sending it in halves", len(batch), error)
                half = len(batch) // 2
                stack.extend([batch[half:], batch[:half]])
            elif verdict.decision is Decision.SPLIT_BY_ORGANIZATION:
                groups = _by_organization(batch)
                if len(groups) == 1:
                    self._dead(batch, error)
                else:
                    stack.extend(reversed(groups))
            else:
                self._unexpected(batch, error)

    def _delivered(self, batch: list[Row], response: httpx.Response) -> bool:
        assert self.db is not None
        try:
            stored = response.json()["data"]
        except (ValueError, KeyError, TypeError):
            return False
        if not isinstance(stored, list) or len(stored) != len(batch):
            return False
        self.db.ack([r.id for r in batch])
        self.failures = 0
        callback = self.config.on_delivered
        if callback is not None:
            for row, raw in zip(batch, stored):
                try:
                    event = Event.from_wire(raw)
                except (KeyError, TypeError, ValueError):
                    log.warning("recalled spool: could not read a stored event from the server's answer")
                    continue
                _call(callback, row.event(), event)
        return True

    def _report(self, rows: list[Row], error: RecalledError) -> None:
        callback = self.config.on_error
        if callback is not None:
            for row in rows:
                _call(callback, error, row.event())

    def _retry(self, rows: list[Row], error: RecalledError) -> None:
        """Reschedule after a backoff (or Retry-After), and hold the whole sender back: a
        server that is down or overloaded for one batch is so for the next."""
        assert self.db is not None
        self.failures += 1
        now = time.time()
        wait = retry_after_delay(error.retry_after, self.config.max_backoff)
        delay = wait if wait is not None else backoff(self.failures, self.config.min_backoff,
                                                      self.config.max_backoff)
        self.db.reschedule([r.id for r in rows], next_attempt_at=now + delay,
                           hold_until=now + wait if wait is not None else 0.0, error=str(error))
        with self.signal.cond:
            self.signal.pause_until = max(self.signal.pause_until, now + delay)
        log.info("recalled spool: %d events not sent (%s); next attempt in %.1f s", len(rows), error, delay)
        self._report(rows, error)

    def _unexpected(self, batch: list[Row], error: RecalledError) -> None:
        limit = self.config.max_unexpected_attempts
        give_up = [r for r in batch if r.attempts + 1 >= limit]
        again = [r for r in batch if r.attempts + 1 < limit]
        if give_up:
            self._dead(give_up, error)
        if again:
            self._retry(again, error)

    def _dead(self, rows: list[Row], error: RecalledError) -> None:
        assert self.db is not None
        self.db.dead_letter([r.id for r in rows], error.to_dict())
        log.warning("recalled spool: %d events refused by the server (%s); kept as dead letters", len(rows), error)
        self._report(rows, error)
        callback = self.config.on_drop
        if callback is not None:
            for row in rows:
                _call(callback, row.event(), "dead_letter", error)


def _by_organization(batch: list[Row]) -> list[list[Row]]:
    groups: dict[Any, list[Row]] = defaultdict(list)
    for row in batch:
        try:
            organization = json.loads(row.body).get("organization")
        except ValueError:
            organization = None
        groups[organization].append(row)
    return list(groups.values())
