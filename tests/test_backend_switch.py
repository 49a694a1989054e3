"""The one switch that runs the suite on PostgreSQL (tests/conftest.py, tests/pg_support.py).

These check the switch itself, on both passes: that a postgres ServerProcess gets a fresh
database and hands its URL to `serve --db`, keeps it across a second ServerProcess on the same
workdir (as recalled.db stays in the workdir), and drops it after; and that sqlite_only tests
are skipped with their reason on the PostgreSQL pass and run on the SQLite pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pg_support
from conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[1]


def database_exists(url: str) -> bool:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(pg_support.admin_url(), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_postgres_server_gets_a_fresh_database_on_its_command_line(tmp_path: Path) -> None:
    pg_support.admin_url()  # skips without a cluster on the SQLite pass
    srv = ServerProcess(tmp_path / "pg", backend="postgres")
    other = ServerProcess(tmp_path / "pg2", backend="postgres")
    try:
        cmd = srv.command()
        url = cmd[cmd.index("--db") + 1]
        assert url == srv.db_location and url.startswith("postgresql://")
        assert url != other.db_location
        assert database_exists(url)
        assert srv.secret_path == srv.workdir / "recalled.secret"
        with pytest.raises(AssertionError, match="sqlite_only"):
            srv.db_path
        # A second process on the same workdir is the same log, as with recalled.db.
        again = ServerProcess(srv.workdir, backend="postgres")
        assert again.db_location == url
    finally:
        srv.drop_database()
        other.drop_database()
    assert not database_exists(url)


def test_sqlite_server_keeps_its_file_in_the_workdir(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "lite", backend="sqlite")
    cmd = srv.command()
    assert cmd[cmd.index("--db") + 1] == str(tmp_path / "lite" / "recalled.db") == srv.db_location
    assert srv.db_path == tmp_path / "lite" / "recalled.db"
    assert srv.secret_path == tmp_path / "lite" / "recalled.db.secret"


PROBE = '''
import pytest

@pytest.mark.sqlite_only("reads the file")
def test_marked():
    pass

def test_plain():
    pass
'''


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sqlite_only_is_skipped_with_its_reason_on_postgres_only(tmp_path: Path, backend: str) -> None:
    if backend == "postgres":
        pg_support.admin_url()
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {**os.environ, "RECALLED_TEST_BACKEND": backend, "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "-p", "conftest", str(probe)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    if backend == "postgres":
        assert "1 passed, 1 skipped" in done.stdout, done.stdout + done.stderr
        assert "sqlite_only: reads the file" in done.stdout
    else:
        assert "2 passed" in done.stdout, done.stdout + done.stderr


def test_sqlite_only_without_a_reason_is_refused(tmp_path: Path) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text("import pytest\n\n@pytest.mark.sqlite_only\ndef test_x():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    env.pop("RECALLED_TEST_BACKEND", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                           str(probe)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "needs a reason" in done.stdout + done.stderr


def test_postgres_only_files_wait_for_the_postgres_pass(tmp_path: Path) -> None:
    probe = tmp_path / "test_pg_probe.py"
    probe.write_text("def test_x():\n    pass\n")
    env = {**os.environ, "RECALLED_TEST_BACKEND": "sqlite", "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "conftest",
                           str(probe)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "1 skipped" in done.stdout and "runs in the PostgreSQL pass" in done.stdout, done.stdout + done.stderr
