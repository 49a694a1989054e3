"""Webhooks on PostgreSQL (issue #15, "Webhooks across instances"): real servers on one fresh
database, real receivers (tests/webhook_receiver.py).

* one instance: signed deliveries the reference verifier accepts; a 500 retried with the
  same webhook-id;
* two instances, 16 concurrent writers spread over both: every message delivered once;
* SIGKILL of an instance while its deliveries hang at the receiver: the other sends them
  after their lease ends, with the same webhook-id;
* a retry left pending by an instance that then dies is claimed by the other as soon as it
  is due, because NOTIFY told it (the loop's own resync runs only every 30 s);
* a replay job of an instance that dies is adopted by the other after its lease and
  finished once.

Skipped without RECALLED_TEST_PG_URL (tests/pg_support.py).
"""

from __future__ import annotations

import base64
import concurrent.futures
import time

import pytest
import standardwebhooks

from conftest import PG_URL_FILE, ServerProcess
from pg_support import create_database, drop_database
from webhook_receiver import Receiver, Reply, tag, wait_until

SECRET = base64.b64encode(b"recalled-lite pg webhook tests!!" * 2).decode()


def config(*, schedule=(0.3, 0.6), lease=120.0, timeout=5.0) -> str:
    return f"""
[webhooks]
allow_private_destinations = true
retry_schedule = {list(schedule)}
jitter = 0.0
lease_seconds = {lease}
timeout_seconds = {timeout}
disable_after_seconds = 600
"""


@pytest.fixture
def pg(tmp_path):
    """start(name, config_text=...) -> a server on the one fresh database of this test; every
    instance shares the server secret (RECALLED_SECRET) and the signing key file, as a
    deployment would."""
    url = create_database("wh")
    servers: list[ServerProcess] = []

    def start(name: str = "a", **kwargs) -> ServerProcess:
        env = {"RECALLED_SECRET": SECRET, **kwargs.pop("env", {})}
        workdir = tmp_path / name
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / PG_URL_FILE).write_text(url + "\n")  # every instance on this one database
        srv = ServerProcess(workdir, env=env, backend="postgres", **kwargs)
        if servers:  # the checkpoint signing key is a file too: the same for every instance
            key = servers[0].workdir / "recalled.signing-key"
            copy = srv.workdir / key.name
            copy.write_bytes(key.read_bytes())
            copy.chmod(0o600)
        servers.append(srv)
        return srv.start()

    try:
        yield start
    finally:
        for srv in servers:
            srv.kill()
        drop_database(url)


@pytest.fixture
def rx():
    receiver = Receiver()
    yield receiver
    receiver.close()


def subscribe(c, url: str, patterns: list[str]) -> dict:
    r = c.post("/v1/event_subscriptions", json={"url": url, "event_types": patterns})
    assert r.status_code == 201, r.text
    sub = r.json()["data"]
    wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub['id']}").json()["data"]["state"] == "valid",
               message="subscription valid")
    return sub


def visible(c, sub_id: str) -> bool:
    r = c.get(f"/v1/event_subscriptions/{sub_id}")
    return r.status_code == 200 and r.json()["data"]["state"] == "valid"


def delivered_total(c) -> int:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith("recalled_webhook_deliveries_total "):
            return int(float(line.split()[1]))
    raise AssertionError("no recalled_webhook_deliveries_total in /metrics")


def attempts_of(c, sub_id: str) -> list[dict]:
    r = c.get(f"/v1/event_subscriptions/{sub_id}/attempts", params={"limit": 200})
    assert r.status_code == 200, r.text
    return [a for a in r.json()["data"] if a["trigger"] != "test"][::-1]


