"""One server per database (an flock on <db>.lock), and "listening" only once the port is bound."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import ServerProcess, free_port

CLI = [sys.executable, "-m", "recalled_lite.cli"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}


def listening_lines(log: str) -> list[dict]:
    lines = []
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("msg") == "recalled-lite listening":
                lines.append(entry)
    return lines


@pytest.mark.sqlite_only("the flock on <db>.lock; on PostgreSQL several instances share one database by "
                         "design (tests/test_pg_instances.py)")
def test_second_server_on_the_same_database_refuses_and_the_first_keeps_serving(make_server):
    first = make_server("locked")
    lock_file = first.db_path.parent / "recalled.db.lock"
    assert lock_file.read_text().strip() == str(first.proc.pid)

    started = time.monotonic()
    second = subprocess.run(CLI + ["serve", "--db", str(first.db_path), "--port", str(free_port())],
                            capture_output=True, text=True, env=clean_env(), timeout=30)
    assert time.monotonic() - started < 5, "the refusal must be quick, not a hang on the lock"
    assert second.returncode != 0
    assert str(lock_file) in second.stderr and f"process {first.proc.pid}" in second.stderr
    assert str(first.db_path) in second.stderr
    assert not listening_lines(second.stderr)

    with first.client() as c:
        for i in range(5):
            r = c.post("/v1/events", json={"action": f"still.{i}"})
            assert r.status_code == 200, r.text
        stored = r.json()["data"]["seq"]  # after the bootstrap key's audit event and these five

    # Read-only commands still work beside the running server.
    db = ["--db", str(first.db_path)]
    for args in (["verify", *db], ["export", "--format", "ndjson", *db], ["keys", "list", *db],
                 ["backup", str(first.workdir / "beside.db"), *db]):
        done = subprocess.run(CLI + args, capture_output=True, text=True, env=clean_env(), cwd=first.workdir,
                              timeout=120)
        assert done.returncode == 0, (args, done.stderr)

    # kill -9 leaves no stale lock: the kernel released it with the process.
    first.kill()
    again = ServerProcess(first.workdir)
    again.start()
    try:
        with again.client() as c:
            assert c.post("/v1/events", json={"action": "after.kill"}).json()["data"]["seq"] == stored + 1
        assert lock_file.read_text().strip() == str(again.proc.pid)
    finally:
        again.kill()


def test_port_in_use_gives_a_clear_error_and_no_listening_line(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = subprocess.run(CLI + ["serve", "--db", str(tmp_path / "r.db"), "--port", str(port)],
                                capture_output=True, text=True, env=clean_env(), timeout=60)
    assert result.returncode != 0
    assert "could not start listening" in result.stderr and "--port" in result.stderr
    assert not listening_lines(result.stderr), result.stderr


def test_listening_is_logged_after_the_bind_with_the_real_port(make_server):
    srv = make_server("listening")
    lines = listening_lines(srv.log_text())
    assert len(lines) == 1 and lines[0]["port"] == srv.port and lines[0]["pid"] == srv.proc.pid
