"""SPEC §1 503 row: a full disk (simulated with database.max_page_count, which makes SQLite answer
SQLITE_FULL exactly as a full filesystem does) gives 503 UNAVAILABLE with Retry-After, never a
2xx without a stored row, never a 500; after space returns, writes resume and the file and the
chain are intact."""

from __future__ import annotations

import sqlite3

import pytest

from audit_events import audit_events

pytestmark = pytest.mark.sqlite_only("a full disk is simulated with SQLite's max_page_count; PostgreSQL has no "
                                     "such knob (a full volume would need a tiny filesystem)")


def test_disk_full_gives_503_then_resumes(make_server):
    srv = make_server("full")
    with srv.client() as c:
        assert c.post("/v1/events/batch", json={"events": [{"action": f"seed.{i}"} for i in range(50)]}).status_code == 200
    srv.stop()
    conn = sqlite3.connect(srv.db_path)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    # A few pages of head room: some writes fit, then the "disk" is full.
    srv.config_path = srv.workdir / "config.toml"
    srv.config_path.write_text(f"[database]\nmax_page_count = {pages + 6}\n")
    srv.start()
    acknowledged: list[str] = []
    refused = 0
    statuses: set[int] = set()
    with srv.client() as c:
        for i in range(400):  # bounded: 400 requests of ~2 KiB each is far more than 6 pages
            body = {"action": "fill.up", "metadata": {"pad": f"{i:04d}" + "x" * 2000}}
            r = c.post("/v1/events", json=body) if i % 2 else c.post("/v1/events/batch", json={"events": [body, body]})
            statuses.add(r.status_code)
            if r.status_code == 200:
                data = r.json()["data"]
                acknowledged += [e["id"] for e in (data if isinstance(data, list) else [data])]
            else:
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "UNAVAILABLE"
                assert int(r.headers["retry-after"]) >= 1
                refused += 1
                if refused >= 20:
                    break
        assert refused >= 20, f"never filled up: {statuses}"
        assert acknowledged, "the head room took no write at all"
        assert statuses <= {200, 503}
        # reads still work while the disk is full
        assert c.get("/v1/events", params={"limit": 1}).status_code == 200
        for event_id in acknowledged:  # every 2xx is a stored row
            assert c.get(f"/v1/events/{event_id}").status_code == 200
    srv.stop()
    # Space returns: restart without the cap.
    srv.config_path.write_text("[database]\nmax_page_count = 0\n")
    srv.start()
    with srv.client() as c:
        after = c.post("/v1/events", json={"action": "after.full"})
        assert after.status_code == 200, after.text
        verify = c.get("/v1/events/verify").json()["data"]
        own = len(audit_events(c))  # the server's own events (the bootstrap key's)
        assert verify["valid"] is True and verify["firstInvalid"] is None
        assert verify["checked"] == own + 50 + len(acknowledged) + 1 == after.json()["data"]["seq"]
    srv.stop()
    conn = sqlite3.connect(srv.db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == own + 50 + len(acknowledged) + 1
    conn.close()
