"""The PostgreSQL webhook SQL (storage/postgres/webhook*.py) against a real, fresh database:
two WebhookStorage instances on one database, as two servers would hold them. The store
around them is tests/pg_webhook_harness.py (hand-inserted events, one connection each);
the server-level tests are tests/test_pg_webhooks.py."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import pytest

from pg_support import create_database, drop_database
from pg_webhook_harness import HarnessStore, migrated
from webhook_receiver import wait_until

from recalled_lite.storage.postgres import webhooks as pgw
from recalled_lite.storage.postgres.webhook_jobs import preview_job_count
from recalled_lite.storage.postgres.webhook_notify import parse, payloads
from recalled_lite.storage.webhook_base import AttemptOutcome, NewSubscription, RetryPolicy

URL = "http://127.0.0.1:9/hook"
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def policy(lease_ms: int = 60_000) -> RetryPolicy:
    return RetryPolicy(schedule=(0.05, 0.05, 0.05), jitter=0.0, disable_after_ms=10**9, lease_ms=lease_ms,
                       retest_enabled=False)


class Instance:
    """One 'server': a harness store and its WebhookStorage, with what the sink was told."""

    def __init__(self, url: str, *, lease_ms: int = 60_000, handoff_limit: int = 100) -> None:
        self.store = HarnessStore(url)
        self.wh = pgw.WebhookStorage(self.store, policy(lease_ms), handoff_limit=handoff_limit)
        self.lock = threading.Lock()
        self.told: list[tuple] = []
        self.wh.sink = self._sink
        self.wh.taken = lambda: len(self.items())  # what is handed off counts as taken at once

    def _sink(self, subs, items, due, jobs) -> None:
        with self.lock:
            self.told.append((subs, list(items), dict(due), list(jobs)))

    def items(self) -> list:
        with self.lock:
            return [i for _, items, _, _ in self.told for i in items]

    def due(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.lock:
            for _, _, due, _ in self.told:
                for sid, at in due.items():
                    out[sid] = min(at, out.get(sid, at))
        return out

    def jobs(self) -> list[str]:
        with self.lock:
            return [j for _, _, _, jobs in self.told for j in jobs]

    def close(self) -> None:
        self.wh.close()
        self.store.close()


@pytest.fixture
def db():
    url = create_database("wh")
    migrated(url)
    try:
        yield url
    finally:
        drop_database(url)


_LOOP: asyncio.AbstractEventLoop | None = None


@pytest.fixture
def pair(db):
    """Instances on one database, all driven from one event loop thread (as a server's
    writer ops are submitted from its loop); the listener threads call into it."""
    global _LOOP
    loop = _LOOP = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    made: list[Instance] = []

    def make(**kwargs) -> Instance:
        inst = Instance(db, **kwargs)
        run(inst.wh.attach())
        made.append(inst)
        return inst

    try:
        yield make
    finally:
        for inst in made:
            inst.wh.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        for inst in made:
            inst.store.close()
        loop.close()


def run(coro):
    assert _LOOP is not None
    return asyncio.run_coroutine_threadsafe(coro, _LOOP).result(10)


def append(inst: Instance, actions: list[str]):
    async def go():
        return inst.store.append(actions)
    return run(go())


def subscribe(inst: Instance, types=("order.*",)):
    return run(inst.wh.create_subscription(NewSubscription(url=URL, description="", event_types=list(types),
                                                           organization=None, disabled=False, secret=SECRET)))


def enable(inst: Instance, sid: str) -> None:
    """The subscription's test message (handed to `inst` at creation) passes: `valid`."""
    tests = [i for i in inst.items() if i.type == "webhook.test" and i.subscription_id == sid]
    if not tests:  # beyond the hand-off budget: claimed like any pending row
        tests, _ = run(inst.wh.claim([(sid, 1)]))
    (test,) = tests
    run(inst.wh.apply_results([outcome(test)]))
    assert inst.wh.subs[sid].state == "valid"


def rows(url: str, sql: str, *args):
    import psycopg
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def outcome(item, status=200):
    return AttemptOutcome(item, True, URL, status, "", None, 5, int(time.time() * 1000), None)


