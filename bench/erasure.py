"""Erasures back to back while wrk measures intake (the `erasure` scenario of bench/run.py).

Each erasure (`DELETE /v1/actors/{id}`) anonymizes one dataset actor (about 1 in 10,000 of the
events) and then purges the whole full-text index, which is what could stall intake. The
actors are taken in a fixed shuffled order, so every call really erases something.
"""

from __future__ import annotations

import random
import threading
import time
from urllib.parse import quote

from . import dataset
from .procs import json_or_none, request, short


class Eraser:
    """A thread erasing one actor after another until stopped."""

    def __init__(self, port: int, key: str, seed: int = 20240) -> None:
        self.port, self.key = port, key
        order = list(range(dataset.N_ACTORS))
        random.Random(seed).shuffle(order)
        self._actors = iter(order)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-eraser", daemon=True)
        self.done: list[dict] = []
        self.errors: list[str] = []

    def start(self) -> "Eraser":
        self._thread.start()
        return self

    def stop(self, timeout: float = 300.0) -> None:
        """Let the erasure in progress finish (its purge is part of what is measured)."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            actor = dataset.actor_id(next(self._actors))
            started = time.monotonic()
            status, _, body = request(self.port, "DELETE", "/v1/actors/" + quote(actor, safe=""),
                                      key=self.key, timeout=600)
            seconds = time.monotonic() - started
            data = (json_or_none(body) or {}).get("data") or {}
            if status != 200:
                self.errors.append(f"{status}: {short(body)}")
                time.sleep(0.5)
                continue
            self.done.append({"actor": actor, "seconds": round(seconds, 3),
                              "events": data.get("anonymized_events")})

    def summary(self) -> dict:
        seconds = [e["seconds"] for e in self.done]
        return {
            "erasures": len(self.done),
            "events_erased": sum(e["events"] or 0 for e in self.done),
            "seconds_min": min(seconds) if seconds else None,
            "seconds_max": max(seconds) if seconds else None,
            "seconds_mean": round(sum(seconds) / len(seconds), 3) if seconds else None,
            "errors": self.errors[:5],
            "error_count": len(self.errors),
        }
