"""SPEC §5.2 over real sockets: Standard Webhooks signatures checked by the reference
`standardwebhooks` and `svix` verifiers (also across a secret rotation), and the outcome
rules - retries, timeouts, 410, redirects, Retry-After, caps - with a short schedule.

Must-show 1 and 2. Every scenario of must-show 2 is started at once by a module fixture (so
the slow ones overlap), then checked by its own test.
"""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest
import standardwebhooks
import svix.webhooks

from conftest import ServerProcess
from webhook_receiver import Reply, tag, wait_until

SCHEDULE = [0.3, 0.6, 1.2]  # seconds between attempts; 4 attempts in all
CONFIG = f"""
[webhooks]
allow_private_destinations = true
retry_schedule = {SCHEDULE}
jitter = 0.0
timeout_seconds = 1.0
secret_rotation_overlap_seconds = 4.0
disable_after_seconds = 600
"""
SLACK = 0.6  # scheduling / loopback latency allowed on top of a delay (2 cores, loaded)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("wh_delivery"), config_text=CONFIG).start()
    yield server
    server.kill()


def subscribe(c, url, patterns):
    r = c.post("/v1/event_subscriptions", json={"url": url, "event_types": patterns})
    assert r.status_code == 201, r.text
    sub = r.json()["data"]
    wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub['id']}").json()["data"]["state"] == "valid",
               message="subscription valid")
    return sub


def attempts_of(c, sub_id, **params):
    r = c.get(f"/v1/event_subscriptions/{sub_id}/attempts", params={"limit": 200, **params})
    assert r.status_code == 200, r.text
    return [a for a in r.json()["data"] if a["trigger"] != "test"][::-1]  # oldest first


def settled(c, sub_id, count):
    """Wait until the subscription has `count` finished event attempts and nothing open."""
    def check():
        attempts = attempts_of(c, sub_id)
        done = [a for a in attempts if a["status"] in ("success", "failed")]
        return len(done) == count and len(attempts) == count and attempts
    return wait_until(check, timeout=20, message=f"{count} settled attempts")


def std(secret):
    return standardwebhooks.Webhook(secret).verify


def svix_verify(secret):
    return svix.webhooks.Webhook(secret).verify


# ------------------------------------------------------------------------------------------
# must-show 1: signatures
# ------------------------------------------------------------------------------------------


def test_reference_verifiers_accept_every_message_across_a_rotation(srv, rx):
    t = tag()
    path = f"/signed-{t}"
    with srv.client() as c:
        r = c.post("/v1/event_subscriptions", json={"url": rx.url(path), "event_types": [f"{t}.*"]})
        sub = r.json()["data"]
        old = sub["secret"]
        rx.verifiers[path] = {"standardwebhooks/old": std(old), "svix/old": svix_verify(old)}
        wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub['id']}").json()["data"]["state"] == "valid")
        assert all(rx.received(path, type="webhook.test")[0].verified.values())

        def post_batch(n, label):
            events = [{"action": f"{t}.{label}", "actor": {"id": f"u{i}", "name": "Zoë ✓ 東京"},
                       "metadata": {"i": i, "text": "naïve \u2028 \"quoted\" \\ slash", "n": 1.5e300}}
                      for i in range(n)]
            r = c.post("/v1/events/batch", json={"events": events})
            assert r.status_code == 200, r.text
            return {e["id"] for e in r.json()["data"]}

        # before the rotation: one signature, old secret
        ids = post_batch(20, "before")
        got = wait_until(lambda: len(rx.received(path)) >= 20 and rx.received(path))
        assert {x.json["event"]["id"] for x in got} == ids
        for x in got:
            assert x.verified == {"standardwebhooks/old": True, "svix/old": True}, x.verified
            assert len(x.headers["webhook-signature"].split(" ")) == 1

        # rotate: for the overlap both secrets sign; a receiver holding either verifies
        rotated = c.post(f"/v1/event_subscriptions/{sub['id']}/secret/rotate").json()["data"]
        new = rotated["secret"]
        assert new != old
        rx.verifiers[path] = {"standardwebhooks/old": std(old), "svix/new": svix_verify(new),
                              "standardwebhooks/new": std(new)}
        rotated_at = time.monotonic()
        ids = post_batch(20, "during")
        got = wait_until(lambda: len(rx.received(path)) >= 40 and rx.received(path)[20:])
        assert {x.json["event"]["id"] for x in got} == ids
        for x in got:
            assert all(x.verified.values()) and len(x.verified) == 3, x.verified
            assert len(x.headers["webhook-signature"].split(" ")) == 2

        # after the overlap only the new secret signs
        time.sleep(max(0.0, 4.5 - (time.monotonic() - rotated_at)))
        rx.verifiers[path] = {"standardwebhooks/new": std(new), "svix/new": svix_verify(new)}
        ids = post_batch(5, "after")
        got = wait_until(lambda: len(rx.received(path)) >= 45 and rx.received(path)[40:])
        assert {x.json["event"]["id"] for x in got} == ids
        for x in got:
            assert all(x.verified.values()) and len(x.verified) == 2
            assert len(x.headers["webhook-signature"].split(" ")) == 1
            with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
                std(old)(x.body, x.headers)
        # the verifiers are not rubber stamps: a changed byte fails
        sample = got[0]
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            std(new)(sample.body.replace(b'"i":', b'"j":'), sample.headers)
        with pytest.raises(Exception):
            svix_verify(new)(sample.body, {**sample.headers, "webhook-id": "whd_other"})

        # every attempt succeeded (a failed verification would have been answered 401)
        attempts = settled(c, sub["id"], 45)
        assert {a["status"] for a in attempts} == {"success"}
        # the timestamp header is the attempt's time, in unix seconds
        stamp = int(got[-1].headers["webhook-timestamp"])
        assert abs(stamp - datetime.now().timestamp()) < 30


