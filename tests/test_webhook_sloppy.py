"""A sloppy 2xx is a success: a receiver that answers 204 with a body (and other framing
mistakes after the status line) gets each message exactly once, and the attempt is
`success` with a `warning` that says what was wrong. Real server, real receivers."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from conftest import ServerProcess
from webhook_receiver import Reply, tag, wait_until

CONFIG = """
[webhooks]
allow_private_destinations = true
retry_schedule = [0.2, 0.2, 0.2]
jitter = 0.0
"""

SLOPPY = {
    # what the receiver writes (in one send, then it closes) -> the warning on the attempt
    "204-body-close": (b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                       204, "a 204 response must not have a body"),
    "204-body": (b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok", 204,
                 "a 204 response must not have a body"),
    "data-after-close": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nokMORE", 200,
                         "more data after the end of the response"),
    "truncated": (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\npartial", 200, "cut short"),
    "bad-chunks": (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\nnot-a-chunk\r\n", 202,
                   "the response body is malformed"),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("wh_sloppy"), config_text=CONFIG).start()
    yield server
    server.kill()


@pytest.mark.parametrize("case", list(SLOPPY))
def test_a_sloppy_2xx_is_delivered_exactly_once_with_a_warning(srv, rx, case):
    raw, status, warning = SLOPPY[case]
    t = tag()
    path = f"/sloppy-{case}-{t}"
    url = rx.on(path, lambda r, n: Reply(raw=raw))
    with srv.client() as c:
        sub = c.post("/v1/event_subscriptions", json={"url": url, "event_types": [f"{t}.*"]}).json()["data"]
        wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub['id']}").json()["data"]["state"] == "valid")
        r = c.post("/v1/events/batch", json={"events": [{"action": f"{t}.x", "metadata": {"i": i}} for i in range(8)]})
        assert r.status_code == 200, r.text
        ids = {e["id"] for e in r.json()["data"]}

        def settled():
            data = c.get(f"/v1/event_subscriptions/{sub['id']}/attempts", params={"limit": 200}).json()["data"]
            events = [a for a in data if a["trigger"] == "scheduled"]
            return len(events) == 8 and all(a["status"] in ("success", "failed") for a in events) and events
        attempts = wait_until(settled, timeout=20, message="8 settled attempts")
        time.sleep(1.0)  # longer than the whole retry schedule: a resend would have happened by now
        got = rx.received(path)
        assert Counter(x.json["event"]["id"] for x in got) == {e: 1 for e in ids}
        assert len({x.webhook_id for x in got}) == 8
        attempts = c.get(f"/v1/event_subscriptions/{sub['id']}/attempts", params={"limit": 200}).json()["data"]
        attempts = [a for a in attempts if a["trigger"] == "scheduled"]
    assert len(attempts) == 8
    for a in attempts:
        assert a["status"] == "success" and a["attempt"] == 1, a
        assert a["response_status_code"] == status and a["error"] is None
        assert a["warning"] is not None and warning in a["warning"], a["warning"]
        assert a["next_attempt_at"] is None


def test_a_clean_response_has_no_warning(srv, rx):
    t = tag()
    path = f"/clean-{t}"
    url = rx.on(path, lambda r, n: Reply(204, body=b""))
    with srv.client() as c:
        sub = c.post("/v1/event_subscriptions", json={"url": url, "event_types": [f"{t}.*"]}).json()["data"]
        wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub['id']}").json()["data"]["state"] == "valid")
        c.post("/v1/events", json={"action": f"{t}.x"})
        attempts = wait_until(lambda: [a for a in c.get(f"/v1/event_subscriptions/{sub['id']}/attempts").json()["data"]
                                       if a["trigger"] == "scheduled" and a["status"] == "success"])
    assert attempts[0]["warning"] is None and attempts[0]["response_status_code"] == 204


def test_a_failure_status_with_a_sloppy_body_is_still_a_failure(srv, rx):
    """The status decides: a 500 whose body was cut short is retried (with the warning)."""
    t = tag()
    path = f"/sloppy500-{t}"
    url = rx.on(path, lambda r, n: Reply(raw=b"HTTP/1.1 500 Oops\r\nContent-Length: 40\r\n\r\nshort")
                if n == 1 else Reply(200))
    with srv.client() as c:
        sub = c.post("/v1/event_subscriptions", json={"url": url, "event_types": [f"{t}.*"]}).json()["data"]
        wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub['id']}").json()["data"]["state"] == "valid")
        c.post("/v1/events", json={"action": f"{t}.x"})

        def two():
            data = [a for a in c.get(f"/v1/event_subscriptions/{sub['id']}/attempts").json()["data"]
                    if a["trigger"] == "scheduled"]
            return len(data) == 2 and all(a["status"] in ("success", "failed") for a in data) and data[::-1]
        first, second = wait_until(two, timeout=10)
    assert (first["status"], first["response_status_code"]) == ("failed", 500)
    assert "cut short" in first["warning"] and first["next_attempt_at"] is not None
    assert (second["status"], second["warning"]) == ("success", None)