def test_pg_deliveries_are_signed_and_verify_with_the_reference_verifier(pg, rx):
    srv = pg(config_text=config())
    t = tag()
    path = f"/signed-{t}"
    with srv.client() as c:
        r = c.post("/v1/event_subscriptions", json={"url": rx.url(path), "event_types": [f"{t}.*"]})
        assert r.status_code == 201, r.text
        sub = r.json()["data"]
        rx.verifiers[path] = {"standardwebhooks": standardwebhooks.Webhook(sub["secret"]).verify}
        wait_until(lambda: visible(c, sub["id"]), message="subscription valid")
        posted = c.post("/v1/events/batch", json={"events": [
            {"action": f"{t}.made", "metadata": {"i": i, "text": "naïve ✓"}} for i in range(10)]})
        assert posted.status_code == 200, posted.text
        ids = {e["id"] for e in posted.json()["data"]}
        got = wait_until(lambda: len(rx.received(path)) >= 10 and rx.received(path), message="10 deliveries")
        assert {x.json["event"]["id"] for x in got} == ids
        assert all(x.verified == {"standardwebhooks": True} for x in got)
        assert {x.headers["webhook-id"] for x in got} == {x.json["id"] for x in got}
        wait_until(lambda: [a["status"] for a in attempts_of(c, sub["id"])] == ["success"] * 10,
                   message="10 successful attempts recorded")


def test_pg_a_500_is_retried_with_the_same_webhook_id(pg, rx):
    srv = pg(config_text=config(schedule=(0.3, 0.3)))
    t = tag()
    url = rx.on(f"/retry-{t}", lambda r, n: Reply(500) if n == 1 else Reply(200))
    with srv.client() as c:
        sub = subscribe(c, url, [f"{t}.*"])
        event = c.post("/v1/events", json={"action": f"{t}.x"}).json()["data"]
        got = wait_until(lambda: len(rx.received(f"/retry-{t}")) >= 2 and rx.received(f"/retry-{t}"),
                         message="two attempts")
        assert [x.status for x in got] == [500, 200]
        assert got[0].webhook_id == got[1].webhook_id
        assert got[1].at - got[0].at >= 0.3
        attempts = wait_until(lambda: len(attempts_of(c, sub["id"])) == 2
                              and attempts_of(c, sub["id"])[-1]["status"] == "success" and attempts_of(c, sub["id"]))
        assert [(a["attempt"], a["status"], a["response_status_code"], a["event_id"]) for a in attempts] == [
            (1, "failed", 500, event["id"]), (2, "success", 200, event["id"])]


def test_pg_two_instances_deliver_every_message_once_with_16_writers(pg, rx):
    cfg = config()
    a = pg("a", config_text=cfg)
    b = pg("b", config_text=cfg)
    t = tag()
    path = f"/once-{t}"
    url = rx.url(path)
    with a.client() as ca, b.client() as cb:
        sub = subscribe(ca, url, [f"{t}.*"])
        wait_until(lambda: visible(cb, sub["id"]), timeout=10, message="b sees a's subscription")

        def writer(w: int) -> set[str]:
            srv = a if w % 2 == 0 else b
            ids = set()
            with srv.client() as c:
                for i in range(12):
                    if i % 3 == 2:
                        r = c.post("/v1/events/batch", json={"events": [
                            {"action": f"{t}.batch", "metadata": {"w": w, "i": i, "j": j}} for j in range(4)]})
                    else:
                        r = c.post("/v1/events", json={"action": f"{t}.one", "metadata": {"w": w, "i": i}})
                    assert r.status_code == 200, r.text
                    data = r.json()["data"]
                    ids.update(e["id"] for e in (data if isinstance(data, list) else [data]))
            return ids

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            acknowledged = set().union(*pool.map(writer, range(16)))
        assert len(acknowledged) == 16 * (8 + 4 * 4)
        wait_until(lambda: {x.json["event"]["id"] for x in rx.received(path)} >= acknowledged, timeout=60,
                   message="every acknowledged event delivered")
        time.sleep(1.0)  # a duplicate sent late would have arrived by now
        got = rx.received(path)
        by_event: dict[str, set[str]] = {}
        for x in got:
            by_event.setdefault(x.json["event"]["id"], set()).add(x.webhook_id)
        assert len(got) == len(acknowledged), f"{len(got) - len(acknowledged)} messages delivered twice"
        assert all(len(ids) == 1 for ids in by_event.values())
        assert len({x.webhook_id for x in got}) == len(acknowledged)
        # Both loops sent: each instance hands its own intake to its own loop.
        sent = [delivered_total(c) for c in (ca, cb)]
        assert sum(sent) == len(acknowledged) + 1 and min(sent) > 0, sent  # + the test message
        for c in (ca, cb):
            assert c.get("/v1/events/verify").json()["data"]["valid"] is True