def test_intake_hands_off_up_to_the_budget_and_the_rest_waits_pending_for_any_instance(pair, db):
    a = pair(handoff_limit=3)
    b = pair()
    sub = subscribe(a)
    enable(a, sub.id)
    append(a, [f"order.{i}" for i in range(5)] + ["user.created"])
    handed = [i for i in a.items() if i.type == "event.created"]
    assert len(handed) == 3 and all(i.handoff and i.attempt == 1 for i in handed)
    got = rows(db, "SELECT status, lease_owner, count(*) FROM webhook_messages WHERE type = 'event.created' "
                   "GROUP BY status, lease_owner ORDER BY status")
    assert got == [("pending", None, 2), ("sending", a.wh.instance, 3)]
    # The other instance hears of the pending work through NOTIFY, and can claim it.
    wait_until(lambda: sub.id in b.due(), timeout=5, message="b told of a's pending rows")
    items, next_due = run(b.wh.claim([(sub.id, 10)]))
    assert len(items) == 2 and next_due[sub.id] is None
    assert {r[0] for r in rows(db, "SELECT lease_owner FROM webhook_messages WHERE status = 'sending'")} == {
        a.wh.instance, b.wh.instance}


def test_claims_of_two_instances_never_overlap_and_skip_locked_rows(pair, db):
    import psycopg

    a = pair(handoff_limit=0)
    b = pair(handoff_limit=0)
    sub = subscribe(a)
    enable(a, sub.id)
    append(a, [f"order.{i}" for i in range(8)])
    mine, _ = run(a.wh.claim([(sub.id, 4)]))
    # Two rows held by a transaction that is still open (a claim in flight elsewhere):
    # b skips them instead of waiting, and takes the two that are free.
    with psycopg.connect(db) as other:
        locked = [r[0] for r in other.execute(
            "SELECT id FROM webhook_messages WHERE status = 'pending' AND type = 'event.created' "
            "ORDER BY id LIMIT 2 FOR UPDATE").fetchall()]
        theirs, due = run(b.wh.claim([(sub.id, 10)]))
        assert len(theirs) == 2 and not {i.message_id for i in theirs} & set(locked)
        # the locked rows are due but not claimable now: look again shortly, not at once
        assert due[sub.id] > time.time() * 1000
    assert len(mine) == 4 and not {i.message_id for i in mine} & {i.message_id for i in theirs}
    rest, _ = run(b.wh.claim([(sub.id, 10)]))
    assert {i.message_id for i in rest} == set(locked)
    owners = rows(db, "SELECT lease_owner, count(*) FROM webhook_messages WHERE type = 'event.created' "
                      "GROUP BY lease_owner ORDER BY 2")
    assert sorted(owners, key=lambda r: r[1]) == [(a.wh.instance, 4), (b.wh.instance, 4)]


def test_webhook_ops_take_the_chain_head_lock_first(pair, db):
    """One lock order for every write group (webhooks.lock_order): an op on another instance
    waits for a group that holds the chain head instead of deadlocking with it later."""
    import psycopg

    a = pair()
    sub = subscribe(a)
    enable(a, sub.id)
    with psycopg.connect(db) as other:
        other.execute("SELECT 1 FROM chain_head WHERE id = 1 FOR UPDATE")
        future = asyncio.run_coroutine_threadsafe(a.wh.claim([(sub.id, 1)]), _LOOP)
        time.sleep(0.3)
        assert not future.done()  # waiting for the chain head
    assert future.result(5) == ([], {sub.id: None})


def test_a_dead_instances_leased_rows_are_taken_back_after_the_lease_with_the_same_ids(pair, db):
    a = pair(lease_ms=400)
    b = pair(lease_ms=400)
    sub = subscribe(a)
    enable(a, sub.id)
    append(a, ["order.1", "order.2"])
    held = [i for i in a.items() if i.type == "event.created"]
    assert len(held) == 2
    # a "dies": it never renews. Before the lease ends, b takes nothing.
    assert run(b.wh.reclaim_expired(frozenset())) == 0
    time.sleep(0.5)
    assert run(b.wh.reclaim_expired(frozenset())) == 2
    items, _ = run(b.wh.claim([(sub.id, 10)]))
    assert {(i.message_id, i.attempt_id, i.attempt) for i in items} == {
        (i.message_id, i.attempt_id, 1) for i in held}
    # a's late results no longer count: the rows are b's now.
    run(a.wh.apply_results([outcome(i) for i in held]))
    assert rows(db, "SELECT count(*) FROM webhook_attempts WHERE event_seq IS NOT NULL")[0][0] == 0
    live, _ = run(a.wh.load_for_send(held))
    assert live == set()
    run(b.wh.apply_results([outcome(i) for i in items]))
    assert rows(db, "SELECT status, count(*) FROM webhook_messages WHERE type = 'event.created' "
                    "GROUP BY status") == [("success", 2)]


