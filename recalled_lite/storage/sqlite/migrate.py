"""Schema migrations: numbered .sql files, applied in order, tracked by PRAGMA user_version."""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (number, name, _) in enumerate(found, start=1):
        if number != expected:
            raise RuntimeError(f"migration numbering has a gap or duplicate at {name}")
    return found


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction. Returns the new version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    migrations = available()
    if current > len(migrations):
        raise RuntimeError(
            f"database schema version {current} is newer than this recalled-lite "
            f"({len(migrations)}); upgrade recalled-lite or use a backup"
        )
    for number, _name, sql in migrations[current:]:
        # executescript commits first; the explicit BEGIN makes the script and
        # the version bump one atomic step.
        conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version={number};\nCOMMIT;")
    return len(migrations)
