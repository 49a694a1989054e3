"""Must-show 4: replay_missing delivers exactly the events a subscription missed while it
was invalid, once each; recover resends exactly the failed deliveries; both run as durable
jobs that survive a crash (spec §5.3)."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest

from audit_events import audit_events
from conftest import ServerProcess
from webhook_receiver import Receiver, Reply, wait_until

CONFIG = """
[webhooks]
allow_private_destinations = true
retry_schedule = [0.2, 0.2]
jitter = 0.0
job_chunk_size = 7
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("wh_replay"), config_text=CONFIG).start()
    yield server
    server.kill()


def now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def state_of(c, sub_id) -> str:
    return c.get(f"/v1/event_subscriptions/{sub_id}").json()["data"]["state"]


def post(c, action, n, **extra):
    r = c.post("/v1/events/batch", json={"events": [{"action": action, **extra} for _ in range(n)]})
    assert r.status_code == 200, r.text
    return [e["id"] for e in r.json()["data"]]


def run_job(c, sub_id, kind, body, timeout=20.0):
    r = c.post(f"/v1/event_subscriptions/{sub_id}/{kind}", json=body)
    assert r.status_code == 202, r.text
    job = r.json()["data"]
    return wait_until(lambda: (j := c.get(f"/v1/event_subscriptions/{sub_id}/jobs/{job['id']}").json()["data"])
                      ["status"] == "completed" and j, timeout=timeout, message=f"{kind} job")


def counts(rx, path) -> Counter:
    return Counter(x.json["event"]["id"] for x in rx.received(path))


def test_replay_missing_delivers_exactly_the_missed_events_once(srv, rx):
    t = uuid.uuid4().hex[:8]
    path = f"/replay-{t}"
    mode = {"gone": False}
    url = rx.on(path, lambda r, n: Reply(410) if mode["gone"] else Reply(200))
    with srv.client() as c:
        begin = now_iso()
        sub = c.post("/v1/event_subscriptions", json={"url": url, "event_types": [f"{t}.*"]}).json()["data"]
        wait_until(lambda: state_of(c, sub["id"]) == "valid")
        before = post(c, f"{t}.a", 10)
        wait_until(lambda: len(counts(rx, path)) == 10)

        mode["gone"] = True  # the endpoint goes away: 410 makes the subscription invalid
        (gone_event,) = post(c, f"{t}.a", 1)
        wait_until(lambda: state_of(c, sub["id"]) == "invalid", message="invalid after 410")
        missed = post(c, f"{t}.b", 20)  # not queued: the subscription is invalid
        post(c, f"other{t}.b", 5)  # never matched the subscription's filter
        time.sleep(0.3)
        assert set(counts(rx, path)) == set(before) | {gone_event}

        mode["gone"] = False  # fixed: re-test, then new events flow again
        c.patch(f"/v1/event_subscriptions/{sub['id']}", json={"state": "new"})
        wait_until(lambda: state_of(c, sub["id"]) == "valid")
        after = post(c, f"{t}.c", 5)
        wait_until(lambda: set(after) <= set(counts(rx, path)))

        job = run_job(c, sub["id"], "replay_missing", {"begin": begin})
        assert job["type"] == "replay_missing" and job["error"] is None
        assert job["progress"]["queued"] == 20
        assert job["progress"]["skipped"] == 10 + 1 + 5  # already had a delivery (even a failed one)
        assert job["progress"]["percent"] == 100.0
        wait_until(lambda: set(missed) <= set(counts(rx, path)), message="missed events replayed")
        time.sleep(0.4)
        got = counts(rx, path)
        assert {e: got[e] for e in missed} == {e: 1 for e in missed}  # exactly once each
        assert all(got[e] == 1 for e in before + after)  # nothing else re-sent
        assert got[gone_event] == 1  # its delivery failed: that is recover's business, not replay's
        assert set(got) == set(before) | {gone_event} | set(missed) | set(after)

        attempts = c.get(f"/v1/events/{missed[0]}/attempts").json()["data"]
        assert [(a["trigger"], a["status"]) for a in attempts] == [("replay", "success")]

        # replaying again finds nothing missing: never twice
        again = run_job(c, sub["id"], "replay_missing", {"begin": begin})
        assert again["progress"]["queued"] == 0 and again["progress"]["skipped"] == 10 + 1 + 20 + 5
        time.sleep(0.3)
        assert counts(rx, path) == got

        # `end` bounds the replay window
        r = c.post(f"/v1/event_subscriptions/{sub['id']}/replay_missing", json={"begin": begin, "end": begin})
        assert r.status_code == 202