def test_pg_a_killed_instances_in_flight_deliveries_are_sent_by_the_other_after_the_lease(pg, rx):
    # a's deliveries hang at the receiver (longer than the test), so a holds them in flight,
    # leased, when it is killed; b must wait for the lease to end, then send them itself.
    lease = 3.0
    cfg = config(lease=lease, timeout=30.0)
    t = tag()
    path = f"/hang-{t}"
    first_seen: dict[str, float] = {}

    def behaviour(r, n):
        if r.webhook_id not in first_seen:
            first_seen[r.webhook_id] = time.time()
            return Reply(200, delay=25.0)  # hangs: still in flight at a when a dies
        return Reply(200)

    url = rx.on(path, behaviour)
    a = pg("a", config_text=cfg)
    b = pg("b", config_text=cfg)
    with a.client() as ca, b.client() as cb:
        sub = subscribe(ca, url, [f"{t}.*"])
        wait_until(lambda: visible(cb, sub["id"]), timeout=10, message="b sees the subscription")
        posted = ca.post("/v1/events/batch", json={"events": [{"action": f"{t}.x", "metadata": {"i": i}}
                                                             for i in range(3)]})
        assert posted.status_code == 200, posted.text
        ids = {e["id"] for e in posted.json()["data"]}
        hung = wait_until(lambda: len(rx.received(path)) >= 3 and rx.received(path), message="a sends all 3")
        hung_ids = {x.webhook_id for x in hung}
        a.kill()
        killed = time.time()
        got = wait_until(lambda: len(rx.received(path)) >= 6 and rx.received(path)[3:], timeout=30,
                         message="b sends them again")
        assert {x.webhook_id for x in got} == hung_ids  # same webhook-id
        assert {x.json["event"]["id"] for x in got} == ids
        # not before the lease a took with them ended (a's last renewal was at most a third
        # of the lease before the kill)
        earliest_end = min(first_seen.values()) + lease
        assert min(x.at for x in got) >= min(earliest_end, killed + lease * 2 / 3) - 0.2
        attempts = wait_until(lambda: [x for x in attempts_of(cb, sub["id"]) if x["status"] == "success"]
                              if len([x for x in attempts_of(cb, sub["id"]) if x["status"] == "success"]) == 3
                              else None, timeout=10)
        assert {x["message_id"] for x in attempts} == hung_ids
        assert {x["attempt"] for x in attempts} == {1}  # the open attempt, same id, completed by b
        assert "whose lease ran out were made due again" in b.log_text()