# ------------------------------------------------------------------------------------------
# must-show 2: retry behaviour - all scenarios start together
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenarios(srv, rx):
    t = tag()
    behaviours = {
        "fail2": lambda r, n: Reply(500, body=b"boom") if n <= 2 else Reply(200, body=b"finally"),
        "always": lambda r, n: Reply(500, body=b"nope"),
        "hang": lambda r, n: Reply(200, delay=1.8),
        "gone": lambda r, n: Reply(410, body=b"unsubscribed"),
        "redirect": lambda r, n: Reply(302, headers={"Location": rx.url(f"/target-{t}")}),
        "retry_after": lambda r, n: Reply(429, headers={"Retry-After": "2"}) if n == 1 else Reply(200),
        "ignored_retry_after": lambda r, n: Reply(500, headers={"Retry-After": "30"}) if n == 1 else Reply(200),
        "big_body": lambda r, n: Reply(200, body=b"x" * 100_000),
        "slow": lambda r, n: Reply(200, delay=0.25),
    }
    subs, events = {}, {}
    with srv.client() as c:
        for name, behaviour in behaviours.items():
            subs[name] = subscribe(c, rx.on(f"/{name}-{t}", behaviour), [f"{t}.{name}"])
        started = time.monotonic()
        for name in behaviours:
            count = 12 if name == "slow" else 1
            r = c.post("/v1/events/batch", json={"events": [{"action": f"{t}.{name}"}] * count})
            assert r.status_code == 200, r.text
            events[name] = [e["id"] for e in r.json()["data"]]
    return {"t": t, "subs": subs, "events": events, "started": started}


def path_of(s, name):
    return f"/{name}-{s['t']}"


def gaps(received):
    return [b.at - a.at for a, b in zip(received, received[1:])]


def test_fails_twice_then_succeeds(srv, rx, scenarios):
    with srv.client() as c:
        attempts = settled(c, scenarios["subs"]["fail2"]["id"], 3)
    assert [a["status"] for a in attempts] == ["failed", "failed", "success"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["response_status_code"] for a in attempts] == [500, 500, 200]
    assert [a["response_body"] for a in attempts] == ["boom", "boom", "finally"]
    assert all(a["trigger"] == "scheduled" and a["duration_ms"] is not None for a in attempts)
    assert attempts[0]["next_attempt_at"] is not None and attempts[2]["next_attempt_at"] is None
    assert len({a["message_id"] for a in attempts}) == 1 and len({a["id"] for a in attempts}) == 3
    got = rx.received(path_of(scenarios, "fail2"))
    assert len(got) == 3 and len({x.webhook_id for x in got}) == 1  # same webhook-id on retries
    for gap, delay in zip(gaps(got), SCHEDULE):
        assert delay - 0.05 <= gap <= delay + SLACK, (gap, delay)
    with srv.client() as c:
        assert c.get(f"/v1/event_subscriptions/{scenarios['subs']['fail2']['id']}").json()["data"]["state"] == "valid"


