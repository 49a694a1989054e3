"""The cyclic garbage collector, set for a server whose requests make many short-lived objects.

Reference counting frees nearly everything a request makes (the edge and the app keep no
cycles: tests/test_http_protocol_units.py checks it), so the cyclic collector only costs time.
With Python's default threshold (a young collection every 700 net allocations of containers),
a 1000-event batch, which holds tens of thousands of objects while it is prepared, written
and answered, sees dozens of young collections that find nothing, and the objects that outlive
them are promoted and traversed again by the old generations. Measured under batch intake
(BENCHMARKS.md): the collector took 15-19 % of the server's wall time.

So, once at startup, after the imports and the app are built:
- everything alive so far (modules, the app, the routes, the config) is frozen: the collector
  never traverses it again;
- a young collection runs every GEN0_THRESHOLD allocations instead of 700: most of a request's
  objects are freed by reference counting before one comes.
Cycles are still collected, only later: memory stays bounded by the threshold.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000


def tune_garbage_collector() -> int:
    """Freeze what startup made and raise the young generation's threshold. Returns the number
    of objects frozen (for the startup log line)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, older, oldest)
    return gc.get_freeze_count()