def test_pg_notify_makes_the_other_instance_claim_a_pending_retry_when_due(pg, rx):
    # The retry is due 3 s after the 500. a dies right after recording it; only b can send it,
    # and b learns its due time from the NOTIFY of a's commit: its own resync of due times
    # runs every 30 s and its lease tick (lease 120 s) finds nothing leased.
    delay = 3.0
    cfg = config(schedule=(delay,), lease=120.0)
    t = tag()
    path = f"/notify-{t}"
    url = rx.on(path, lambda r, n: Reply(500) if n == 1 else Reply(200))
    a = pg("a", config_text=cfg)
    b = pg("b", config_text=cfg)
    with a.client() as ca, b.client() as cb:
        sub = subscribe(ca, url, [f"{t}.*"])
        wait_until(lambda: visible(cb, sub["id"]), timeout=10, message="b sees the subscription")
        ca.post("/v1/events", json={"action": f"{t}.x"})
        failed = wait_until(lambda: [x for x in attempts_of(cb, sub["id"]) if x["status"] == "failed"],
                            timeout=10, message="a records the 500")
        a.kill()
        due = failed[0]["next_attempt_at"]
        assert due is not None
        got = wait_until(lambda: len(rx.received(path)) >= 2 and rx.received(path), timeout=20,
                         message="b sends the retry")
        first, retry = got[0], got[1]
        assert retry.webhook_id == first.webhook_id
        assert retry.at - first.at >= delay - 0.2
        assert retry.at - first.at <= delay + 4.0, "b did not hear of the retry (no NOTIFY?)"
        attempts = wait_until(lambda: len(attempts_of(cb, sub["id"])) == 2
                              and attempts_of(cb, sub["id"])[-1]["status"] == "success" and attempts_of(cb, sub["id"]),
                              timeout=10)
        assert [(x["attempt"], x["status"]) for x in attempts] == [(1, "failed"), (2, "success")]


def test_pg_a_killed_instances_job_is_finished_by_the_other_once(pg, rx):
    # replay_missing runs on the instance that created it, leased; a slow receiver and a small
    # backlog keep it running when that instance dies. The other adopts it once the job's
    # lease ends and finishes it from the last committed chunk: every missed event once.
    lease = 3.0
    cfg = config(lease=lease) + "job_chunk_size = 4\njob_max_backlog = 8\n"
    t = tag()
    path = f"/job-{t}"
    url = rx.on(path, lambda r, n: Reply(200, delay=0.03))
    a = pg("a", config_text=cfg)
    b = pg("b", config_text=cfg)
    with a.client() as ca, b.client() as cb:
        begin = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 1))
        sub = ca.post("/v1/event_subscriptions", json={"url": url, "disabled": True}).json()["data"]
        r = ca.post("/v1/events/batch", json={"events": [{"action": f"{t}.missed"} for _ in range(120)]})
        missed = {e["id"] for e in r.json()["data"]}
        ca.patch(f"/v1/event_subscriptions/{sub['id']}", json={"state": "new"})
        wait_until(lambda: visible(ca, sub["id"]), message="valid again")
        r = ca.post(f"/v1/event_subscriptions/{sub['id']}/replay_missing", json={"begin": begin})
        assert r.status_code == 202, r.text
        job_id = r.json()["data"]["id"]
        wait_until(lambda: len(rx.received(path)) >= 30, timeout=20, message="the job under way at a")
        a.kill()
        ((status, scanned, owner),) = b.query("SELECT status, scanned, lease_owner FROM webhook_jobs WHERE id = ?",
                                              job_id)
        assert status == "running" and 0 < scanned < 120 and owner is not None, (status, scanned)
        job = wait_until(lambda: (j := cb.get(f"/v1/event_subscriptions/{sub['id']}/jobs/{job_id}").json()["data"])
                         ["status"] == "completed" and j, timeout=40, message="b finishes the job")
        assert job["progress"]["queued"] == 120
        wait_until(lambda: {x.json["event"]["id"] for x in rx.received(path)} >= missed, timeout=30,
                   message="every missed event delivered")
        by_event: dict[str, set[str]] = {}
        for x in rx.received(path):
            by_event.setdefault(x.json["event"]["id"], set()).add(x.webhook_id)
        assert set(by_event) == missed and all(len(ids) == 1 for ids in by_event.values())
        (rows,) = b.query("SELECT count(*), count(DISTINCT event_seq) FROM webhook_messages "
                          "WHERE subscription_id = ? AND event_seq IS NOT NULL", sub["id"])
        assert rows == (120, 120)
