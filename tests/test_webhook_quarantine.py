"""Poison work does not loop forever: a result that can never be recorded and a job whose
every step fails are retried with a backoff, then quarantined after the cap (the delivery
`failed` with the error on its attempt, the job `failed` with `error`), and the work behind
them completes. The poison comes from the test-only fault hook (RECALLED_TEST_FAULTS):
no real input makes a result or a job step fail deterministically."""

from __future__ import annotations

import time
from collections import Counter

from webhook_receiver import Receiver, Reply, wait_until

CONFIG = """
[webhooks]
allow_private_destinations = true
retry_schedule = [0.2, 0.2]
jitter = 0.0
quarantine_after_failures = 3
failure_backoff_initial_seconds = 0.2
failure_backoff_max_seconds = 0.5
job_chunk_size = 3
"""


def now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def test_a_poison_result_and_a_poison_job_are_quarantined_and_the_rest_completes(make_server):
    rx = Receiver()
    try:
        url = rx.on("/poison", lambda r, n: Reply(200))
        srv = make_server("poison", config_text=CONFIG, env={"RECALLED_TEST_FAULTS": "poison_result:1,poison_job:1"})
        with srv.client() as c:
            sub = c.post("/v1/event_subscriptions", json={"url": url, "event_types": ["poison.*"]}).json()["data"]
            sid = sub["id"]
            wait_until(lambda: c.get(f"/v1/event_subscriptions/{sid}").json()["data"]["state"] == "valid")

            # -- results: the first delivery's result can never be recorded
            first = [e["id"] for e in c.post("/v1/events/batch", json={
                "events": [{"action": "poison.a", "metadata": {"i": i}} for i in range(10)]}).json()["data"]]
            behind = [e["id"] for e in c.post("/v1/events/batch", json={
                "events": [{"action": "poison.b", "metadata": {"i": i}} for i in range(10)]}).json()["data"]]

            def finished():
                data = c.get(f"/v1/event_subscriptions/{sid}/attempts", params={"limit": 200}).json()["data"]
                done = [a for a in data if a["trigger"] == "scheduled" and a["status"] in ("success", "failed")]
                return len(done) == 20 and done
            attempts = wait_until(finished, timeout=30, message="20 recorded attempts")
            failed = [a for a in attempts if a["status"] == "failed"]
            assert len(failed) == 1, failed
            (poison,) = failed
            assert "could not be recorded (3 tries" in poison["error"] and "quarantined" in poison["error"]
            assert "test fault" in poison["error"]
            assert poison["response_status_code"] == 200  # what really happened is kept
            assert poison["next_attempt_at"] is None
            assert {a["event_id"] for a in attempts if a["status"] == "success"} == set(first + behind) - {
                poison["event_id"]}
            time.sleep(0.5)
            # quarantined, not resent: every event reached the receiver exactly once
            assert Counter(x.json["event"]["id"] for x in rx.received("/poison")) == {e: 1 for e in first + behind}

            # -- jobs: the first job's every step fails; the second one completes
            c.patch(f"/v1/event_subscriptions/{sid}", json={"state": "deactivated"})
            begin = now_iso()
            missed = [e["id"] for e in c.post("/v1/events/batch", json={
                "events": [{"action": "poison.c"} for _ in range(7)]}).json()["data"]]
            c.patch(f"/v1/event_subscriptions/{sid}", json={"state": "new"})
            wait_until(lambda: c.get(f"/v1/event_subscriptions/{sid}").json()["data"]["state"] == "valid")
            doomed = c.post(f"/v1/event_subscriptions/{sid}/replay_missing", json={"begin": begin}).json()["data"]
            healthy = c.post(f"/v1/event_subscriptions/{sid}/replay_missing", json={"begin": begin}).json()["data"]

            def job(job_id):
                return c.get(f"/v1/event_subscriptions/{sid}/jobs/{job_id}").json()["data"]
            done = wait_until(lambda: (j := job(healthy["id"]))["status"] == "completed" and j, timeout=20)
            assert done["progress"]["queued"] == 7
            bad = wait_until(lambda: (j := job(doomed["id"]))["status"] == "failed" and j, timeout=20)
            assert bad["error"].startswith("quarantined after 3 failed steps") and "test fault" in bad["error"]
            assert bad["finished_at"] is not None and bad["progress"]["scanned"] == 0
            wait_until(lambda: set(missed) <= {x.json["event"]["id"] for x in rx.received("/poison")}, timeout=20)
            time.sleep(0.5)
            assert job(doomed["id"])["status"] == "failed"  # stays quarantined
        log = srv.log_text()
        assert "webhook delivery quarantined" in log and "webhook job quarantined" in log
        assert "Traceback" not in log
    finally:
        rx.close()
