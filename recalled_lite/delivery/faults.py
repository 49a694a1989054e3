"""Test-only fault injection for the delivery loop. Inert unless RECALLED_TEST_FAULTS is set.

Some failures cannot be caused from outside a real server on demand (a delivery lost in
memory, a result that can never be recorded, a job whose step always fails); the tests of
leases and quarantine need them deterministically. ``RECALLED_TEST_FAULTS`` is read once,
at start: comma-separated ``name:count`` pairs, e.g. ``lose_delivery:1,poison_job:1``.

    lose_delivery:N   the first N event deliveries are dropped in memory after being taken
    poison_result:N   recording the result of the first N event deliveries always fails
    poison_job:N      every step of the first N jobs fails
    fail_load:N       the first N batch reads of deliveries fail

Never set it in production.
"""

from __future__ import annotations

import os

ENV = "RECALLED_TEST_FAULTS"


class InjectedFault(RuntimeError):
    """Raised where a fault was asked for."""


class Faults:
    __slots__ = ("_left", "_marked")

    def __init__(self, spec: str = "") -> None:
        self._left: dict[str, int] = {}
        self._marked: dict[str, set[str]] = {}
        for part in spec.split(","):
            name, _, count = part.strip().partition(":")
            if name:
                self._left[name] = int(count or 1)

    @classmethod
    def from_env(cls) -> "Faults":
        return cls(os.environ.get(ENV, ""))

    def __bool__(self) -> bool:
        return bool(self._left)

    def take(self, name: str) -> bool:
        """True (and one fewer left) if a fault called `name` is still due."""
        left = self._left.get(name, 0)
        if left <= 0:
            return False
        self._left[name] = left - 1
        return True

    def mark(self, name: str, key: str) -> bool:
        """True for the first N distinct keys seen for `name`, and for them ever after."""
        marked = self._marked.setdefault(name, set())
        if key in marked:
            return True
        if self.take(name):
            marked.add(key)
            return True
        return False
