"""`make test`: the whole suite on SQLite and, when RECALLED_TEST_PG_URL names a cluster, the
whole suite again on PostgreSQL, both passes at the same time.

Why at the same time: one pass after the other took 17.5 + 19 minutes on the 2-core CI machine
(fresh clone, 2026-12-03), past CI's 30. Much of a pass is waiting (servers starting, fsyncs,
webhook receivers, browser pages), so two passes side by side share the two cores and take
about as long as the longer one (docs/testing.md has the measured times).

The SQLite pass prints as it goes; the PostgreSQL pass writes to a log file that is printed
when it ends, so the two never interleave. The exit status is the SQLite pass's if it failed,
else the PostgreSQL pass's. Arguments are passed to both pytest runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pytest_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", *args]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def main(args: list[str]) -> int:
    pg_url = os.environ.get("RECALLED_TEST_PG_URL", "")
    started = time.monotonic()
    postgres = None
    if pg_url:
        log = tempfile.NamedTemporaryFile(prefix="recalled-test-postgres-", suffix=".log", delete=False)
        postgres = subprocess.Popen(pytest_command(args), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "RECALLED_TEST_BACKEND": "postgres"})
        log.close()
        print(f"== the PostgreSQL pass runs beside this one; its output: {log.name}", flush=True)
    else:
        print("RECALLED_TEST_PG_URL is not set: the PostgreSQL pass does not run "
              "(source .ci/postgres-up, then make test)", flush=True)
    print("== the SQLite pass", flush=True)
    sqlite_status = subprocess.call(pytest_command(args), cwd=ROOT,
                                    env={**os.environ, "RECALLED_TEST_BACKEND": "sqlite"})
    sqlite_time = time.monotonic() - started
    summary = [f"SQLite pass: exit {sqlite_status}, {minutes(sqlite_time)}"]
    status = sqlite_status
    if postgres is not None:
        postgres_status = postgres.wait()
        postgres_time = time.monotonic() - started
        print(f"\n== the PostgreSQL pass ({log.name})", flush=True)
        sys.stdout.write(Path(log.name).read_text(errors="replace"))
        summary.append(f"PostgreSQL pass: exit {postgres_status}, {minutes(postgres_time)}")
        status = sqlite_status or postgres_status
    print("\n== " + "; ".join(summary), flush=True)
    return status


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
