"""Offline commands never create a database or a secret, and write private files.

Only `serve` creates a database and its secret. `verify` on a copy without the secret exits 2
and says how to pass it (or `--no-signatures` checks the hashes alone, and says so); a wrong
`--db` exits 2 and leaves nothing behind; backups and exports are 0600.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import pg_support
from audit_events import audit_events

CLI = [sys.executable, "-m", "recalled_lite.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, capture_output=True, text=True, cwd=cwd, env=clean_env(**env), timeout=120)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def tamper(db: Path, sql: str) -> None:
    """As an attacker with shell access would: the sqlite3 CLI, triggers dropped first."""
    if shutil.which("sqlite3"):
        subprocess.run(["sqlite3", "-cmd", ".timeout 10000", str(db)], input=sql, text=True, check=True)
    else:
        conn = sqlite3.connect(db)
        conn.executescript(sql)
        conn.close()


def copy_without_secret(srv, tmp_path: Path) -> tuple[str, Path]:
    """(--db, working directory) of the log with no secret in reach: on SQLite a backup in a
    directory of its own; on PostgreSQL the database itself seen from an empty directory (its
    secret file lives in the server's working directory, never in the database)."""
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    if srv.on_postgres:
        return srv.db_location, copy_dir
    copy = copy_dir / "recalled.db"
    done = run(["backup", str(copy), "--db", srv.db_location], srv.workdir)
    assert done.returncode == 0, done.stderr
    return str(copy), copy_dir


def test_verify_without_the_secret_creates_nothing_and_says_how_to_pass_it(make_server, tmp_path):
    srv = make_server("verify-nosecret")
    with srv.client() as c:
        assert c.post("/v1/events/batch", json={"events": [{"action": f"a.{i}"} for i in range(20)]}).status_code == 200
    copy, where = copy_without_secret(srv, tmp_path)
    before = listing(where)
    assert before == ([] if srv.on_postgres else ["recalled.db"])

    result = run(["verify", "--db", copy], where)
    assert result.returncode == 2, result.stderr
    assert "RECALLED_SECRET" in result.stderr and "--secret-file" in result.stderr
    assert ("recalled.secret" if srv.on_postgres else copy + ".secret") in result.stderr  # where it looked
    assert "this secret is not the one" not in result.stderr  # no made-up secret was tried
    assert listing(where) == before

    # The same copy verifies fully when told where the secret is.
    secret_file = srv.secret_path
    good = run(["verify", "--db", copy, "--secret-file", str(secret_file)], where)
    assert good.returncode == 0, good.stderr
    assert "hashes and signatures" in good.stderr
    assert json.loads(good.stdout)["signaturesChecked"] is True
    assert listing(where) == before
    # ...and a wrong secret is told apart from a missing one.
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("0" * 64 + "\n")
    refused = run(["verify", "--db", copy, "--secret-file", str(wrong)], where)
    assert refused.returncode == 2 and "not the one the database was created with" in refused.stderr


def test_verify_no_signatures_checks_hashes_and_catches_tampering(make_server, tmp_path):
    srv = make_server("verify-hashes")
    with srv.client() as c:
        for i in range(6):
            assert c.post("/v1/events", json={"action": f"h.{i}", "actor": {"id": f"u{i}"}}).status_code == 200
        server_events = len(audit_events(c))  # the bootstrap key's, first in the chain
    copy, where = copy_without_secret(srv, tmp_path)
    before = listing(where)

    ok = run(["verify", "--no-signatures", "--db", copy], where)
    assert ok.returncode == 0, ok.stderr
    assert "hashes only" in ok.stderr and "NOT checked" in ok.stderr
    out = json.loads(ok.stdout)
    assert out["signaturesChecked"] is False and out["data"]["valid"] is True and out["data"]["checked"] == 6 + server_events

    if srv.on_postgres:  # the table owner's login: disable the append-only trigger, edit a row
        srv.stop()
        pg_support.execute(copy, "ALTER TABLE events DISABLE TRIGGER USER; "
                                 "UPDATE events SET action = 'forged' WHERE seq = 4;")
    else:
        tamper(Path(copy), "DROP TRIGGER events_append_only_update; UPDATE events SET action = 'forged' WHERE seq = 4;")
    bad = run(["verify", "--no-signatures", "--db", copy], where)
    assert bad.returncode == 2, bad.stderr
    first = json.loads(bad.stdout)["data"]["firstInvalid"]
    assert first["seq"] == 4 and first["reason"] == "hash mismatch"
    assert listing(where) == before


def test_offline_commands_on_a_wrong_path_exit_2_and_create_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = empty / "nowhere" / "recalled.db"
    for args in (["keys", "list"], ["keys", "create", "--name", "x", "--scopes", "admin"],
                 ["keys", "revoke", "key_x"], ["verify"], ["verify", "--no-signatures"],
                 ["export"], ["backup", str(empty / "b.db")]):
        result = run([*args, "--db", str(missing)], empty)
        assert result.returncode == 2, (args, result.stderr)
        assert f"no database at {missing}; pass --db" in result.stderr, (args, result.stderr)
        assert listing(empty) == [], args

    # A file that is not a recalled-lite database is not turned into one.
    other = empty / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    result = run(["keys", "list", "--db", str(other)], empty)
    assert result.returncode == 2 and "not a recalled-lite database" in result.stderr
    conn = sqlite3.connect(other)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_schema")] == ["t"]
    conn.close()
    assert listing(empty) == ["other.db"]


def test_serve_never_replaces_a_lost_secret(make_server):
    srv = make_server("lost-secret")
    srv.stop()
    secret = srv.secret_path
    secret.unlink()
    result = subprocess.run(CLI + ["serve", "--db", srv.db_location, "--port", "0"], capture_output=True,
                            text=True, env=clean_env(), cwd=srv.workdir, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "RECALLED_SECRET" in result.stderr and not secret.exists()


def test_backups_and_exports_are_private_and_a_missing_directory_is_refused(make_server, tmp_path):
    srv = make_server("private-files")
    with srv.client() as c:
        assert c.post("/v1/events/batch", json={"events": [{"action": "p"}] * 50}).status_code == 200
        server_events = len(audit_events(c))
    out = tmp_path / "out"
    out.mkdir()
    # Stale .partial files from an interrupted run, readable by everyone: must not keep that mode.
    for stale in ("b.db.partial", "e.ndjson.partial"):
        (out / stale).write_text("stale")
        os.chmod(out / stale, 0o644)
    old_umask = os.umask(0o022)
    try:
        backup = run(["backup", str(out / "b.db"), "--db", srv.db_location], srv.workdir)
        export = run(["export", "--format", "ndjson", "--output", str(out / "e.ndjson"),
                      "--db", srv.db_location], srv.workdir)
    finally:
        os.umask(old_umask)
    assert export.returncode == 0, export.stderr
    if srv.on_postgres:
        # A file copy of a PostgreSQL database is pg_dump's job: refused, pointing there.
        assert backup.returncode == 2 and "pg_dump" in backup.stderr, backup.stderr
        (out / "b.db.partial").unlink()
        assert listing(out) == ["e.ndjson"]
    else:
        assert backup.returncode == 0, backup.stderr
        assert listing(out) == ["b.db", "e.ndjson"]  # no partial or journal left over
        conn = sqlite3.connect(out / "b.db")
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 50 + server_events
        conn.close()
    for name in listing(out):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    assert (out / "e.ndjson").read_text().count("\n") == 51 + server_events  # the events + the head

    nowhere = tmp_path / "no-such-dir"
    if not srv.on_postgres:
        refused = run(["backup", str(nowhere / "b.db"), "--db", srv.db_location], srv.workdir)
        assert refused.returncode == 2
        assert f"the directory {nowhere} does not exist" in refused.stderr
        assert not nowhere.exists()
    refused = run(["export", "--output", str(nowhere / "e.csv"), "--db", srv.db_location], srv.workdir)
    assert refused.returncode == 2 and "does not exist" in refused.stderr and not nowhere.exists()


@pytest.mark.sqlite_only("unit of storage.sqlite.offline.is_new_database on missing/empty/garbage files")
def test_only_a_certainly_new_database_may_get_a_new_secret(tmp_path, make_server):
    from recalled_lite.storage.sqlite.offline import is_new_database

    assert is_new_database(tmp_path / "missing.db")
    (tmp_path / "empty.db").write_bytes(b"")
    assert is_new_database(tmp_path / "empty.db")
    (tmp_path / "garbage.db").write_bytes(b"not a database at all" * 200)
    assert not is_new_database(tmp_path / "garbage.db")  # unreadable: it may have a secret somewhere
    srv = make_server("existing")
    assert not is_new_database(srv.db_path)
