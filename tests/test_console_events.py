"""The events pages through plain HTTP against the real server: paging, the tail feed and
its filters, downloads through the export code, event detail with erasure, and erasing an
actor behind its typed confirmation."""

from __future__ import annotations

import json
import re

import pytest

from conftest import ServerProcess
from console_support import signed_in
from webhook_receiver import tag


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("console-events")).start()
    yield server
    server.kill()


def event_ids(html: str) -> list[str]:
    return re.findall(r'<a class="mono" href="/console/events/(evt_[0-9A-Z]+)">', html)


def test_pages_follow_the_cursor_newest_first_without_repeats(srv):
    marker = tag()
    with srv.client() as c:
        c.post("/v1/events/batch", json={"events": [{"action": f"page.{marker}", "organization": "org_pages"}
                                                    for _ in range(120)]})
    s = signed_in(srv.url, srv.key)
    seen: list[str] = []
    url = f"/console/events?action=page.{marker}"
    while url:
        page = s.get(url)
        assert page.status_code == 200
        seen += event_ids(page.text)
        older = re.search(r'href="([^"]+)" rel="next"', page.text)
        url = older.group(1).replace("&amp;", "&") if older else None
        if url:
            assert f"action=page.{marker}" in url and "cursor=" in url, "filters stay in the URL"
    assert len(seen) == 120 and len(set(seen)) == 120
    assert seen == sorted(seen, reverse=True), "newest first"


def test_the_tail_feed_returns_only_new_events_that_pass_the_filters(srv):
    s = signed_in(srv.url, srv.key)
    marker = tag()
    with srv.client() as c:
        head = c.get("/v1/events", params={"limit": 1}).json()["data"][0]["seq"]
        mine = c.post("/v1/events", json={"action": f"feed.{marker}", "organization": "org_feed"}).json()["data"]
        c.post("/v1/events", json={"action": f"feed.{marker}", "organization": "org_not_this"})
    answer = s.get("/console/events/tail", params={"after_seq": head, "organization": "org_feed"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["count"] == 1 and body["lastSeq"] == mine["seq"] and mine["id"] in body["html"]
    again = s.get("/console/events/tail", params={"after_seq": body["lastSeq"], "organization": "org_feed"}).json()
    assert again["count"] == 0 and again["lastSeq"] == mine["seq"]
    missing = s.get("/console/events/tail")
    assert missing.status_code == 400 and "after_seq" in missing.json()["error"]["message"]


def test_downloads_use_the_export_code_with_the_filters_and_the_wall(srv):
    marker = tag()
    with srv.client() as c:
        for org in ("org_dl_a", "org_dl_a", "org_dl_b"):
            c.post("/v1/events", json={"action": f"dl.{marker}", "organization": org})
    s = signed_in(srv.url, srv.key)
    ndjson = s.get("/console/events/download", params={"format": "ndjson", "action": f"dl.{marker}"})
    assert ndjson.status_code == 200 and "attachment" in ndjson.headers["content-disposition"]
    lines = [json.loads(line) for line in ndjson.text.splitlines()]
    assert [e["organization"] for e in lines[:-1]] == ["org_dl_a", "org_dl_a", "org_dl_b"]
    assert "head" in lines[-1]
    csv = s.get("/console/events/download", params={"format": "csv", "action": f"dl.{marker}"})
    assert csv.headers["content-type"].startswith("text/csv") and csv.text.count(f"dl.{marker}") == 3
    whole = s.get("/console/events/download", params={"format": "json", "action": f"dl.{marker}"}).json()
    assert len(whole["data"]) == 3
    bound = signed_in(srv.url, srv.create_key(["exports:read", "events:read"], organization="org_dl_b"))
    walled = bound.get("/console/events/download", params={"format": "ndjson", "action": f"dl.{marker}"})
    assert [json.loads(line).get("organization") for line in walled.text.splitlines()[:-1]] == ["org_dl_b"]
    bad = s.get("/console/events/download", params={"format": "xml"})
    assert bad.status_code == 400 and "Format must be one of" in bad.text and '{"error"' not in bad.text


def test_bad_filters_and_queries_are_sentences_in_the_page(srv):
    s = signed_in(srv.url, srv.key)
    page = s.get("/console/events", params={"date_from": "2026-02-01", "date_to": "2026-01-01"})
    assert page.status_code == 400 and "To is before From." in page.text
    page = s.get("/console/events", params={"q": '"unclosed'})
    assert page.status_code == 400 and "Search:" in page.text and "invalid search query" in page.text
    page = s.get("/console/events", params={"cursor": "garbage"})
    assert page.status_code == 400 and "Page link" in page.text


def test_erasing_an_actor_needs_the_typed_id_and_shows_on_the_event(srv):
    actor = f"user_{tag()}"
    with srv.client() as c:
        event = c.post("/v1/events", json={"action": "erase.me", "actor": {"id": actor, "name": "Erin Example",
                                                                            "email": "erin@example.com"},
                                           "metadata": {"secret": "x"}}).json()["data"]
    s = signed_in(srv.url, srv.key)
    refused = s.post("/console/actors/erase", {"actor_id": actor, "confirm": actor + "x"})
    assert refused.status_code == 400 and "does not match" in refused.text
    assert "Erin Example" in s.get(f"/console/events/{event['id']}").text, "nothing was erased"
    done = s.post("/console/actors/erase", {"actor_id": actor, "confirm": actor})
    assert done.status_code == 200 and 'data-erased-count="1"' in done.text
    detail = s.get(f"/console/events/{event['id']}").text
    assert "Erin Example" not in detail and "erin@example.com" not in detail
    assert "was erased" in detail
    verified = s.get(f"/console/events/{event['id']}", params={"verify": "link"}).text
    assert 'data-verify-result="valid"' in verified, "an erased event still verifies"


def test_a_bound_key_sees_its_organization_and_is_told_so(srv):
    with srv.client() as c:
        theirs = c.post("/v1/events", json={"action": "bound.view", "organization": "org_view_b"}).json()["data"]
        mine = c.post("/v1/events", json={"action": "bound.view", "organization": "org_view_a"}).json()["data"]
    s = signed_in(srv.url, srv.create_key(["events:read"], organization="org_view_a"))
    page = s.get("/console/events", params={"action": "bound.view"}).text
    assert mine["id"] in page and theirs["id"] not in page
    assert "This key sees only this organization." in page
    elsewhere = s.get("/console/events", params={"organization": "org_view_b"}).text
    assert theirs["id"] not in elsewhere and "matches nothing" in elsewhere
    assert s.get(f"/console/events/{theirs['id']}").status_code == 404
    overview = s.get("/console/").text
    assert "Totals span every organization" in overview
    chain = s.get("/console/chain")
    assert chain.status_code == 403 and "spans every organization" in chain.text
