"""Numbered migration files, the same rule for every backend: `NNN_name.sql` in the backend's
`migrations/` folder, applied in order, numbered 1, 2, 3... without gaps; a database newer
than the files is refused, never downgraded. How a backend applies and records them is its own
(storage/<backend>/migrate.py)."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def available(package: str) -> list[tuple[int, str, str]]:
    """(number, file name, SQL text) of every migration of `package`, in order."""
    found = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (number, name, _) in enumerate(found, start=1):
        if number != expected:
            raise RuntimeError(f"migration numbering has a gap or duplicate at {name}")
    return found


def refuse_newer(current: int, known: int) -> None:
    if current > known:
        raise RuntimeError(
            f"database schema version {current} is newer than this recalled-lite "
            f"({known}); upgrade recalled-lite or use a backup")
