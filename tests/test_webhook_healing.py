"""Invalid subscriptions heal: a subscription made while its receiver is down goes
`invalid`, is re-tested on its own with a backoff (short with --dev), becomes `valid` when
the receiver is up, and then gets the events it missed, each exactly once (a durable
replay_missing job). A 410 Gone is not re-tested. Every state change is one JSON log line
of the `recalled_lite.webhooks` logger. Real server (--dev), real receivers."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest

from conftest import ServerProcess, free_port
from webhook_receiver import Receiver, Reply, tag, wait_until


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("wh_heal"), args=["--dev"]).start()
    yield server
    server.kill()


def sub_of(c, sub_id):
    return c.get(f"/v1/event_subscriptions/{sub_id}").json()["data"]


def attempts_of(c, sub_id):
    return c.get(f"/v1/event_subscriptions/{sub_id}/attempts", params={"limit": 200}).json()["data"][::-1]


def state_lines(server, sub_id):
    lines = []
    for line in server.log_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("logger") == "recalled_lite.webhooks" and entry.get("subscription_id") == sub_id \
                and entry.get("msg") == "subscription state changed":
            lines.append(entry)
    return lines


def test_a_subscription_made_while_its_receiver_is_down_heals_and_gets_what_it_missed(srv):
    t = tag()
    port = free_port()  # nothing listens here yet
    url = f"http://127.0.0.1:{port}/heal"
    with srv.client() as c:
        sub = c.post("/v1/event_subscriptions", json={"url": url, "event_types": [f"{t}.*"]}).json()["data"]
        invalid = wait_until(lambda: (s := sub_of(c, sub["id"]))["state"] == "invalid" and s, timeout=10)
        assert invalid["state_reason"].startswith("test delivery failed: ConnectError")
        assert invalid["invalid_since"] is not None and invalid["next_retest_at"] is not None
        assert invalid["next_retest_at"] > invalid["invalid_since"]

        missed = [e["id"] for e in c.post("/v1/events/batch", json={
            "events": [{"action": f"{t}.missed", "metadata": {"i": i}} for i in range(15)]}).json()["data"]]
        # re-tested on its own while the receiver is still down: the re-test fails, it stays invalid
        wait_until(lambda: any(a["trigger"] == "retest" and a["status"] == "failed"
                               for a in attempts_of(c, sub["id"])), timeout=10, message="a failed re-test")
        still = sub_of(c, sub["id"])
        assert still["state"] == "invalid" and still["invalid_since"] == invalid["invalid_since"]
        assert still["next_retest_at"] > invalid["next_retest_at"]  # backed off
        assert [a for a in attempts_of(c, sub["id"]) if a["trigger"] == "scheduled"] == []  # nothing queued

        rx = Receiver(port=port)  # the receiver comes up
        try:
            healed = wait_until(lambda: (s := sub_of(c, sub["id"]))["state"] == "valid" and s, timeout=20,
                                message="valid after a re-test")
            assert healed["invalid_since"] is None and healed["next_retest_at"] is None
            assert healed["state_reason"] is None
            jobs = wait_until(lambda: (j := c.get(f"/v1/event_subscriptions/{sub['id']}/jobs").json()["data"])
                              and j[0]["status"] == "completed" and j, timeout=20, message="replay job")
            assert len(jobs) == 1 and jobs[0]["type"] == "replay_missing" and jobs[0]["progress"]["queued"] == 15
            wait_until(lambda: {x.json["event"]["id"] for x in rx.received("/heal")} >= set(missed), timeout=20,
                       message="the missed events")
            after = [e["id"] for e in c.post("/v1/events/batch", json={
                "events": [{"action": f"{t}.after"} for _ in range(5)]}).json()["data"]]
            wait_until(lambda: {x.json["event"]["id"] for x in rx.received("/heal")} >= set(after), timeout=20)
            time.sleep(1.5)  # a duplicate (a second replay, a resend) would arrive by now
            by_event: dict[str, list[str]] = defaultdict(list)
            for x in rx.received("/heal"):
                by_event[x.json["event"]["id"]].append(x.webhook_id)
            assert set(by_event) == set(missed) | set(after)
            assert all(len(hooks) == 1 for hooks in by_event.values()), by_event  # each exactly once
            assert len({h for hooks in by_event.values() for h in hooks}) == 20
            tests = rx.received("/heal", type="webhook.test")
            assert len(tests) == 1  # the re-test that passed; the failed ones never arrived
            replayed = [a for a in attempts_of(c, sub["id"]) if a["event_id"] in set(missed)]
            assert {(a["trigger"], a["status"]) for a in replayed} == {("replay", "success")}
        finally:
            rx.close()
    lines = wait_until(lambda: len(lines := state_lines(srv, sub["id"])) >= 2 and lines)
    assert [(x["from_state"], x["to_state"]) for x in lines] == [
        (None, "new"), ("new", "invalid"), ("invalid", "valid")]
    assert lines[0]["reason"] == "created"
    assert lines[1]["reason"].startswith("test delivery failed") and lines[1]["level"] == "info"
    assert lines[1]["retest_at"] is not None


def test_410_gone_is_not_retested_and_patch_new_does_not_replay(srv, rx):
    t = tag()
    path = f"/gone-{t}"
    mode = {"gone": True}
    url = rx.on(path, lambda r, n: Reply(410) if mode["gone"] else Reply(200))
    with srv.client() as c:
        sub = c.post("/v1/event_subscriptions", json={"url": url, "event_types": [f"{t}.*"]}).json()["data"]
        wait_until(lambda: sub_of(c, sub["id"])["state"] == "valid")
        c.post("/v1/events", json={"action": f"{t}.first"})
        gone = wait_until(lambda: (s := sub_of(c, sub["id"]))["state"] == "invalid" and s, timeout=10)
        assert "410" in gone["state_reason"] and gone["next_retest_at"] is None
        assert gone["invalid_since"] is not None
        missed = c.post("/v1/events", json={"action": f"{t}.missed"}).json()["data"]["id"]
        mode["gone"] = False
        time.sleep(3.5)  # with --dev a re-test would have come at +1 s and +3 s
        assert len(rx.received(path, type="webhook.test")) == 1  # only the first test, no re-test
        assert not any(a["trigger"] == "retest" for a in attempts_of(c, sub["id"]))
        assert sub_of(c, sub["id"])["state"] == "invalid"
        # the owner re-activates it: tested, valid; resuming is theirs, so nothing is replayed
        c.patch(f"/v1/event_subscriptions/{sub['id']}", json={"state": "new"})
        wait_until(lambda: sub_of(c, sub["id"])["state"] == "valid", timeout=10)
        time.sleep(0.5)
        assert c.get(f"/v1/event_subscriptions/{sub['id']}/jobs").json()["data"] == []
        assert missed not in {x.json["event"]["id"] for x in rx.received(path)}
    lines = state_lines(srv, sub["id"])
    assert [(x["from_state"], x["to_state"]) for x in lines] == [
        (None, "new"), ("new", "valid"), ("valid", "invalid"), ("invalid", "new"), ("new", "valid")]
    assert "410" in lines[2]["reason"] and lines[2]["retest_at"] is None