def test_a_live_instance_renews_and_keeps_its_rows(pair, db):
    a = pair(lease_ms=400)
    b = pair(lease_ms=400)
    sub = subscribe(a)
    enable(a, sub.id)
    append(a, ["order.1"])
    held = [i.message_id for i in a.items() if i.type == "event.created"]
    for _ in range(4):
        time.sleep(0.15)
        run(a.wh.renew_leases(held))
        assert run(b.wh.reclaim_expired(frozenset())) == 0
        # a's own tick spares what it holds
        assert run(a.wh.reclaim_expired(frozenset(held))) == 0


def test_a_failed_attempt_is_retried_and_the_other_instance_hears_the_due_time(pair, db):
    a = pair()
    b = pair()
    sub = subscribe(a)
    enable(a, sub.id)
    append(a, ["order.1"])
    (item,) = [i for i in a.items() if i.type == "event.created"]
    run(a.wh.apply_results([outcome(item, 500)]))
    (row,) = rows(db, "SELECT status, attempts, run_attempts, lease_owner, next_attempt_at, attempt_id "
                      "FROM webhook_messages WHERE id = %s", item.message_id)
    assert row[:4] == ("pending", 1, 1, None) and row[5] != item.attempt_id
    assert rows(db, "SELECT id, status, response_status_code FROM webhook_attempts WHERE event_seq IS NOT NULL") == [
        (item.attempt_id, "failed", 500)]
    wait_until(lambda: b.due().get(sub.id) == row[4], timeout=5, message="b told of the retry's due time")
    time.sleep(max(row[4] / 1000 - time.time(), 0) + 0.01)
    items, _ = run(b.wh.claim([(sub.id, 10)]))
    assert [(i.message_id, i.attempt, i.attempt_id) for i in items] == [(item.message_id, 2, row[5])]


def test_a_subscription_change_elsewhere_is_matched_at_the_next_intake_even_without_notify(pair, db):
    a = pair()
    b = pair()
    b.wh.close()  # no listener: only the version check can tell b
    sub = subscribe(a)
    enable(a, sub.id)
    append(b, ["order.9"])
    assert [i.subscription_id for i in b.items() if i.type == "event.created"] == [sub.id]
    assert b.wh.subs[sub.id].state == "valid"


def test_the_loops_resync_reloads_subscriptions_changed_elsewhere_without_notify(pair, db):
    a = pair()
    b = pair()
    b.wh.close()  # no listener
    sub = subscribe(a)
    assert sub.id not in b.wh.subs
    run(b.wh.due_snapshot())  # what delivery/service.py runs every 30 s
    wait_until(lambda: sub.id in b.wh.subs, timeout=5, message="b reloaded")
    # ... and told its loop, which comes just after the reload (so it is waited for too)
    wait_until(lambda: any(s is not None and sub.id in s for s, *_ in list(b.told)), timeout=5,
               message="b's loop given the reloaded subscription")


def test_notify_makes_the_other_instance_reload_its_subscriptions(pair, db):
    a = pair()
    b = pair()
    sub = subscribe(a)
    # b reloads on the notice (through a write op of its own) and hands the loop the snapshot.
    wait_until(lambda: any(s is not None and sub.id in s for s, *_ in list(b.told)), timeout=5,
               message="b's loop given the new subscription")


