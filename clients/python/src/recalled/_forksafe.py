"""What a forked child must not inherit: HTTP connection pools, SQLite connections, locks.

``os.register_at_fork`` runs these hooks around every ``os.fork()`` (gunicorn ``--preload``,
multiprocessing's fork start method, Celery's prefork pool):

- before the fork, the parent takes :data:`sqlite_guard`, so no thread of this package is
  inside SQLite at the instant of the fork (a child inheriting SQLite's internal mutexes
  held by another thread would deadlock on its first query);
- in the child, every registered object drops its inherited connections and threads and
  builds fresh ones on next use.

Inherited objects are *abandoned*, never closed: closing would act on state the parent still
uses (a TLS close_notify written into the parent's socket, the last-connection checkpoint of
a SQLite file the parent still has open). They are kept referenced here so that garbage
collection does not close them either.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Protocol


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_registered: "weakref.WeakSet[Any]" = weakref.WeakSet()
_abandoned: list[Any] = []

#: Held around every SQLite call of this package, and by the parent across fork().
sqlite_guard = threading.RLock()


def register(obj: ForkAware) -> None:
    _registered.add(obj)


def abandon(*objects: Any) -> None:
    """Keep inherited objects alive (unclosed) for the rest of this process."""
    _abandoned.extend(o for o in objects if o is not None)


def _before_fork() -> None:
    sqlite_guard.acquire()


def _after_fork_in_parent() -> None:
    sqlite_guard.release()


def _after_fork_in_child() -> None:
    global sqlite_guard
    # The parent's guard was held by the forking thread, which is this thread in the child;
    # a fresh lock is simpler than reasoning about the inherited one.
    sqlite_guard = threading.RLock()
    for obj in list(_registered):
        obj._after_fork_in_child()


def guard() -> threading.RLock:
    """The current guard (a module attribute read at call time: the child replaces it)."""
    return sqlite_guard


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
