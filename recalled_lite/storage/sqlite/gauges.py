"""Counts for /metrics, cheap enough to run at every scrape.

The delivery counts go through the partial indexes of open (pending/sending) and failed
messages, never the whole webhook_messages table, which keeps every delivered message
forever: their WHERE terms repeat the indexes' own, which is what lets SQLite use them
(tests/test_metrics.py checks the plans).
"""

from __future__ import annotations

import sqlite3

OPEN_DELIVERIES = ("SELECT status, count(*) FROM webhook_messages "
                   "WHERE status IN ('pending', 'sending') GROUP BY status")
FAILED_DELIVERIES = "SELECT count(*) FROM webhook_messages WHERE status = 'failed'"
SUBSCRIPTIONS = "SELECT state, count(*) FROM webhook_subscriptions GROUP BY state"


def webhook_counts(conn: sqlite3.Connection) -> tuple[dict[str, int], dict[str, int]]:
    """(messages by status, subscriptions by state), in one read transaction."""
    conn.execute("BEGIN")
    try:
        deliveries = {"pending": 0, "sending": 0}
        deliveries.update(dict(conn.execute(OPEN_DELIVERIES).fetchall()))
        deliveries["failed"] = conn.execute(FAILED_DELIVERIES).fetchone()[0]
        subscriptions = dict(conn.execute(SUBSCRIPTIONS).fetchall())
    finally:
        conn.execute("COMMIT")
    return deliveries, subscriptions
