"""A database locked by another process past busy_timeout gives 503, then writes resume."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from audit_events import audit_events


def test_locked_database_answers_503_then_recovers(make_server):
    srv = make_server("locked", config_text="[database]\nbusy_timeout_ms = 200\n")
    with srv.client() as c:
        before = c.post("/v1/events", json={"action": "before"})
        assert before.status_code == 200
        # Hold what every append needs, as a backup script or another instance might: SQLite's
        # write lock, or PostgreSQL's chain-head row (the store waits lock_timeout for it).
        outsider = srv.hold_write_lock()
        try:
            r = c.post("/v1/events", json={"action": "during"})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "UNAVAILABLE"
            assert int(r.headers["retry-after"]) >= 1
            ready = c.get("/readyz")
            assert ready.status_code == 503
        finally:
            outsider.release()
        after = c.post("/v1/events", json={"action": "after"})
        assert after.status_code == 200
        seq = before.json()["data"]["seq"] + 1  # nothing of the refused write took a seq
        assert after.json()["data"]["seq"] == seq
        assert c.get("/v1/events/verify").json()["data"] == {
            "valid": True, "checked": seq, "head": {"seq": seq, "hash": after.json()["data"]["hash"]},
            "firstInvalid": None}


def test_wrong_secret_refuses_to_start(make_server, tmp_path):
    srv = make_server("secret")
    srv.stop()
    srv.secret_path.write_text("f" * 64 + "\n")
    result = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "serve", "--db", srv.db_location,
                             "--port", "0"], capture_output=True, text=True, cwd=srv.workdir, timeout=30)
    assert result.returncode == 2
    assert "secret does not match" in result.stderr


@pytest.mark.sqlite_only("backup copies the SQLite file; on PostgreSQL it refuses and points to pg_dump "
                         "(test_cli_offline checks that)")
def test_backup_is_a_verifiable_copy(make_server):
    srv = make_server("backup")
    with srv.client() as c:
        c.post("/v1/events/batch", json={"events": [{"action": f"a.{i}"} for i in range(300)]})
        own = len(audit_events(c))  # the bootstrap key's
    dest = srv.workdir / "copy.db"
    result = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "backup", str(dest), "--db", str(srv.db_path)],
                            capture_output=True, text=True, cwd=srv.workdir)
    assert result.returncode == 0, result.stderr
    assert "secret is NOT inside it" in result.stderr
    conn = sqlite3.connect(dest)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 300 + own
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    # The copy verifies with the original secret.
    env_secret = srv.secret_path.read_text().strip()
    check = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "verify", "--db", str(dest)],
                           capture_output=True, text=True, env={"RECALLED_SECRET": env_secret, "PATH": "/usr/bin:/bin"})
    assert check.returncode == 0, check.stderr
    again = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "backup", str(dest), "--db", str(srv.db_path)],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr
