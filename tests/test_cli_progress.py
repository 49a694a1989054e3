"""Long CLI work shows a progress bar on a terminal, and stays quiet when piped."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from audit_events import audit_events


def run_on_tty(args: list[str], cwd) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=subprocess.PIPE, stderr=slave, cwd=cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(60)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_verify_and_backup_show_progress_on_a_terminal(make_server):
    srv = make_server("progress")
    with srv.client() as c:
        for _ in range(5):
            assert c.post("/v1/events/batch", json={"events": [{"action": "p"}] * 1000}).status_code == 200
        total = 5000 + len(audit_events(c))  # plus the server's own (the bootstrap key's)
    cli = [sys.executable, "-m", "recalled_lite.cli"]
    code, screen = run_on_tty(cli + ["verify", "--db", srv.db_location], srv.workdir)
    assert code == 0
    assert "verifying [" in screen and "100.0%" in screen and f"{total:,}/{total:,}" in screen
    if not srv.on_postgres:  # backup is an SQLite file copy; PostgreSQL's is pg_dump
        code, screen = run_on_tty(cli + ["backup", str(srv.workdir / "b.db"), "--db", srv.db_location], srv.workdir)
        assert code == 0 and "backing up" in screen and "100.0%" in screen

    piped = subprocess.run(cli + ["verify", "--db", srv.db_location], capture_output=True, text=True, cwd=srv.workdir)
    assert piped.returncode == 0 and "verifying [" not in piped.stderr