def test_recover_resends_exactly_the_failed_deliveries(srv, rx):
    t = uuid.uuid4().hex[:8]
    path = f"/recover-{t}"
    mode = {"flaky": True}

    def behaviour(r, n):
        if mode["flaky"] and r.json["event"]["metadata"]["fail"]:
            return Reply(500)
        return Reply(200)

    url = rx.on(path, behaviour)
    with srv.client() as c:
        begin = now_iso()
        sub = c.post("/v1/event_subscriptions", json={"url": url, "event_types": [f"{t}.*"]}).json()["data"]
        wait_until(lambda: state_of(c, sub["id"]) == "valid")
        flags = [i % 3 == 0 for i in range(12)]  # 4 of 12 fail
        r = c.post("/v1/events/batch", json={"events": [
            {"action": f"{t}.x", "metadata": {"fail": f}} for f in flags]})
        ids = [e["id"] for e in r.json()["data"]]
        failing = {e for e, f in zip(ids, flags) if f}

        def failed_now():
            data = c.get(f"/v1/event_subscriptions/{sub['id']}/attempts",
                         params={"status": "failed", "limit": 200}).json()["data"]
            final = {a["event_id"] for a in data if a["next_attempt_at"] is None}
            return final == failing and final
        wait_until(failed_now, timeout=10, message="4 failed deliveries")
        got = counts(rx, path)
        assert {e: got[e] for e in failing} == {e: 3 for e in failing}  # 1 try + 2 retries
        assert all(got[e] == 1 for e in ids if e not in failing)
        first_ids = {x.json["event"]["id"]: x.webhook_id for x in rx.received(path)}

        mode["flaky"] = False
        job = run_job(c, sub["id"], "recover", {"begin": begin})
        assert job["type"] == "recover" and job["progress"]["queued"] == 4 and job["progress"]["total"] == 4
        wait_until(lambda: all(counts(rx, path)[e] == 4 for e in failing), message="recovered")
        time.sleep(0.4)
        got = counts(rx, path)
        assert {e: got[e] for e in failing} == {e: 4 for e in failing}
        assert all(got[e] == 1 for e in ids if e not in failing)  # successes are not re-sent
        for x in rx.received(path):
            assert x.webhook_id == first_ids[x.json["event"]["id"]]  # same message, same webhook-id
        attempts = c.get(f"/v1/events/{sorted(failing)[0]}/attempts").json()["data"]
        assert [(a["trigger"], a["status"], a["attempt"]) for a in attempts] == [
            ("recover", "success", 4), ("scheduled", "failed", 3), ("scheduled", "failed", 2),
            ("scheduled", "failed", 1)]
        # nothing failed any more: a second recover has nothing to do
        assert run_job(c, sub["id"], "recover", {"begin": begin})["progress"]["queued"] == 0


def test_replay_job_survives_a_crash(make_server):
    rx = Receiver()
    try:
        url = rx.on("/slowreplay", lambda r, n: Reply(200, delay=0.03))
        srv = make_server("replay_crash", config_text="""
[webhooks]
allow_private_destinations = true
retry_schedule = [0.2]
jitter = 0.0
job_chunk_size = 4
job_max_backlog = 8
""")
        with srv.client() as c:
            begin = now_iso()
            sub = c.post("/v1/event_subscriptions", json={"url": url, "disabled": True}).json()["data"]
            missed = set(post(c, "missed.x", 150))  # deactivated: all missed
            c.patch(f"/v1/event_subscriptions/{sub['id']}", json={"state": "new"})
            wait_until(lambda: state_of(c, sub["id"]) == "valid")
            r = c.post(f"/v1/event_subscriptions/{sub['id']}/replay_missing", json={"begin": begin})
            job_id = r.json()["data"]["id"]
            wait_until(lambda: len(counts(rx, "/slowreplay")) >= 40, timeout=20)
        srv.kill()
        ((status, scanned),) = srv.query("SELECT status, scanned FROM webhook_jobs WHERE id = ?", job_id)
        assert status == "running" and 0 < scanned < 150, (status, scanned)
        srv.start()
        with srv.client() as c:
            job = wait_until(lambda: (j := c.get(f"/v1/event_subscriptions/{sub['id']}/jobs/{job_id}").json()["data"])
                             ["status"] == "completed" and j, timeout=30)
            # Scanned: every event of this young database, the server's own too (the bootstrap
            # key's, this subscription's creation and update); queued: only the missed ones, as
            # "every event" does not include recalled.*.
            own = len(audit_events(c))
            assert own == 3
            assert job["progress"]["queued"] == 150 and job["progress"]["scanned"] == 150 + own
            wait_until(lambda: set(counts(rx, "/slowreplay")) >= missed, timeout=20)
        by_event: dict[str, set[str]] = {}
        for x in rx.received("/slowreplay"):
            by_event.setdefault(x.json["event"]["id"], set()).add(x.webhook_id)
        assert set(by_event) == missed and all(len(v) == 1 for v in by_event.values())
        srv.stop()
        (rows,) = srv.query("SELECT count(*), count(DISTINCT event_seq) FROM webhook_messages "
                            "WHERE subscription_id = ? AND event_seq IS NOT NULL", sub["id"])
        assert rows == (150, 150)  # one message per event, whatever the crash
    finally:
        rx.close()
