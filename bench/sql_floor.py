"""The SQLite floor: what the storage alone costs per event, with no HTTP and no Python per event.

The rows are the ones the server would write (real `prepare_event`, real chain, the
bench's own event shape): every statement `AppendEvents.apply_group` makes for a write
group (the events, the Merkle tiles, the block bounds, the keys, the FTS rows), captured
group by group and then replayed with `executemany` on a connection opened by the
server's own `open_writer` (the same pragmas: WAL, synchronous=FULL, secure_delete, the
cache size), committed in groups of 32, 64 or 1000 events, which is the group
commit's size under 32 or 64 single-event clients and under batch requests. It is what
the intake figures are compared with (BENCHMARKS.md). It starts on a cold SQLite page
cache, so on a large database a warmed-up server can come out slightly ahead of it.

Run by `make bench` next to the intake rows, or alone:
    .venv/bin/python -m bench.sql_floor [DB_DIR ...]   (an empty database if none)
    .venv/bin/python -m bench.sql_floor --attribute DB_DIR
The second form is for attribution only: it repeats the measurement with one index
(or the FTS index, or the target rows) left out at a time, on copies of DB_DIR, to
show what each costs. No shipped configuration leaves anything out.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from recalled_lite.config import EventsConfig
from recalled_lite.intake import prepare_event
from recalled_lite.schemas import decode_event
from recalled_lite.storage.base import ApiKeyRecord
from recalled_lite.storage.sqlite import store as S
from recalled_lite.storage.sqlite.connection import open_writer

from . import dataset

GROUPS = (32, 64, 1000)
_KEY = ApiKeyRecord(id="key_floor", name="floor", prefix="floor000", secret_hash="",
                    scopes=frozenset({"events:write"}), organization=None, created_at=0,
                    revoked_at=None)


class _Capture:
    """Stands in for the connection: keeps, in order, the statements and rows apply_group
    would write. Reads go to the real connection."""

    def __init__(self, conn) -> None:
        self.conn, self.rows = conn, {}

    def executemany(self, sql, rows) -> None:
        self.rows.setdefault(sql, []).extend(rows)

    def execute(self, *args):
        return self.conn.execute(*args)


def _groups(db: Path, secret: bytes, n: int, group: int, seed: int) -> list[dict[str, list]]:
    """The statements and rows of each write group, as the server's own apply_group makes
    them (events, the Merkle tiles, the block bounds, the events dated ahead, the keys,
    the FTS rows), one group of `group` events after another. Capturing per group, rather
    than recomputing the block rows here, keeps the floor in step with the store's layout."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    prepared = [prepare_event(decode_event(msgspec.json.encode(dataset.make_event(rng))), _KEY,
                              EventsConfig(), now + i) for i in range(n)]
    store = S.SqliteStore(db, secret=secret)
    try:
        out = []
        for start in range(0, n, group):
            capture = _Capture(store._conn)
            # apply_group moves the writer's in-memory head, so the next group chains on.
            S.AppendEvents.apply_group(capture, store.writer, [S.AppendEvents(prepared[start:start + group])])
            out.append(capture.rows)
        return out
    finally:
        store.close()


# For --attribute: what to leave out. "fts" and "keys" skip those inserts.
VARIANTS = {
    "as shipped": (),
    "without FTS": ("fts",),
    "without events_keys rows": ("keys",),
    "without events_by_time": ("DROP INDEX events_by_time",),
    "without events_keys and FTS": ("keys", "fts"),
}


def measure(db: Path, secret: bytes, group: int, n: int, seed: int = 1,
            leave_out: tuple[str, ...] = ()) -> dict:
    """Append n events to `db` in commits of `group` events. Returns events/s and
    CPU µs per event (insert and COMMIT apart)."""
    skipped = {S._INSERT_FTS} if "fts" in leave_out else set()
    if "keys" in leave_out:
        skipped.add(S._INSERT_KEYS)
    groups = _groups(db, secret, n, group, seed)
    conn = open_writer(db, synchronous="FULL", busy_timeout_ms=5000, cache_mb=32)
    for statement in leave_out:
        if statement.startswith("DROP"):
            conn.execute(statement)
    insert_s = commit_s = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        for statements in groups:
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            for sql, rows in statements.items():
                if sql not in skipped:
                    conn.executemany(sql, rows)
            t1 = time.perf_counter()
            conn.execute("COMMIT")
            insert_s += t1 - t0
            commit_s += time.perf_counter() - t1
    finally:
        conn.close()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return {"group": group, "events": n, "events_per_s": round(n / wall),
            "insert_us": round(insert_s / n * 1e6, 1), "commit_us": round(commit_s / n * 1e6, 1),
            "cpu_us": round(cpu / n * 1e6, 1)}


def floor(source: Path | None, work: Path, n: int = 10_000) -> list[dict]:
    """Measure every group size. `source`: a database directory to copy (prefilled),
    or None for an empty database (a fresh one per group size)."""
    out = []
    for i, group in enumerate(GROUPS):
        if source is None or i == 0:
            shutil.rmtree(work, ignore_errors=True)
            if source is None:
                work.mkdir(parents=True)
            else:
                shutil.copytree(source, work)
        db = work / "recalled.db"
        secret_file = work / "recalled.db.secret"
        secret = secret_file.read_bytes().strip() if secret_file.exists() else b"f" * 64
        out.append(measure(db, secret, group, n, seed=group))
    shutil.rmtree(work, ignore_errors=True)
    return out


def describe(results: list[dict]) -> str:
    return ", ".join(f"{r['events_per_s']:,}/s at {r['group']}/commit" for r in results)


def attribute(source: Path, groups: tuple[int, ...] = (2000, 32), n: int = 20_000) -> None:
    with tempfile.TemporaryDirectory(prefix="recalled-floor-") as tmp:
        work = Path(tmp) / "db"
        for group in groups:
            for name, leave_out in VARIANTS.items():
                shutil.rmtree(work, ignore_errors=True)
                shutil.copytree(source, work)
                secret = (work / "recalled.db.secret").read_bytes().strip()
                r = measure(work / "recalled.db", secret, group, n, seed=group, leave_out=leave_out)
                print(f"{group:>5}/commit, {name:36s} CPU {r['cpu_us']:6.1f} µs/event, "
                      f"{r['events_per_s']:>7,} events/s", flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--attribute"]:
        if len(argv) != 2:
            print("usage: python -m bench.sql_floor --attribute DB_DIR (a prefilled bench/data/ directory)",
                  file=sys.stderr)
            return 2
        attribute(Path(argv[1]))
        return 0
    sources = [Path(a) if a else None for a in argv] or [None]
    for source in sources:
        with tempfile.TemporaryDirectory(prefix="recalled-floor-") as tmp:
            label = str(source) if source else "empty database"
            for r in floor(source, Path(tmp) / "db"):
                print(f"{label}: {r['group']:>5} events/commit: {r['events_per_s']:>7,} events/s "
                      f"(insert {r['insert_us']} µs + COMMIT {r['commit_us']} µs per event, "
                      f"CPU {r['cpu_us']} µs)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
