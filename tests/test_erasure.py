"""SPEC §4.7 erasure: DELETE /v1/actors/{id}. The actor's personal fields are gone from every one
of their events — from the rows, the full-text index, the database file and its WAL — the chain
still verifies (server, CLI and the independent verifier), and every other event is untouched.

On PostgreSQL the byte-level check of the file and its WAL becomes a check of every stored
events row as text (columns, filter keys and the tsvector): what VACUUM does with dead tuples
is PostgreSQL's, documented in docs/scaling.md, not something these tests can grep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from audit_events import audit_events, without_audit
from test_integrity_independent import independent_verify, load_events

ACTOR = "zq_actor_7f3kpw"
# Distinctive values; tokens are long enough that the full-text index's prefix compression
# cannot hide them from a grep of their tails.
PERSONAL = {
    "name": "Qwzxnamevkjh Erasabletokenpq",
    "email": "zqx.mailboxhx@example-erasure.org",
    "note": "confidentialmemojqz about the account",
    "phone": "zqx555-0199phone",
    "ip": "2001:db8::dead:beef:77",
    "ua": "ZqxAgentkbw/9.9 (erasure test)",
}
NEEDLES = [
    ACTOR, PERSONAL["name"], "qwzxnamevkjh", "xnamevkjh", "erasabletokenpq", "sabletokenpq",
    PERSONAL["email"], "zqx.mailboxhx", "mailboxhx@example-erasure", "confidentialmemojqz", "fidentialmemojqz",
    "zqx555-0199phone", "555-0199phone", PERSONAL["ip"], PERSONAL["ua"], "ZqxAgentkbw",
]
# The actor id as events_keys stores it (hex, storage/keys.py): it must go too.
NEEDLES.append(ACTOR.encode().hex())
KEPT = ["keepername_rkq", "keepmemo_dvh"]  # personal data of another actor: must stay


def personal_event(i: int, org: str) -> dict:
    return {
        "action": f"erase.target.{i % 3}", "organization": org,
        "actor": {"type": "user", "id": ACTOR, "name": PERSONAL["name"], "email": PERSONAL["email"]},
        "targets": [{"type": "invoice", "id": f"inv_{i}", "name": f"Invoice {i}"}],
        "metadata": {"note": PERSONAL["note"], "contact": {"phone": PERSONAL["phone"]}, "n": i},
        "ip_address": PERSONAL["ip"], "user_agent": PERSONAL["ua"],
    }


def other_event(i: int) -> dict:
    return {
        "action": "other.action", "organization": ["org_a", "org_b"][i % 2],
        "actor": {"id": f"keeper_{i % 40}", "name": f"keepername_rkq {i}", "email": f"k{i}@example.com"},
        "metadata": {"memo": f"keepmemo_dvh {i}", "words": " ".join(f"w{(i * 7 + j) % 997}" for j in range(8))},
        "ip_address": "192.0.2.1",
    }


def grep(path: Path, needles: list[str]) -> dict[str, int]:
    data = path.read_bytes() if path.exists() else b""
    hits = {}
    for needle in needles:
        for form in {needle, needle.lower()}:
            count = data.count(form.encode())
            if count:
                hits[form] = hits.get(form, 0) + count
    return hits


def row_hits(srv, needles: list[str]) -> dict[str, int]:
    """PostgreSQL: the needles in the live events rows (every column, keys and search doc)."""
    text = "\n".join(row[0] for row in srv.query("SELECT e::text FROM events e"))
    path = srv.workdir / "rows.txt"
    path.write_text(text)
    try:
        return grep(path, needles)
    finally:
        path.unlink()


def stored_hits(srv, needles: list[str]) -> dict[str, int]:
    if srv.on_postgres:
        return row_hits(srv, needles)
    return {**grep(Path(str(srv.db_path) + "-wal"), needles), **grep(srv.db_path, needles)}


def export(c) -> tuple[list[dict], dict]:
    body = c.get("/v1/exports", params={"format": "json"}).json()
    return body["data"], body["head"]


def test_erasure_removes_personal_data_everywhere_and_the_chain_still_verifies(make_server):
    srv = make_server("erasure")
    secret = srv.secret_path.read_text().strip().encode()
    with srv.client() as c:
        # Interleave the actor's events with many others, singly and in batches, with idempotency
        # keys, across two organizations: page splits and full-text segment merges happen.
        n_personal = 0
        for round_ in range(12):
            batch = [other_event(round_ * 300 + i) for i in range(300)]
            for j in range(0, 300, 37):
                batch.insert(j, personal_event(n_personal, ["org_a", "org_b"][n_personal % 2]))
                n_personal += 1
            assert c.post("/v1/events/batch", json={"events": batch}).status_code == 200
            body = personal_event(n_personal, "org_a")
            r = c.post("/v1/events", json=body, headers={"Idempotency-Key": f"erase-{round_}"})
            assert r.status_code == 200
            n_personal += 1
        keyed = body  # the last single event, sent with Idempotency-Key erase-11

        before, _ = export(c)
        mine = [e for e in before if e["actor"]["id"] == ACTOR]
        assert len(mine) == n_personal
        assert c.get("/v1/events/search", params={"q": "qwzxnamevkjh"}).json()["data"]
        # The check below is real: before erasure the strings are in the file or its WAL.
        assert stored_hits(srv, NEEDLES)

        r = c.delete(f"/v1/actors/{ACTOR}")
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert set(data) == {"actor_id", "anonymized_events", "erased_at"}
        assert data["actor_id"] == ACTOR and data["anonymized_events"] == n_personal
        assert data["erased_at"].endswith("Z") and len(data["erased_at"]) == 24

        # The chain verifies: server, and the export with the independent verifier. The erasure
        # added one event of its own (recalled.actor.erased), after everything that was there.
        verify = c.get("/v1/events/verify").json()["data"]
        assert verify["valid"] is True and verify["checked"] == len(before) + 1
        after, head = export(c)
        assert [e["action"] for e in after[len(before):]] == ["recalled.actor.erased"]
        project_id = after[0]["projectId"]
        assert independent_verify(after, project_id, secret) == (True, len(before) + 1, None)

        by_seq = {e["seq"]: e for e in before}
        for e in after[:len(before)]:
            old = by_seq[e["seq"]]
            if old["actor"]["id"] != ACTOR:
                assert e == old  # untouched, salt and all
                continue
            assert e["actor"] == {"type": "user", "id": "[deleted]", "name": "[deleted]", "email": "[deleted]"}
            assert e["metadata"] is None and e["ipAddress"] is None and e["userAgent"] is None
            assert e["personalSalt"] is None and e["erasedAt"] == data["erased_at"]
            for field in ("id", "seq", "action", "organization", "targets", "occurredAt", "receivedAt",
                          "idempotencyKey", "hash", "prevHash", "signature", "personalDigest"):
                assert e[field] == old[field], field
        one = c.get(f"/v1/events/{mine[0]['id']}").json()["data"]
        assert one["actor"]["id"] == "[deleted]" and "personalSalt" not in one

        # Search: the personal terms are gone, the event is still found by what is not personal.
        for q in ("qwzxnamevkjh", "erasabletokenpq", '"zqx.mailboxhx@example-erasure.org"', "confidentialmemojqz",
                  "zqx555-0199phone", f"actor:{ACTOR}", "deleted"):
            assert c.get("/v1/events/search", params={"q": q}).json()["data"] == [], q
        assert len(c.get("/v1/events/search", params={"q": "action:erase.target.*", "limit": 200}).json()["data"]) \
            == min(n_personal, 200)
        assert c.get("/v1/events", params={"actor_id": ACTOR}).json()["data"] == []
        assert c.get("/v1/events/search", params={"q": "keepername_rkq", "limit": 1}).json()["data"]

        # Nothing left in the database file or its WAL; the other actor's data is still there.
        if srv.on_postgres:
            assert row_hits(srv, NEEDLES) == {}
            assert set(row_hits(srv, KEPT)) >= set(KEPT)
        else:
            assert grep(srv.db_path, NEEDLES) == {}
            assert grep(Path(str(srv.db_path) + "-wal"), NEEDLES) == {}
            assert set(grep(srv.db_path, KEPT)) >= set(KEPT)

        # Idempotent: nothing left to erase. A retry of an erased keyed event is replayed, not stored.
        again = c.delete(f"/v1/actors/{ACTOR}").json()["data"]
        assert again["anonymized_events"] == 0
        r = c.post("/v1/events", json=keyed, headers={"Idempotency-Key": "erase-11"})
        assert r.status_code == 200 and r.json()["deduplicated"] is True
        assert r.json()["data"]["actor"]["id"] == "[deleted]"
        assert c.get("/v1/events/verify").json()["data"]["checked"] == len(before) + 2  # two erasures

    # Offline: the CLI verifier and the independent verifier reading the file agree.
    done = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "verify", "--db", srv.db_location],
                          capture_output=True, text=True, cwd=srv.workdir, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["data"]["valid"] is True
    srv.stop()
    project_id, stored = load_events(srv.db_location)
    assert independent_verify(stored, project_id, secret) == (True, len(before) + 2, None)
    assert stored_hits(srv, NEEDLES) == {}


def test_erasure_scope_organization_and_the_wall(make_server):
    srv = make_server("erasure_scope")
    with srv.client() as c:
        for org in ("org_a", "org_b", "org_a", None):
            body = {"action": "x.y", "actor": {"id": "u/slash", "email": "s@example.com"}, "metadata": {"k": 1}}
            if org:
                body["organization"] = org
            assert c.post("/v1/events", json=body).status_code == 200
        assert c.post("/v1/events", json={"action": "x.y", "organization": "org_a", "actor": {"id": "bystander"}}).status_code == 200

        r = c.delete("/v1/actors/u%2Fslash", params={"organization": "org_a"})
        assert r.json()["data"]["anonymized_events"] == 2 and r.json()["data"]["actor_id"] == "u/slash"
        events = without_audit(export(c)[0])  # the five events above, in seq order
        assert [e["actor"]["id"] for e in events] == ["[deleted]", "u/slash", "[deleted]", "u/slash", "bystander"]
        assert events[0]["actor"]["name"] is None  # a null stays null

    bound = srv.create_key(["actors:delete"], organization="org_b")
    with srv.client(key=bound) as c:
        r = c.delete("/v1/actors/u%2Fslash", params={"organization": "org_a"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
        r = c.delete("/v1/actors/u%2Fslash")  # within its own organization only
        assert r.json()["data"]["anonymized_events"] == 1
    with srv.client() as c:
        events = without_audit(export(c)[0])
        assert events[1]["actor"]["id"] == "[deleted]" and events[3]["actor"]["id"] == "u/slash"  # org null: untouched
        assert c.delete("/v1/actors/u%2Fslash").json()["data"]["anonymized_events"] == 1  # any organization
        assert c.delete("/v1/actors/").status_code == 400
        assert c.delete("/v1/actors/" + "x" * 256).status_code == 400
        assert c.delete("/v1/actors/nobody").json()["data"]["anonymized_events"] == 0
        assert c.get("/v1/events/verify").json()["data"]["valid"] is True


def test_erasure_of_an_actor_with_many_events_runs_in_chunks(make_server):
    srv = make_server("erasure_many")
    with srv.client() as c:
        for b in range(3):  # 1,200 events of the actor (chunks of 500), 300 of someone else
            events = [{"action": "bulk.op", "organization": f"org_{i % 3}",
                       "actor": {"id": "bulk_actor" if i % 5 else "bystander", "email": "bulkmailqz@example.com"
                                 if i % 5 else "other@example.com"}, "metadata": {"i": i}} for i in range(500)]
            assert c.post("/v1/events/batch", json={"events": events}).status_code == 200
        r = c.delete("/v1/actors/bulk_actor").json()["data"]
        assert r["anonymized_events"] == 1200
        assert c.get("/v1/events", params={"actor_id": "bulk_actor"}).json()["data"] == []
        assert len(c.get("/v1/exports", params={"format": "json", "actor_id": "bystander"}).json()["data"]) == 300
        own = len(audit_events(c))  # the bootstrap key's and this erasure's
        assert own == 2
        assert c.get("/v1/events/verify").json()["data"] == {
            "valid": True, "checked": 1500 + own, "head": c.get("/v1/events/verify").json()["data"]["head"],
            "firstInvalid": None}
    if srv.on_postgres:
        assert row_hits(srv, ["bulkmailqz"]) == {}
    else:
        assert grep(srv.db_path, ["bulkmailqz"]) == {}
