"""SPEC §5.1, §5.3 over real HTTP: subscriptions CRUD, the state machine, list filters,
secrets, examples, resend, jobs' validation, error shapes and the tenant wall (§3)."""

from __future__ import annotations

import base64
import time

import pytest

from conftest import ServerProcess
from webhook_receiver import tag, wait_until


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("wh_api"), args=["--dev"]).start()
    yield server
    server.kill()


def create(c, url, **fields):
    r = c.post("/v1/event_subscriptions", json={"url": url, **fields})
    assert r.status_code == 201, r.text
    return r.json()["data"]


def get_sub(c, sub_id):
    r = c.get(f"/v1/event_subscriptions/{sub_id}")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def wait_state(c, sub_id, state, timeout=10.0):
    return wait_until(lambda: (s := get_sub(c, sub_id))["state"] == state and s,
                      timeout=timeout, message=f"{sub_id} to become {state}")


def error(r):
    body = r.json()
    assert set(body) == {"error"}, body
    return r.status_code, body["error"]["code"], (body["error"].get("details") or {}).get("field")


def test_create_shows_secret_once_then_test_makes_it_valid(srv, rx):
    with srv.client() as c:
        path = f"/created-{tag()}"
        sub = create(c, rx.url(path), description="billing", event_types=["invoice.*"])
        assert sub["id"].startswith("sub_") and sub["state"] == "new" and sub["state_reason"] is None
        assert sub["url"] == rx.url(path) and sub["event_types"] == ["invoice.*"]
        assert sub["organization"] is None and sub["disabled"] is False
        secret = sub["secret"]
        assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
        valid = wait_state(c, sub["id"], "valid")
        assert "secret" not in valid
        tests = rx.received(path, type="webhook.test")
        assert len(tests) == 1 and tests[0].json["event"] is None
        assert tests[0].json["id"] == tests[0].webhook_id
        attempts = c.get(f"/v1/event_subscriptions/{sub['id']}/attempts").json()
        assert [a["trigger"] for a in attempts["data"]] == ["test"]
        assert attempts["data"][0]["status"] == "success" and attempts["has_more"] is False
        assert c.get(f"/v1/event_subscriptions/{sub['id']}/secret").json()["data"] == {
            "secret": secret, "previous_secret_expires_at": None, "secret_error": None}


def test_unreachable_destination_makes_it_invalid(srv):
    sock_port = _closed_port()
    with srv.client() as c:
        sub = create(c, f"http://127.0.0.1:{sock_port}/nothing")
        invalid = wait_state(c, sub["id"], "invalid")
        assert invalid["state_reason"].startswith("test delivery failed:")
        # invalid subscriptions do not get new events queued
        event = c.post("/v1/events", json={"action": f"x.{tag()}"}).json()["data"]
        time.sleep(0.3)
        attempts = c.get(f"/v1/events/{event['id']}/attempts").json()["data"]
        assert [a for a in attempts if a["event_subscription_id"] == sub["id"]] == []


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("body, field", [
    ({}, "url"),
    ({"url": 5}, "url"),
    ({"url": "ftp://127.0.0.1/x"}, "url"),
    ({"url": "http://user:pw@127.0.0.1/x"}, "url"),
    ({"url": "http://127.0.0.1/x", "event_types": ["inv*oice"]}, "event_types[0]"),
    ({"url": "http://127.0.0.1/x", "event_types": ["ok.*", "has space"]}, "event_types[1]"),
    ({"url": "http://127.0.0.1/x", "event_types": "invoice.*"}, "event_types"),
    ({"url": "http://127.0.0.1/x", "secret": "whsec_notbase64!!"}, "secret"),
    ({"url": "http://127.0.0.1/x", "secret": "whsec_" + base64.b64encode(b"short").decode()}, "secret"),
    ({"url": "http://127.0.0.1/x", "disabled": "yes"}, "disabled"),
    ({"url": "http://127.0.0.1/x", "organization": "o" * 129}, "organization"),
])
def test_create_validation(srv, body, field):
    with srv.client() as c:
        assert error(c.post("/v1/event_subscriptions", json=body)) == (400, "VALIDATION_ERROR", field)


