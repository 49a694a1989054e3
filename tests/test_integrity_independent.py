"""An independent verifier, written from docs/integrity.md alone (no product imports).

It reads the database with Python's sqlite3 module (or psycopg, on the PostgreSQL pass: the
columns are the same), maps columns as §5 of the doc says, and checks the chain as §1-§4 say.
Then the rows are altered the way an attacker with shell or database access would (the sqlite3
command-line tool, or a database login; append-only triggers dropped or disabled first) and
must be rejected.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

import pg_support
from audit_events import audit_events


def canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _rows(location, sql: str) -> list[tuple]:
    location = str(location)
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as pg:
            return pg.execute(sql).fetchall()
    conn = sqlite3.connect(f"file:{location}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def load_events(location) -> tuple[str, list[dict]]:
    """Every stored event of the database at `location` (an SQLite path or a PostgreSQL URL)."""
    project_id = _rows(location, "SELECT value FROM meta WHERE key = 'project_id'")[0][0]
    events = []
    for row in _rows(
        location,
        "SELECT seq, id, organization, action, actor_type, actor_id, actor_name, actor_email, targets, "
        "metadata, ip_address, user_agent, occurred_at, received_at, idempotency_key, personal_salt, "
        "personal_digest, prev_hash, hash, signature, erased_at FROM events ORDER BY seq"
    ):
        (seq, eid, org, action, atype, aid, aname, aemail, targets, metadata, ip, ua, occurred, received,
         idem, salt, digest, prev, h, sig, erased) = row
        events.append({
            "seq": seq, "id": eid, "organization": org, "action": action,
            "actor": {"type": atype, "id": aid, "name": aname, "email": aemail},
            "targets": json.loads(targets) if targets is not None else None,
            "metadata": json.loads(metadata) if metadata is not None else None,
            "ipAddress": ip, "userAgent": ua, "occurredAt": iso_ms(occurred), "receivedAt": iso_ms(received),
            "idempotencyKey": idem, "personalSalt": salt.hex() if salt is not None else None,
            "personalDigest": digest, "prevHash": prev, "hash": h, "signature": sig,
            "erasedAt": erased,
        })
    return project_id, events


def independent_verify(events: list[dict], project_id: str, secret: bytes | None):
    prev = None
    for n, e in enumerate(events, start=1):
        if e["seq"] != n or e["prevHash"] != prev:
            return False, e["seq"], "chain broken"
        if e["personalSalt"]:
            p = {"actorEmail": e["actor"]["email"], "actorId": e["actor"]["id"],
                 "actorName": e["actor"]["name"], "ipAddress": e["ipAddress"],
                 "metadata": e["metadata"], "userAgent": e["userAgent"]}
            digest = "sha256:" + hashlib.sha256(bytes.fromhex(e["personalSalt"]) + canonical(p)).hexdigest()
            if digest != e["personalDigest"]:
                return False, e["seq"], "personal data altered"
        elif e["erasedAt"] is None:
            return False, e["seq"], "salt missing"
        core = {"action": e["action"], "actorType": e["actor"]["type"], "id": e["id"],
                "idempotencyKey": e["idempotencyKey"], "occurredAt": e["occurredAt"],
                "organization": e["organization"], "personalDigest": e["personalDigest"],
                "projectId": project_id, "receivedAt": e["receivedAt"], "seq": e["seq"],
                "targets": e["targets"]}
        message = (prev or "").encode() + b"\n" + canonical(core)
        if "sha256:" + hashlib.sha256(message).hexdigest() != e["hash"]:
            return False, e["seq"], "hash mismatch"
        if secret is not None and "hmac-sha256:" + hmac.new(secret, message, "sha256").hexdigest() != e["signature"]:
            return False, e["seq"], "signature mismatch"
        prev = e["hash"]
    return True, len(events), None


def attack(srv, sqlite_sql: str, pg_sql: str) -> None:
    """Alter the log behind the server: the sqlite3 CLI on the file, or the table owner's
    login on PostgreSQL (which may disable the append-only trigger)."""
    if srv.on_postgres:
        pg_support.execute(srv.db_location, pg_sql)
    else:
        run_sql(srv.db_path, sqlite_sql)


PG_OPEN = "ALTER TABLE events DISABLE TRIGGER USER; "  # every append-only trigger


def run_sql(db_path, sql: str) -> None:
    """Alter the file the way an attacker with shell access would: the sqlite3 CLI."""
    if shutil.which("sqlite3"):
        subprocess.run(["sqlite3", "-cmd", ".timeout 10000", str(db_path)], input=sql, text=True, check=True)
    else:  # same effect through the library, on machines without the CLI
        conn = sqlite3.connect(db_path)
        conn.executescript(sql)
        conn.close()


EVENTS = [
    {"action": "invoice.paid", "organization": "org_a",
     "actor": {"type": "user", "id": "u1", "name": "Zoë Ångström", "email": "z@example.com"},
     "targets": [{"type": "invoice", "id": "inv_1", "name": "Invoice “1”"}],
     "metadata": {"amount": 4200, "ratio": 0.1, "big": 1.5e16, "tiny": 1e-7, "nested": {"b": [1, {"a": None}]},
                  "text": "line\nbreak \"quoted\" \\ \u2028 emoji 🎉"}},
    {"action": "user.login", "ip_address": "203.0.113.9", "user_agent": "Mozilla/5.0"},
    {"event_type": "quick.start", "occurred_at": "2026-01-02T03:04:05.678+02:00",
     "idempotency_key": "idem-1", "data": {"x": 1}},
    {"action": "no.actor", "targets": [{"type": "doc", "id": "d1"}]},
]


def test_independent_verifier_accepts_fresh_and_rejects_altered(make_server):
    srv = make_server("chain")
    with srv.client() as c:
        for body in EVENTS:
            assert c.post("/v1/events", json=body).status_code == 200
        batch = {"events": [{"action": f"batch.{i}", "actor": {"id": f"u{i}"}, "metadata": {"i": i}}
                            for i in range(50)]}
        assert c.post("/v1/events/batch", json=batch).status_code == 200
        total = 54 + len(audit_events(c))  # and the server's own (the bootstrap key's), first
    secret = srv.secret_path.read_text().strip().encode()
    srv.stop()

    project_id, events = load_events(srv.db_location)
    assert len(events) == total
    assert independent_verify(events, project_id, secret) == (True, total, None)
    # A wrong secret must fail the signature check: the check is real.
    assert independent_verify(events, project_id, b"x" * 64)[2] == "signature mismatch"

    # The database itself refuses tampering while the triggers exist.
    if srv.on_postgres:
        import psycopg

        for sql in ("UPDATE events SET action = 'forged' WHERE seq = 3", "DELETE FROM events WHERE seq = 3"):
            with pytest.raises(psycopg.Error, match="append-only"):
                pg_support.execute(srv.db_location, sql)
    else:
        conn = sqlite3.connect(srv.db_path)
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE events SET action = 'forged' WHERE seq = 3")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM events WHERE seq = 3")
        conn.close()

    # An attacker drops the triggers and edits a row.
    attack(srv, "DROP TRIGGER events_append_only_update; UPDATE events SET action = 'invoice.refunded' WHERE seq = 3;",
           PG_OPEN + "UPDATE events SET action = 'invoice.refunded' WHERE seq = 3;")
    project_id, events = load_events(srv.db_location)
    ok, seq, reason = independent_verify(events, project_id, secret)
    assert (ok, seq, reason) == (False, 3, "hash mismatch")

    # The product's offline verifier agrees and exits non-zero.
    result = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "verify", "--db", srv.db_location],
                            capture_output=True, text=True, cwd=srv.workdir)
    assert result.returncode == 2, result.stderr
    assert json.loads(result.stdout)["data"]["firstInvalid"]["seq"] == 3


def test_personal_data_tamper_and_row_deletion_detected(make_server):
    srv = make_server("chain2")
    with srv.client() as c:
        seqs = [c.post("/v1/events", json={"action": "a.b", "actor": {"id": f"u{i}", "email": f"{i}@x.io"}})
                .json()["data"]["seq"] for i in range(5)]
    secret = srv.secret_path.read_text().strip().encode()
    srv.stop()
    forge = f"UPDATE events SET actor_email = 'someone@else.io' WHERE seq = {seqs[1]};"
    attack(srv, "DROP TRIGGER events_append_only_update; " + forge, PG_OPEN + forge)
    project_id, events = load_events(srv.db_location)
    assert independent_verify(events, project_id, secret) == (False, seqs[1], "personal data altered")

    # Put the email back (the chain verifies again), then delete a whole row.
    restore = f"UPDATE events SET actor_email = '1@x.io' WHERE seq = {seqs[1]};"
    attack(srv, restore, PG_OPEN + restore)
    assert independent_verify(*reversed(load_events(srv.db_location)), secret)[0] is True
    delete = f"DELETE FROM events WHERE seq = {seqs[3]};"
    attack(srv, "DROP TRIGGER events_append_only_delete; " + delete, PG_OPEN + delete)
    project_id, events = load_events(srv.db_location)
    assert independent_verify(events, project_id, secret) == (False, seqs[4], "chain broken")