def test_a_job_is_run_by_one_instance_and_adopted_when_its_lease_ends(pair, db):
    # A lease long enough that a loaded machine cannot let a's expire between its steps
    # (400 ms did, under a full test run), short enough to wait out.
    a = pair(lease_ms=3000)
    b = pair(lease_ms=3000)
    sub = subscribe(a)
    enable(a, sub.id)
    append(a, ["order.1", "order.2", "order.3"])
    with a.store.group() as conn:  # their retries ran out (what `recover` is for)
        conn.execute("UPDATE webhook_messages SET status = 'failed', next_attempt_at = NULL, lease_owner = NULL, "
                     "lease_until = NULL WHERE type = 'event.created'")
    job = run(a.wh.create_job("recover", sub.id, None, 0, None))
    job_id = job[0]
    assert job_id in a.jobs()
    assert run(b.wh.job_step(job_id, 1, 100)) == "done"  # a holds it
    assert rows(db, "SELECT status, scanned FROM webhook_jobs")[0] == ("running", 0)
    assert run(a.wh.job_step(job_id, 1, 100)) == "more"
    # a "dies"; after the lease, b's tick adopts the job and b finishes it.
    time.sleep(3.2)
    run(b.wh.reclaim_expired(frozenset()))
    assert job_id in b.jobs()
    while (step := run(b.wh.job_step(job_id, 1, 100))) == "more":
        pass
    assert step == "done"
    assert rows(db, "SELECT status, scanned, queued, lease_owner FROM webhook_jobs") == [("completed", 3, 3, None)]
    assert run(a.wh.job_step(job_id, 1, 100)) == "done"


def test_gauges_backlog_and_preview(pair, db):
    a = pair(handoff_limit=1)
    sub = subscribe(a)
    enable(a, sub.id)
    append(a, ["order.1", "order.2", "user.x"])
    deliveries, subscriptions = run(a.store.read(pgw.webhook_counts))
    assert deliveries == {"pending": 1, "sending": 1, "failed": 0}
    assert subscriptions == {"valid": 1}
    backlog = run(a.store.read(pgw.backlog_counts))
    assert backlog == {sub.id: 2}
    assert run(a.store.read(preview_job_count, "replay_missing", a.wh.subs[sub.id], 0, None,
                            int(time.time() * 1000))) == 0  # every matching event has a message


def test_notice_payloads_round_trip_and_stay_under_the_limit():
    (p,) = payloads("ins_a", {"sub_1": 5}, 7)
    assert parse("ins_b", p) == ({"sub_1": 5}, True, False)
    assert parse("ins_a", p) is None  # our own
    (big,) = payloads("ins_a", {f"sub_{i:026d}": i for i in range(500)}, None)
    assert len(big) < 8000 and parse("ins_b", big) == ({}, False, True)
    assert parse("ins_b", "not json") is None


def test_a_restarted_instance_takes_back_its_previous_runs_rows_at_once_a_namesake_does_not(pair, db):
    first = Instance(db, lease_ms=60_000)
    first.wh.instance = "ins_host/127.0.0.1:8080"  # what delivery/leases.instance_name gives a server
    run(first.wh.attach())
    sub = subscribe(first)
    enable(first, sub.id)
    append(first, ["order.1", "order.2"])
    held = {i.message_id for i in first.items() if i.type == "event.created"}
    # A second live process under the same name (a mistake) must not take them: it leases
    # under a random name instead.
    clash = Instance(db)
    clash.wh.instance = first.wh.instance
    run(clash.wh.attach())
    assert clash.wh.instance != first.wh.instance
    assert {r[0] for r in rows(db, "SELECT status FROM webhook_messages WHERE id = ANY(%s)", list(held))} == {"sending"}
    clash.close()
    # The first run dies (its connections close, its name is free); the restart takes its
    # rows back at once, not after the 60 s lease.
    first.wh.close()
    first.store.close()
    restart = Instance(db)
    restart.wh.instance = "ins_host/127.0.0.1:8080"
    _, due, _ = run(restart.wh.attach())
    try:
        assert restart.wh.instance == "ins_host/127.0.0.1:8080"
        assert due.get(sub.id) is not None
        items, _ = run(restart.wh.claim([(sub.id, 10)]))
        assert {i.message_id for i in items} == held
    finally:
        restart.close()


def test_a_graceful_stop_releases_what_it_holds_to_the_others(pair, db):
    a = pair()
    b = pair()
    sub = subscribe(a)
    enable(a, sub.id)
    append(a, ["order.1"])
    job = run(a.wh.create_job("replay_missing", sub.id, None, 0, None))
    run(a.wh.release())
    assert rows(db, "SELECT status, lease_owner FROM webhook_messages WHERE type = 'event.created'") == [
        ("pending", None)]
    assert rows(db, "SELECT lease_owner FROM webhook_jobs WHERE id = %s", job[0]) == [(None,)]
    wait_until(lambda: sub.id in b.due(), timeout=5, message="b told at once")
    items, _ = run(b.wh.claim([(sub.id, 10)]))
    assert len(items) == 1
    run(b.wh.reclaim_expired(frozenset()))
    assert job[0] in b.jobs()
