"""Leases are enforced while the server runs: a delivery lost in memory is sent again after
its lease ends, with the same webhook-id and without a restart, and rows still held in
memory (waiting behind a slow receiver, longer than the lease) are never sent twice.
The loss is caused by the test-only fault hook RECALLED_TEST_FAULTS=lose_delivery:1."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import pytest

from conftest import ServerProcess
from webhook_receiver import Receiver, Reply, wait_until

from recalled_lite.config import load_config
from recalled_lite.delivery.service import DeliveryService
from recalled_lite.storage.webhook_base import OpenItem

CONFIG = """
[webhooks]
allow_private_destinations = true
retry_schedule = [0.2, 0.2]
jitter = 0.0
lease_seconds = 1.5
"""


def test_a_delivery_lost_in_memory_is_resent_after_its_lease_with_the_same_webhook_id(make_server):
    rx = Receiver()
    try:
        # 4 in flight at 0.3 s each: 40 deliveries take ~3 s, twice the lease, so most of them
        # wait in memory longer than their first lease - they must be renewed, not reclaimed.
        url = rx.on("/lease", lambda r, n: Reply(200, delay=0.3))
        srv: ServerProcess = make_server("leases", config_text=CONFIG,
                                         env={"RECALLED_TEST_FAULTS": "lose_delivery:1"})
        pid = srv.proc.pid
        with srv.client() as c:
            sub = c.post("/v1/event_subscriptions", json={"url": url, "event_types": ["lease.*"]}).json()["data"]
            wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub['id']}").json()["data"]["state"] == "valid")
            posted = time.time()
            r = c.post("/v1/events/batch", json={"events": [{"action": "lease.x", "metadata": {"i": i}}
                                                            for i in range(40)]})
            ids = {e["id"] for e in r.json()["data"]}
            wait_until(lambda: {x.json["event"]["id"] for x in rx.received("/lease")} == ids, timeout=30,
                       message="all 40 delivered, the lost one too")
            time.sleep(2.0)  # past another lease: a row reclaimed by mistake would be sent again by now
            got = rx.received("/lease")
            assert len(got) == 40, f"{len(got) - 40} deliveries sent twice"
            assert len({x.webhook_id for x in got}) == 40
            # the lost one is the last to arrive, after its lease ran out
            last = max(got, key=lambda x: x.at)
            assert last.at - posted >= 1.5
            attempts = c.get(f"/v1/events/{last.json['event']['id']}/attempts").json()["data"]
            assert [(a["status"], a["attempt"], a["message_id"]) for a in attempts] == [
                ("success", 1, last.webhook_id)]  # same message, same webhook-id, one attempt
            pending = c.get(f"/v1/event_subscriptions/{sub['id']}/attempts", params={"status": "sending"}).json()
            assert pending["data"] == []
        assert srv.proc.pid == pid and srv.proc.poll() is None and srv.restarts == 0  # no restart
        log = srv.log_text()
        assert "test fault: a delivery was dropped in memory" in log
        assert "whose lease ran out were made due again" in log
    finally:
        rx.close()


def test_the_hand_off_budget_stays_exact_after_a_failed_read():
    """The writer hands off at most handoff_limit deliveries: handed - taken must be exactly
    what waits in memory. A failed batch read puts its items back; they must not be counted
    as taken twice (which let the budget grow past its limit)."""
    service = DeliveryService(load_config(None, environ={}))

    class Storage:
        calls = 0

        async def load_for_send(self, batch):
            Storage.calls += 1
            if Storage.calls == 1:
                raise RuntimeError("the reader failed")
            return {i.message_id for i in batch}, {}

    async def main():
        service.storage = Storage()
        items = [OpenItem(f"whd_{i:026d}", "sub_a", None, "webhook.test", None, "test", f"atm_{i}", 1, 0, 0, True)
                 for i in range(5)]
        service.ready["sub_a"] = deque(items)
        service._maybe_load()
        assert service._taken == 5 and service._loading == items
        await service._load_task  # fails: the items go back to `ready`
        assert service._taken == 0 and list(service.ready["sub_a"]) == items and service._loading == []
        assert service.held_ids() == {i.message_id for i in items}
        service._maybe_load()
        await service._load_task
        assert service._taken == 5 and service._loaded_total == 5
        assert not service.ready

    asyncio.run(main())


def test_a_failed_writer_op_leaves_nothing_queued_in_memory(tmp_path):
    """The writer rolls a failed op back to its SAVEPOINT; the deliveries, state-change log
    lines and jobs it noted for after the COMMIT must be dropped with it (and the hand-off
    count with them), or the loop would chase rows that do not exist."""
    from recalled_lite.delivery.signing import generate_secret
    from recalled_lite.storage.sqlite.store import SqliteStore
    from recalled_lite.storage.webhook_base import NewSubscription, RetryPolicy

    store = SqliteStore(tmp_path / "u.db", secret=b"s" * 64)
    try:
        storage = store.webhook_storage(RetryPolicy((1.0,), 0.0, 10**9, 60_000), handoff_limit=100)
        store.write_sync(storage._attach)
        sub = store.write_sync(storage._create_subscription, NewSubscription(
            url="http://127.0.0.1:9/x", description="", event_types=[], organization=None, disabled=False,
            secret=generate_secret()))
        sink: list = []
        storage.sink = lambda subs, items, due, jobs: sink.append((items, jobs))
        storage._on_commit()
        sink.clear()
        handed = storage.handed

        def doomed(conn):
            storage._queue_test(conn, sub.id, 1)
            storage._set_state(conn, sub.id, "invalid", "test", 1)
            storage._insert_job(conn, "replay_missing", sub.id, 0, None, 1)
            raise RuntimeError("a bug in the op")

        with pytest.raises(RuntimeError):
            store.write_sync(storage._undoable(doomed))
        assert storage.handed == handed and storage._handoff == [] and storage._new_jobs == []
        assert storage._state_log == [] and storage.subs[sub.id].state == "new"
        storage._on_commit()
        assert sink == []
        assert store._conn.execute("SELECT count(*) FROM webhook_jobs").fetchone()[0] == 0
    finally:
        store.close()
