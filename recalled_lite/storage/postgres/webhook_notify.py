"""LISTEN/NOTIFY between the instances sharing one database (webhooks.py).

An op that leaves deliveries pending (a retry, the backlog beyond the hand-off, a taken-back
lease) or changes subscriptions sends ``pg_notify`` inside its transaction, so the notice
goes out at COMMIT and never for a rollback. Each instance's listener thread hears the
others' notices within milliseconds and feeds its delivery loop (due times) or reloads its
subscription view. A notice is an optimisation only: poolers in transaction mode drop
LISTEN, and a connection can break. Every notice that matters is re-derivable from the
tables, which the loop's resync, the lease keeper's tick and the subscription version check
(webhooks.py) read anyway, so a missed one delays, never loses.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

import psycopg

from .connection import open_listener

log = logging.getLogger("recalled_lite.webhooks")

CHANNEL = "recalled_webhooks"
# pg_notify refuses payloads of 8000 bytes or more; above this a notice says "resync".
_MAX_PAYLOAD = 7000


def payloads(instance: str, due: dict[str, int], version: int | None) -> list[str]:
    """The notices for one op: {"i": sender, "d": {sub: earliest due ms}, "v": version of
    the subscriptions when they changed}; "r": 1 asks the listeners to read the due times."""
    message: dict[str, Any] = {"i": instance}
    if due:
        message["d"] = due
    if version is not None:
        message["v"] = version
    text = json.dumps(message, separators=(",", ":"))
    if len(text) <= _MAX_PAYLOAD:
        return [text]
    short: dict[str, Any] = {"i": instance, "r": 1}
    if version is not None:
        short["v"] = version
    return [json.dumps(short, separators=(",", ":"))]


def parse(instance: str, payload: str) -> tuple[dict[str, int], bool, bool] | None:
    """(due times, subscriptions changed, resync asked) of another instance's notice;
    None for our own notices and for anything unreadable."""
    try:
        message = json.loads(payload)
        if not isinstance(message, dict) or message.get("i") == instance:
            return None
        due = {str(k): int(v) for k, v in (message.get("d") or {}).items()}
        return due, "v" in message, bool(message.get("r"))
    except (ValueError, TypeError, AttributeError):
        return None


class Listener:
    """The thread that LISTENs for this instance. ``heard(due, subs_changed)`` is called for
    every notice from another instance; ``resync(conn)`` after every (re)connect, on the
    listener connection, for what was committed before LISTEN took effect."""

    def __init__(self, url: str, instance: str, heard: Callable[[dict[str, int], bool], None],
                 resync: Callable[[psycopg.Connection], None], *, alive: Callable[[], bool] = lambda: True,
                 reconnect_seconds: float = 1.0) -> None:
        self.alive = alive
        self.url = url
        self.instance = instance
        self.heard = heard
        self.resync = resync
        self.reconnect_seconds = reconnect_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recalled-webhook-listener", daemon=True)
        self.connected = threading.Event()
        self.notices = 0  # heard from other instances (tests, metrics)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _running(self) -> bool:
        if self._stop.is_set() or not self.alive():
            self._stop.set()
            return False
        return True

    def _run(self) -> None:
        failures = 0
        while self._running():
            try:
                with open_listener(self.url) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    if failures:
                        log.info("webhook notices: listening again")
                    failures = 0
                    self.resync(conn)
                    while self._running():
                        for notice in conn.notifies(timeout=0.5):
                            self._handle(conn, notice.payload)
            except Exception as exc:
                self.connected.clear()
                failures += 1
                if failures == 1:
                    log.warning("webhook notices: the listener connection failed; polling covers the gap "
                                "while it reconnects", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
                self._stop.wait(min(self.reconnect_seconds * failures, 30.0))

    def _handle(self, conn: psycopg.Connection, payload: str) -> None:
        parsed = parse(self.instance, payload)
        if parsed is None:
            return
        due, subs_changed, resync = parsed
        self.notices += 1
        if resync:
            self.resync(conn)
        if due or subs_changed:
            self.heard(due, subs_changed)
