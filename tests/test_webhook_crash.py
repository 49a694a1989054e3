"""Must-show 3: at-least-once across crashes (spec §5.2). 1,000 events to a slow receiver;
SIGKILL the server mid-way, restart, later SIGTERM mid-way, restart: every event reaches the
receiver, repeats carry the same webhook-id, and nothing is left pending."""

from __future__ import annotations

import time

from webhook_receiver import Receiver, Reply, wait_until

CONFIG = """
[webhooks]
allow_private_destinations = true
retry_schedule = [0.2, 0.4]
jitter = 0.0
shutdown_grace_seconds = 2.0
"""


def test_sigkill_and_sigterm_mid_delivery_lose_nothing(make_server):
    rx = Receiver()
    try:
        url = rx.on("/crash", lambda r, n: Reply(200, delay=0.02))  # ~200 deliveries/s with 4 in flight
        srv = make_server("crash", config_text=CONFIG)
        with srv.client() as c:
            r = c.post("/v1/event_subscriptions", json={"url": url, "event_types": ["crash.*"]})
            sub_id = r.json()["data"]["id"]
            wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub_id}").json()["data"]["state"] == "valid")
            ids: set[str] = set()
            for part in range(2):
                r = c.post("/v1/events/batch", json={"events": [
                    {"action": "crash.test", "metadata": {"n": part * 500 + i}} for i in range(500)]})
                assert r.status_code == 200, r.text
                ids |= {e["id"] for e in r.json()["data"]}
        assert len(ids) == 1000

        def delivered() -> set[str]:
            return {x.json["event"]["id"] for x in rx.received("/crash")}

        wait_until(lambda: len(delivered()) >= 250, timeout=20, message="250 deliveries")
        srv.kill()  # SIGKILL: in-flight attempts are lost mid-air
        at_kill = len(delivered())
        assert at_kill < 1000, "delivery finished before the crash; slow the receiver down"
        srv.start()
        wait_until(lambda: len(delivered()) >= at_kill + 250, timeout=20, message="progress after restart")
        srv.stop()  # SIGTERM: graceful, in-flight attempts finish or are leased back
        at_term = len(delivered())
        assert at_term < 1000, "delivery finished before the SIGTERM"
        srv.start()
        wait_until(lambda: delivered() >= ids, timeout=30, message="every event delivered")

        with srv.client() as c:
            def nothing_open():
                page = c.get(f"/v1/event_subscriptions/{sub_id}/attempts", params={"status": "pending"}).json()
                sending = c.get(f"/v1/event_subscriptions/{sub_id}/attempts", params={"status": "sending"}).json()
                return page["data"] == [] and sending["data"] == []
            wait_until(nothing_open, timeout=10, message="no open deliveries")
        time.sleep(0.3)
        srv.stop()

        by_event: dict[str, set[str]] = {}
        for x in rx.received("/crash"):
            by_event.setdefault(x.json["event"]["id"], set()).add(x.webhook_id)
        assert set(by_event) == ids
        assert all(len(hooks) == 1 for hooks in by_event.values()), "a repeat carried a new webhook-id"
        repeats = len(rx.received("/crash")) - len(ids)
        assert repeats <= 20, f"{repeats} repeats: more than the in-flight window at two stops"

        statuses = dict(srv.query(
            "SELECT status, count(*) FROM webhook_messages WHERE subscription_id = ? AND event_seq IS NOT NULL "
            "GROUP BY status", sub_id))
        webhook_ids = {row[0] for row in srv.query(
            "SELECT id FROM webhook_messages WHERE subscription_id = ? AND event_seq IS NOT NULL", sub_id)}
        assert statuses == {"success": 1000}, statuses
        assert webhook_ids == {hook for hooks in by_event.values() for hook in hooks}
    finally:
        rx.close()