def test_always_failing_exhausts_the_schedule_then_failed(srv, rx, scenarios):
    sub_id = scenarios["subs"]["always"]["id"]
    with srv.client() as c:
        attempts = settled(c, sub_id, len(SCHEDULE) + 1)
        assert [a["status"] for a in attempts] == ["failed"] * 4
        assert [a["next_attempt_at"] is None for a in attempts] == [False, False, False, True]
        assert c.get(f"/v1/event_subscriptions/{sub_id}/attempts", params={"status": "pending"}).json()["data"] == []
        assert c.get(f"/v1/event_subscriptions/{sub_id}").json()["data"]["state"] == "valid"  # < disable_after
    got = rx.received(path_of(scenarios, "always"))
    for gap, delay in zip(gaps(got), SCHEDULE):
        assert delay - 0.05 <= gap <= delay + SLACK, (gap, delay)
    time.sleep(0.5)
    assert len(rx.received(path_of(scenarios, "always"))) == 4  # and nothing after the last


def test_hanging_receiver_times_out(srv, rx, scenarios):
    with srv.client() as c:
        attempts = settled(c, scenarios["subs"]["hang"]["id"], 4)
    assert [a["status"] for a in attempts] == ["failed"] * 4
    for a in attempts:
        assert a["response_status_code"] is None and "timed out" in a["error"], a
        assert 950 <= a["duration_ms"] <= 1000 + 1000 * SLACK, a["duration_ms"]


def test_410_gone_invalidates_the_subscription(srv, rx, scenarios):
    sub_id = scenarios["subs"]["gone"]["id"]
    with srv.client() as c:
        attempts = settled(c, sub_id, 1)
        assert attempts[0]["status"] == "failed" and attempts[0]["response_status_code"] == 410
        assert attempts[0]["next_attempt_at"] is None
        sub = c.get(f"/v1/event_subscriptions/{sub_id}").json()["data"]
        assert sub["state"] == "invalid" and "410" in sub["state_reason"]
        # an invalid subscription misses new events (until replay_missing)
        c.post("/v1/events", json={"action": f"{scenarios['t']}.gone"})
        time.sleep(0.5)
        assert len(attempts_of(c, sub_id)) == 1
    assert len(rx.received(path_of(scenarios, "gone"))) == 1


def test_redirects_are_not_followed(srv, rx, scenarios):
    with srv.client() as c:
        attempts = settled(c, scenarios["subs"]["redirect"]["id"], 4)
    assert [a["response_status_code"] for a in attempts] == [302] * 4
    assert all(a["status"] == "failed" and "redirect" in a["error"] for a in attempts)
    assert rx.received(f"/target-{scenarios['t']}", type=None) == []  # never dialled


def test_retry_after_is_honoured_on_429_only(srv, rx, scenarios):
    with srv.client() as c:
        honoured = settled(c, scenarios["subs"]["retry_after"]["id"], 2)
        ignored = settled(c, scenarios["subs"]["ignored_retry_after"]["id"], 2)
    assert [a["status"] for a in honoured] == ["failed", "success"]
    assert honoured[0]["response_status_code"] == 429
    (gap,) = gaps(rx.received(path_of(scenarios, "retry_after")))
    assert 2.0 - 0.05 <= gap <= 2.0 + SLACK, gap  # Retry-After: 2, not the scheduled 0.3
    assert [a["status"] for a in ignored] == ["failed", "success"]
    (gap,) = gaps(rx.received(path_of(scenarios, "ignored_retry_after")))
    assert SCHEDULE[0] - 0.05 <= gap <= SCHEDULE[0] + SLACK, gap  # a 500's Retry-After is ignored


def test_response_body_is_stored_up_to_20kb(srv, scenarios):
    with srv.client() as c:
        (attempt,) = settled(c, scenarios["subs"]["big_body"]["id"], 1)
    assert attempt["status"] == "success" and len(attempt["response_body"]) == 20480


def test_per_subscription_in_flight_cap(srv, rx, scenarios):
    with srv.client() as c:
        settled(c, scenarios["subs"]["slow"]["id"], 12)
    assert rx.max_in_flight[path_of(scenarios, "slow")] == 4


