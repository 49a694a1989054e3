"""Every figure comes from a server that kept the spec's guarantees.

The performance issue forbids meeting a bar by turning off `synchronous=FULL`, the
full-text index or the chain. For each recalled-lite server that took intake load,
the harness records what the server's write connection really ran with (read back
from SQLite and published on /metrics as `recalled_storage_info`), counts the events
wrk saw acknowledged, and after the server stops checks the file itself: every
acknowledged event is there, `seq` has no gap, the FTS index has one row per event,
and `recalled-lite verify` accepts the chain and the signatures of everything the
run added.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

from .procs import json_or_none, request

REQUIRED = {"synchronous": "FULL", "journal_mode": "wal", "fts": "on"}
_INFO = re.compile(r"^recalled_storage_info\{([^}]*)\} 1(?:\.0)?$", re.M)


def storage_info(port: int, key: str) -> dict[str, str]:
    """The write connection's settings from /metrics ({} if the server has none)."""
    status, _, body = request(port, "GET", "/metrics", key=key)
    if status != 200:
        return {}
    match = _INFO.search(body.decode("utf-8", "replace"))
    if not match:
        return {}
    return dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))


def head_seq(port: int) -> int:
    """The chain head before the load (a prefilled database starts above 0)."""
    status, _, body = request(port, "GET", "/readyz")
    data = json_or_none(body) or {}
    return int(data.get("data", {}).get("seq", 0)) if status == 200 else 0


def audit(server_bin: list[str], db: Path, *, base_seq: int, acknowledged: int,
          settings: dict[str, str]) -> dict:
    """Check a stopped server's database. Returns the facts and `ok`, plus
    `problems` (what failed, in words) when not ok."""
    problems = []
    for name, want in REQUIRED.items():
        if settings.get(name) != want:
            problems.append(f"{name}={settings.get(name, '?')} (want {want})")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored, low, high = conn.execute(
            "SELECT count(*), min(seq), max(seq) FROM events WHERE seq > ?", (base_seq,)).fetchone()
        # Contentless FTS5 keeps one docsize row per indexed document.
        fts_rows = conn.execute(
            "SELECT count(*) FROM events_fts_docsize WHERE id > ?", (base_seq,)).fetchone()[0]
    finally:
        conn.close()
    if stored < acknowledged:
        problems.append(f"{acknowledged - stored:,} acknowledged events missing")
    if stored and (low != base_seq + 1 or high - low + 1 != stored):
        problems.append(f"seq not gap-free ({low}..{high} holds {stored:,})")
    if fts_rows != stored:
        problems.append(f"FTS has {fts_rows:,} rows for {stored:,} events")
    verified = 0
    if stored:
        proc = subprocess.run(
            [*server_bin, "verify", "--db", str(db), "--from-seq", str(base_seq + 1)],
            capture_output=True, text=True, cwd=db.parent, timeout=3600)
        match = re.search(r"OK: ([\d,]+) events verified", proc.stderr)
        if proc.returncode != 0 or not match:
            problems.append(f"verify failed: {(proc.stderr or proc.stdout).strip()[-200:]}")
        else:
            verified = int(match.group(1).replace(",", ""))
            if verified < stored:
                problems.append(f"verify checked {verified:,} of {stored:,}")
    return {"settings": settings, "base_seq": base_seq, "acknowledged": acknowledged,
            "stored": stored, "fts_rows": fts_rows, "verified": verified,
            "ok": not problems, "problems": problems}