def test_malformed_bodies_get_400_not_500(srv):
    with srv.client() as c:
        for raw in [b"", b"{", b"[" * 60000, b"\xff\xfe", b'{"url": "http://127.0.0.1/x"', b"null"]:
            r = c.post("/v1/event_subscriptions", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400, (raw[:20], r.text)
            assert r.json()["error"]["code"] == "VALIDATION_ERROR"
        sub = create(c, "http://127.0.0.1:9/x", disabled=True)
        r = c.patch(f"/v1/event_subscriptions/{sub['id']}", content=b"{]")
        assert error(r)[:2] == (400, "VALIDATION_ERROR")
        r = c.post(f"/v1/event_subscriptions/{sub['id']}/replay_missing", json={"begin": "yesterday"})
        assert error(r) == (400, "VALIDATION_ERROR", "begin")


def test_custom_secret_is_accepted_and_normalised(srv):
    key = b"k" * 32
    with srv.client() as c:
        sub = create(c, "http://127.0.0.1:9/x", disabled=True, secret=base64.b64encode(key).decode())
        assert sub["secret"] == "whsec_" + base64.b64encode(key).decode()


def test_patch_state_rules(srv, rx):
    with srv.client() as c:
        path = f"/patch-{tag()}"
        sub = create(c, rx.url(path))
        sid = sub["id"]
        wait_state(c, sid, "valid")
        for bad in ["valid", "invalid", "bogus", 3]:
            assert error(c.patch(f"/v1/event_subscriptions/{sid}", json={"state": bad}))[:3:2] == (400, "state")
        assert error(c.patch(f"/v1/event_subscriptions/{sid}", json={"state": "new", "disabled": True}))[0] == 400
        # deactivate: hidden from the default list, shown with state=deactivated
        r = c.patch(f"/v1/event_subscriptions/{sid}", json={"state": "deactivated"})
        assert r.status_code == 200 and r.json()["data"]["state"] == "deactivated"
        assert r.json()["data"]["disabled"] is True
        assert sid not in [s["id"] for s in _all(c)]
        assert sid in [s["id"] for s in _all(c, state="deactivated")]
        # a deactivated subscription cannot be tested or sent to
        assert error(c.post(f"/v1/event_subscriptions/{sid}/test"))[:3:2] == (400, "state")
        assert error(c.post(f"/v1/simulate/event_subscriptions/{sid}/send_example"))[:3:2] == (400, "state")
        # state=new re-activates and re-tests
        tests_before = len(rx.received(path, type="webhook.test"))
        r = c.patch(f"/v1/event_subscriptions/{sid}", json={"state": "new"})
        assert r.json()["data"]["state"] == "new" and r.json()["data"]["disabled"] is False
        wait_state(c, sid, "valid")
        assert len(rx.received(path, type="webhook.test")) == tests_before + 1
        # disabled: true / false
        assert c.patch(f"/v1/event_subscriptions/{sid}", json={"disabled": True}).json()["data"]["state"] == "deactivated"
        assert c.patch(f"/v1/event_subscriptions/{sid}", json={"disabled": False}).json()["data"]["state"] == "new"
        wait_state(c, sid, "valid")
        # a URL change goes back to `new` and tests the new URL
        new_path = f"/patched-{tag()}"
        r = c.patch(f"/v1/event_subscriptions/{sid}", json={"url": rx.url(new_path), "description": "d2"})
        assert r.json()["data"]["state"] == "new" and r.json()["data"]["description"] == "d2"
        wait_state(c, sid, "valid")
        assert len(rx.received(new_path, type="webhook.test")) == 1
        # a change that is not the URL keeps the state
        r = c.patch(f"/v1/event_subscriptions/{sid}", json={"event_types": ["a.*"]})
        assert r.json()["data"]["state"] == "valid" and r.json()["data"]["event_types"] == ["a.*"]
        # POST /test re-tests
        assert c.post(f"/v1/event_subscriptions/{sid}/test").status_code == 202
        wait_state(c, sid, "valid")
        assert len(rx.received(new_path, type="webhook.test")) == 2


def _all(c, **params):
    out, cursor = [], None
    for _ in range(100):
        query = dict(params, limit=200)
        if cursor:
            query["cursor"] = cursor
        page = c.get("/v1/event_subscriptions", params=query).json()
        out += page["data"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return out
    raise AssertionError("pagination did not end")


def test_list_filters_and_pagination(srv):
    with srv.client() as c:
        now = time.time()
        before = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        time.sleep(0.01)
        made = [create(c, "http://127.0.0.1:9/list", disabled=(i == 2))["id"] for i in range(3)]
        page = c.get("/v1/event_subscriptions", params={"created_after": before, "limit": 1}).json()
        assert page["data"][0]["id"] == made[1] and page["has_more"] is True  # newest first; #2 hidden
        page2 = c.get("/v1/event_subscriptions", params={"created_after": before, "limit": 1,
                                                         "cursor": page["next_cursor"]}).json()
        assert [s["id"] for s in page2["data"]] == [made[0]] and page2["has_more"] is False
        assert page2["next_cursor"] is None
        deactivated = c.get("/v1/event_subscriptions", params={"created_after": before, "state": "deactivated"}).json()
        assert [s["id"] for s in deactivated["data"]] == [made[2]]
        assert c.get("/v1/event_subscriptions", params={"created_before": before, "created_after": before}).json()["data"] == []
        everything = _all(c)
        assert all(s["state"] != "deactivated" for s in everything)
        for params, field in [({"state": "nope"}, "state"), ({"cursor": "zzz"}, "cursor"),
                              ({"limit": 0}, "limit"), ({"created_after": "soon"}, "created_after")]:
            assert error(c.get("/v1/event_subscriptions", params=params)) == (400, "VALIDATION_ERROR", field)


def test_event_type_patterns_and_organization_filter(srv, rx):
    t = tag()
    with srv.client() as c:
        path = f"/filters-{t}"
        sub = create(c, rx.url(path), event_types=[f"{t}.inv.*", f"{t}.exact"], organization="org_f")
        wait_state(c, sub["id"], "valid")
        events = [
            ({"action": f"{t}.inv.paid", "organization": "org_f"}, True),
            ({"action": f"{t}.inv.line.added", "organization": "org_f"}, True),
            ({"action": f"{t}.exact", "organization": "org_f"}, True),
            ({"action": f"{t}.inv.paid", "organization": "org_other"}, False),
            ({"action": f"{t}.inv.paid"}, False),
            ({"action": f"{t}.inv", "organization": "org_f"}, False),
            ({"action": f"{t}.invx.paid", "organization": "org_f"}, False),
            ({"action": f"{t}.exact.more", "organization": "org_f"}, False),
        ]
        r = c.post("/v1/events/batch", json={"events": [e for e, _ in events]})
        assert r.status_code == 200, r.text
        ids = [e["id"] for e in r.json()["data"]]
        expected = {ids[i] for i, (_, wanted) in enumerate(events) if wanted}
        wait_until(lambda: len(rx.received(path)) >= len(expected), message="filtered deliveries")
        time.sleep(0.3)
        assert {x.json["event"]["id"] for x in rx.received(path)} == expected
        assert len(rx.received(path)) == len(expected)


def test_delivery_payload_shape(srv, rx):
    with srv.client() as c:
        path = f"/shape-{tag()}"
        sub = create(c, rx.url(path))
        wait_state(c, sub["id"], "valid")
        event = c.post("/v1/events", json={"action": f"shape.{tag()}", "actor": {"id": "u1"},
                                           "metadata": {"k": [1, 2]}}).json()["data"]
        got = wait_until(lambda: [x for x in rx.received(path) if x.json["event"]["id"] == event["id"]])[0]
        body = got.json
        assert set(body) == {"id", "type", "createdAt", "projectId", "event", "checkpoint"}
        assert body["type"] == "event.created" and body["id"].startswith("whd_")
        assert body["id"] == got.headers["webhook-id"] and body["projectId"] == event["projectId"]
        assert body["event"] == event  # the Event object of §4.3, exactly
        assert got.headers["content-type"] == "application/json"
        assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 10
        assert got.headers["webhook-signature"].startswith("v1,")


def test_send_example(srv, rx):
    with srv.client() as c:
        path = f"/example-{tag()}"
        sub = create(c, rx.url(path), event_types=["billing.*"])
        wait_state(c, sub["id"], "valid")
        r = c.post(f"/v1/simulate/event_subscriptions/{sub['id']}/send_example", json={"event_type": "billing.paid"})
        assert r.status_code == 202, r.text
        attempt = r.json()["data"]
        assert attempt["trigger"] == "example" and attempt["status"] in ("pending", "sending")
        assert attempt["event_id"] is None and attempt["id"].startswith("atm_")
        got = wait_until(lambda: rx.received(path, type="event.example"))[0]
        assert got.json["event"]["action"] == "billing.paid" and got.webhook_id == attempt["message_id"]
        # without a body: an action derived from the subscription's event types
        assert c.post(f"/v1/simulate/event_subscriptions/{sub['id']}/send_example").status_code == 202
        got = wait_until(lambda: len(rx.received(path, type="event.example")) == 2 and rx.received(path, type="event.example"))
        assert got[1].json["event"]["action"] == "billing.example"
        done = wait_until(lambda: [a for a in c.get(f"/v1/event_subscriptions/{sub['id']}/attempts",
                                                    params={"status": "success"}).json()["data"]
                                   if a["trigger"] == "example"])
        assert done[0]["response_status_code"] == 200


def test_resend_and_event_attempts(srv, rx):
    with srv.client() as c:
        path = f"/resend-{tag()}"
        sub = create(c, rx.url(path))
        wait_state(c, sub["id"], "valid")
        event = c.post("/v1/events", json={"action": f"resend.{tag()}"}).json()["data"]
        first = wait_until(lambda: [x for x in rx.received(path) if x.json["event"]["id"] == event["id"]])[0]
        r = c.post(f"/v1/events/{event['id']}/event_subscriptions/{sub['id']}/resend")
        assert r.status_code == 202, r.text
        assert r.json()["data"]["trigger"] == "manual" and r.json()["data"]["attempt"] == 2
        again = wait_until(lambda: len([x for x in rx.received(path) if x.json["event"]["id"] == event["id"]]) == 2
                           and [x for x in rx.received(path) if x.json["event"]["id"] == event["id"]])
        assert again[1].webhook_id == first.webhook_id  # same message, new attempt
        attempts = wait_until(lambda: (d := c.get(f"/v1/events/{event['id']}/attempts",
                                                  params={"event_subscription_id": sub["id"]}).json()["data"])
                              and all(a["status"] == "success" for a in d) and len(d) == 2 and d)
        assert [a["trigger"] for a in attempts] == ["manual", "scheduled"]  # newest first
        assert [a["attempt"] for a in attempts] == [2, 1]
        assert {a["message_id"] for a in attempts} == {first.webhook_id}
        page = c.get(f"/v1/events/{event['id']}/attempts", params={"limit": 1, "event_subscription_id": sub["id"]}).json()
        assert page["has_more"] is True and len(page["data"]) == 1
        rest = c.get(f"/v1/events/{event['id']}/attempts",
                     params={"limit": 1, "cursor": page["next_cursor"], "event_subscription_id": sub["id"]}).json()
        assert [a["id"] for a in page["data"] + rest["data"]] == [a["id"] for a in attempts]
        filtered = c.get(f"/v1/event_subscriptions/{sub['id']}/attempts", params={"status": "failed"}).json()
        assert filtered["data"] == []
        assert error(c.get(f"/v1/event_subscriptions/{sub['id']}/attempts", params={"status": "x"}))[2] == "status"
        assert error(c.post(f"/v1/events/evt_nope/event_subscriptions/{sub['id']}/resend"))[:2] == (404, "NOT_FOUND")


def test_rotate_secret_api(srv):
    with srv.client() as c:
        sub = create(c, "http://127.0.0.1:9/rotate", disabled=True)
        r = c.post(f"/v1/event_subscriptions/{sub['id']}/secret/rotate")
        assert r.status_code == 200, r.text
        rotated = r.json()["data"]
        assert rotated["secret"] != sub["secret"] and rotated["secret"].startswith("whsec_")
        assert rotated["previous_secret_expires_at"] is not None
        assert c.get(f"/v1/event_subscriptions/{sub['id']}/secret").json()["data"] == rotated
        mine = "whsec_" + base64.b64encode(b"m" * 24).decode()
        r = c.post(f"/v1/event_subscriptions/{sub['id']}/secret/rotate", json={"secret": mine})
        assert r.json()["data"]["secret"] == mine
        assert error(c.post(f"/v1/event_subscriptions/{sub['id']}/secret/rotate", json={"secret": "bad!"}))[2] == "secret"


def test_delete(srv):
    with srv.client() as c:
        sub = create(c, "http://127.0.0.1:9/delete", disabled=True)
        r = c.delete(f"/v1/event_subscriptions/{sub['id']}")
        assert r.status_code == 200 and r.json()["data"]["id"] == sub["id"]
        for method, suffix in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/attempts"),
                               ("GET", "/secret"), ("POST", "/test")]:
            r = c.request(method, f"/v1/event_subscriptions/{sub['id']}{suffix}", json={})
            assert error(r)[:2] == (404, "NOT_FOUND"), (method, suffix)


def test_jobs_validation_and_listing(srv, rx):
    with srv.client() as c:
        sub = create(c, rx.url(f"/jobs-{tag()}"))
        sid = sub["id"]
        assert error(c.post(f"/v1/event_subscriptions/{sid}/replay_missing", json={}))[2] == "begin"
        assert error(c.post(f"/v1/event_subscriptions/{sid}/recover",
                            json={"begin": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}))[2] == "end"
        r = c.post(f"/v1/event_subscriptions/{sid}/recover", json={"begin": "2020-01-01"})
        assert r.status_code == 202, r.text
        job = r.json()["data"]
        assert job["id"].startswith("job_") and job["type"] == "recover" and job["status"] == "running"
        assert job["event_subscription_id"] == sid and job["begin"] == "2020-01-01T00:00:00.000Z"
        done = wait_until(lambda: (j := c.get(f"/v1/event_subscriptions/{sid}/jobs/{job['id']}").json()["data"])
                          ["status"] == "completed" and j)
        assert done["progress"]["percent"] == 100.0 and done["finished_at"] is not None
        listed = c.get(f"/v1/event_subscriptions/{sid}/jobs").json()
        assert [j["id"] for j in listed["data"]] == [job["id"]]
        assert error(c.get(f"/v1/event_subscriptions/{sid}/jobs/job_nope"))[:2] == (404, "NOT_FOUND")


def test_auth_and_scope(srv):
    with srv.client(key=None) as c:
        assert error(c.get("/v1/event_subscriptions"))[:2] == (401, "UNAUTHORIZED")
    reader = srv.create_key(["events:read", "events:write"])
    with srv.client(key=reader) as c:
        assert error(c.get("/v1/event_subscriptions"))[:2] == (403, "FORBIDDEN")
        assert error(c.post("/v1/event_subscriptions", json={"url": "http://127.0.0.1:9/"}))[:2] == (403, "FORBIDDEN")
    with srv.client() as c:
        for method, path in [("GET", "/v1/event_subscriptions/sub_nope"), ("GET", "/v1/events/evt_nope/attempts"),
                             ("POST", "/v1/simulate/event_subscriptions/sub_nope/send_example"),
                             ("POST", "/v1/event_subscriptions/sub_nope/replay_missing")]:
            assert error(c.request(method, path, json={"begin": "2020-01-01"}))[:2] == (404, "NOT_FOUND"), path


def test_tenant_wall(srv, rx):
    """Must-show 6: an organization-bound key sees only its organization's subscriptions and
    attempts; every other id is 404 (never 403), on every webhook route."""
    t = tag()
    org_a, org_b = f"org_a_{t}", f"org_b_{t}"
    key_a = srv.create_key(["webhooks:manage", "events:write"], organization=org_a)
    key_b = srv.create_key(["webhooks:manage", "events:write"], organization=org_b)
    path_a, path_b, path_all = f"/wall-a-{t}", f"/wall-b-{t}", f"/wall-all-{t}"
    with srv.client(key=key_a) as a, srv.client(key=key_b) as b, srv.client() as admin:
        sub_a = create(a, rx.url(path_a))
        assert sub_a["organization"] == org_a  # a bound key's subscriptions are its organization's
        sub_b = create(b, rx.url(path_b), organization=org_b)
        sub_all = create(admin, rx.url(path_all))  # unbound: every organization
        assert error(a.post("/v1/event_subscriptions", json={"url": rx.url("/x"), "organization": org_b}))[:2] == (
            403, "FORBIDDEN")
        for sid in (sub_a["id"], sub_b["id"], sub_all["id"]):
            wait_state(admin, sid, "valid")
        ev_a = a.post("/v1/events", json={"action": f"wall.{t}"}).json()["data"]
        ev_b = b.post("/v1/events", json={"action": f"wall.{t}"}).json()["data"]
        wait_until(lambda: len(rx.received(path_all)) == 2 and rx.received(path_a) and rx.received(path_b))
        assert [x.json["event"]["id"] for x in rx.received(path_a)] == [ev_a["id"]]
        assert [x.json["event"]["id"] for x in rx.received(path_b)] == [ev_b["id"]]

        listed = [s["id"] for s in _all(a)]
        assert sub_a["id"] in listed and sub_b["id"] not in listed and sub_all["id"] not in listed
        assert {s["organization"] for s in _all(a)} == {org_a}
        admin_listed = [s["id"] for s in _all(admin)]
        assert {sub_a["id"], sub_b["id"], sub_all["id"]} <= set(admin_listed)

        other = sub_b["id"]
        calls = [
            ("GET", f"/v1/event_subscriptions/{other}", None),
            ("PATCH", f"/v1/event_subscriptions/{other}", {"description": "mine now"}),
            ("POST", f"/v1/event_subscriptions/{other}/test", None),
            ("GET", f"/v1/event_subscriptions/{other}/secret", None),
            ("POST", f"/v1/event_subscriptions/{other}/secret/rotate", None),
            ("GET", f"/v1/event_subscriptions/{other}/attempts", None),
            ("POST", f"/v1/event_subscriptions/{other}/recover", {"begin": "2020-01-01"}),
            ("POST", f"/v1/event_subscriptions/{other}/replay_missing", {"begin": "2020-01-01"}),
            ("GET", f"/v1/event_subscriptions/{other}/jobs", None),
            ("POST", f"/v1/simulate/event_subscriptions/{other}/send_example", None),
            ("POST", f"/v1/events/{ev_b['id']}/event_subscriptions/{other}/resend", None),
            ("POST", f"/v1/events/{ev_a['id']}/event_subscriptions/{other}/resend", None),
            ("POST", f"/v1/events/{ev_b['id']}/event_subscriptions/{sub_a['id']}/resend", None),
            ("GET", f"/v1/events/{ev_b['id']}/attempts", None),
            ("GET", f"/v1/events/{ev_a['id']}/attempts?event_subscription_id={other}", None),
            ("GET", f"/v1/event_subscriptions/{sub_all['id']}", None),
            ("DELETE", f"/v1/event_subscriptions/{other}", None),
        ]
        for method, url, body in calls:
            r = a.request(method, url, json=body) if body is not None else a.request(method, url)
            assert error(r)[:2] == (404, "NOT_FOUND"), (method, url, r.status_code)
        assert get_sub(b, other)["description"] == ""  # untouched
        assert b.get(f"/v1/event_subscriptions/{other}/secret").json()["data"]["secret"] == sub_b["secret"]

        # the event's attempts: A sees its own subscription's, not the unbound one's
        attempts = wait_until(lambda: (d := a.get(f"/v1/events/{ev_a['id']}/attempts").json()["data"])
                              and all(x["status"] == "success" for x in d) and d)
        assert {x["event_subscription_id"] for x in attempts} == {sub_a["id"]}
        everyone = admin.get(f"/v1/events/{ev_a['id']}/attempts").json()["data"]
        assert {sub_a["id"], sub_all["id"]} <= {x["event_subscription_id"] for x in everyone}
        own = a.get(f"/v1/event_subscriptions/{sub_a['id']}/attempts").json()["data"]
        assert {x["event_subscription_id"] for x in own} == {sub_a["id"]}
        assert a.post(f"/v1/events/{ev_a['id']}/event_subscriptions/{sub_a['id']}/resend").status_code == 202
        # the admin's unbound subscription cannot be resent an event from... anyone but the admin
        assert a.patch(f"/v1/event_subscriptions/{sub_a['id']}", json={"organization": org_b}).status_code == 403