def test_first_attempt_starts_at_once(srv, rx):
    """No polling delay: the first attempt follows the commit within milliseconds."""
    t = tag()
    path = f"/fast-{t}"
    with srv.client() as c:
        subscribe(c, rx.url(path), [f"{t}.*"])
        lags = []
        for _ in range(10):
            sent = time.time()
            assert c.post("/v1/events", json={"action": f"{t}.fast"}).status_code == 200
            n = len(lags) + 1
            got = wait_until(lambda: len(rx.received(path)) >= n and rx.received(path), timeout=5)
            lags.append(got[-1].at - sent)
    lags.sort()
    assert lags[len(lags) // 2] < 0.25, lags  # generous for a loaded 2-core box; typical ~5 ms


def test_disable_after_makes_a_failing_subscription_invalid(make_server, rx):
    srv2 = make_server("disable", config_text="""
[webhooks]
allow_private_destinations = true
retry_schedule = [0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]
jitter = 0.0
disable_after_seconds = 1.5
""")
    t = tag()
    with srv2.client() as c:
        sub = subscribe(c, rx.on(f"/disable-{t}", lambda r, n: Reply(503)), [])
        c.post("/v1/events", json={"action": "x"})
        wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub['id']}").json()["data"]["state"] == "invalid",
                   timeout=10, message="auto-invalid")
        state = c.get(f"/v1/event_subscriptions/{sub['id']}").json()["data"]
        assert "no successful delivery" in state["state_reason"]
        attempts = wait_until(lambda: (a := attempts_of(c, sub["id"])) and all(x["status"] == "failed" for x in a) and a)
        # failing since the first attempt; invalid once 1.5 s had passed: the 5th attempt (at 1.6 s)
        assert len(attempts) == 5, [a["created_at"] for a in attempts]
        assert attempts[-1]["next_attempt_at"] is None  # no retry once invalid


def test_retries_carry_the_event_as_stored_now_so_erasure_applies(srv, rx):
    """The payload is read from the events table at send time, not copied into the outbox:
    an actor erased between two attempts is erased in the later one."""
    t = tag()
    path = f"/erase-{t}"
    url = rx.on(path, lambda r, n: Reply(429, headers={"Retry-After": "2"}) if n == 1 else Reply(200))
    with srv.client() as c:
        subscribe(c, url, [f"{t}.*"])
        actor = f"user_{t}"
        event = c.post("/v1/events", json={"action": f"{t}.signed_in", "ip_address": "198.51.100.9",
                                           "actor": {"id": actor, "name": "Ada", "email": "ada@example.com"},
                                           "metadata": {"secret": "personal"}}).json()["data"]
        first = wait_until(lambda: rx.received(path))[0]
        assert first.json["event"]["actor"]["email"] == "ada@example.com"
        r = c.delete(f"/v1/actors/{actor}")
        if r.status_code in (404, 405) and r.json()["error"]["message"] == "no such route":
            pytest.skip("DELETE /v1/actors is not built yet")
        assert r.status_code == 200, r.text
        second = wait_until(lambda: len(rx.received(path)) >= 2 and rx.received(path)[1], timeout=10)
    assert second.webhook_id == first.webhook_id
    erased = second.json["event"]
    assert erased["id"] == event["id"] and erased["hash"] == event["hash"]
    assert "ada@example.com" not in second.body.decode() and "personal" not in second.body.decode()
    assert erased["metadata"] is None and erased["actor"]["email"] in (None, "[deleted]")


def test_readiness_reports_the_delivery_loop(srv):
    r = httpx.get(srv.url + "/readyz")
    assert r.status_code == 200, r.text


def test_deleting_a_subscription_mid_delivery(srv, rx):
    t = tag()
    path = f"/deleted-{t}"
    url = rx.on(path, lambda r, n: Reply(200, delay=0.1))
    with srv.client() as c:
        sub = subscribe(c, url, [f"{t}.*"])
        c.post("/v1/events/batch", json={"events": [{"action": f"{t}.x"}] * 40})
        wait_until(lambda: rx.received(path))
        assert c.delete(f"/v1/event_subscriptions/{sub['id']}").status_code == 200
        time.sleep(0.5)
        seen = len(rx.received(path))
        time.sleep(0.5)
        assert len(rx.received(path)) == seen < 40  # nothing more is sent to it
        assert c.get(f"/v1/event_subscriptions/{sub['id']}").status_code == 404
        assert httpx.get(srv.url + "/readyz").status_code == 200
        # and everything else keeps flowing
        other = subscribe(c, rx.url(f"/after-delete-{t}"), [f"{t}.*"])
        c.post("/v1/events", json={"action": f"{t}.y"})
        wait_until(lambda: rx.received(f"/after-delete-{t}"))
        assert other["id"] != sub["id"]
    assert "Traceback" not in srv.log_text()
