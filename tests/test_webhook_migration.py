"""Migration 004 on a database the first release wrote (schema 3): jobs keep their rows and
may now be `failed`; subscriptions already invalid get `invalid_since` and a re-test due at
once - except those a 410 made invalid."""

from __future__ import annotations

import sqlite3

import pytest

from recalled_lite.storage.sqlite.migrate import available, migrate


def test_004_upgrades_a_first_release_database(tmp_path):
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    for number, _name, sql in available()[:3]:
        conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version={number};\nCOMMIT;")
    sub = ("INSERT INTO webhook_subscriptions (id, url, state, state_reason, state_changed_at, secret, "
           "created_at, updated_at) VALUES (?, 'http://x/', ?, ?, ?, 'sealed:v1:AAAA', 1, 1)")
    conn.execute(sub, ("sub_down", "invalid", "test delivery failed: ConnectError: refused", 1000))
    conn.execute(sub, ("sub_gone", "invalid", "the receiver answered 410 Gone", 2000))
    conn.execute(sub, ("sub_slow", "invalid", "no successful delivery for 432000 seconds (last error: HTTP 503)", 3000))
    conn.execute(sub, ("sub_ok", "valid", None, 4000))
    conn.execute("INSERT INTO webhook_jobs (id, subscription_id, kind, status, begin_at, total, created_at, "
                 "updated_at) VALUES ('job_1', 'sub_ok', 'recover', 'completed', 5, 3, 6, 7)")
    assert migrate(conn) == len(available())
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT id, invalid_since, invalid_cause, retest_at, retests FROM webhook_subscriptions")}
    assert rows == {
        "sub_down": (1000, "test_failed", 1000, 0),
        "sub_gone": (2000, "gone", None, 0),
        "sub_slow": (3000, "no_success", 3000, 0),
        "sub_ok": (None, None, None, 0),
    }
    assert conn.execute("SELECT id, status, total, created_at FROM webhook_jobs").fetchall() == [
        ("job_1", "completed", 3, 6)]
    conn.execute("UPDATE webhook_jobs SET status = 'failed' WHERE id = 'job_1'")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE webhook_jobs SET status = 'exploded' WHERE id = 'job_1'")
    assert {r[1] for r in conn.execute("PRAGMA index_list(webhook_jobs)")} >= {"webhook_jobs_by_sub",
                                                                                "webhook_jobs_running"}
    assert conn.execute("PRAGMA table_info(webhook_attempts)").fetchall()[-1][1] == "warning"
    assert "lease_owner" in {r[1] for r in conn.execute("PRAGMA table_info(webhook_messages)")}
    conn.close()
