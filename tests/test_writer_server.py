"""The single writer on the real server: a constraint failure fails only its request, the server
keeps writing (and chaining) when another process appends and its state reload fails, and writes
racing a SIGTERM are all answered, every 2xx stored."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time

import httpx
import msgspec
import pytest

from recalled_lite.auth import new_key_record
from recalled_lite.config import EventsConfig
from recalled_lite.intake import prepare_event
from recalled_lite.schemas import EventIn
from recalled_lite.storage.sqlite.store import AppendEvents, SqliteStore

from webhook_receiver import Receiver, wait_until

POISON = "poison.pill"


def metric(c: httpx.Client, name: str) -> int | None:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


def test_a_constraint_failure_fails_only_its_request_in_a_shared_group(make_server):
    srv = make_server("poison", args=["--dev"], config_text="[database]\nbusy_timeout_ms = 15000\n")
    srv.stop()
    # The constraint fails inside the webhook intake hook, after the event rows were inserted
    # and after the hook noted the delivery in memory: the whole op must be undone, memory too.
    if srv.on_postgres:
        import pg_support

        pg_support.execute(srv.db_location, f"""
            CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                IF (SELECT action FROM events WHERE seq = NEW.event_seq) = '{POISON}' THEN
                    RAISE EXCEPTION 'poisoned event';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER poison BEFORE INSERT ON webhook_messages FOR EACH ROW EXECUTE FUNCTION poison();""")
    else:
        conn = sqlite3.connect(srv.db_path)
        conn.execute("CREATE TRIGGER poison BEFORE INSERT ON webhook_messages WHEN "
                     f"(SELECT action FROM events WHERE seq = NEW.event_seq) = '{POISON}' "
                     "BEGIN SELECT RAISE(ABORT, 'poisoned event'); END")
        conn.commit()
        conn.close()
    srv.start()
    receiver = Receiver()
    try:
        with srv.client() as c:
            # Every event is queued for this webhook inside its op: a rolled-back op must not
            # leave a hand-off behind (a delivery of a message that does not exist).
            sub = c.post("/v1/event_subscriptions", json={"url": receiver.url("/hook")}).json()["data"]
            wait_until(lambda: c.get(f"/v1/event_subscriptions/{sub['id']}").json()["data"]["state"]
                       == "valid", message="subscription valid")
            base = c.get("/readyz").json()["data"]["seq"]
            groups_before = metric(c, "recalled_writer_groups_total")
            ops_before = metric(c, "recalled_writer_ops_total")
        bodies = [{"action": POISON if i % 6 == 3 else f"good.{i}"} for i in range(30)]

        async def fire():
            async with srv.async_client() as c:
                return await asyncio.gather(*(c.post("/v1/events", json=b) for b in bodies))

        # Hold the write lock while the requests arrive, so they queue and share write groups.
        outsider = srv.hold_write_lock()
        releaser = threading.Timer(1.0, outsider.release)
        releaser.start()
        responses = asyncio.run(fire())
        releaser.join()

        for body, r in zip(bodies, responses):
            if body["action"] == POISON:
                assert r.status_code == 500, r.text
                assert r.json()["error"]["code"] == "DATABASE_ERROR" and r.headers.get("x-request-id")
            else:
                assert r.status_code == 200, r.text
        good = [r.json()["data"] for r in responses if r.status_code == 200]
        # After the server's own audit events (the bootstrap key, the subscription): gap-free.
        assert sorted(e["seq"] for e in good) == list(range(base + 1, base + 26))
        with srv.client() as c:
            verify = c.get("/v1/events/verify").json()["data"]
            assert verify["valid"] is True and verify["checked"] == base + 25
            groups, ops = metric(c, "recalled_writer_groups_total"), metric(c, "recalled_writer_ops_total")
        if groups is not None and groups_before is not None:
            # Fewer groups than requests: poisoned and good requests shared groups.
            assert ops - ops_before >= 30 and groups - groups_before < 30
        # Each stored event is delivered once, under one webhook-id; nothing else is.
        wait_until(lambda: len(receiver.received("/hook")) >= 25, timeout=30, message="25 deliveries")
        time.sleep(1.0)
        deliveries = receiver.received("/hook")
        delivered = sorted(d.json["event"]["id"] for d in deliveries)
        assert delivered == sorted(e["id"] for e in good)
        assert len({d.webhook_id for d in deliveries}) == 25
    finally:
        receiver.close()


def _prepared(action: str):
    _, key = new_key_record("k", frozenset({"admin"}), None)
    return prepare_event(msgspec.convert({"action": action}, EventIn), key, EventsConfig(), int(time.time() * 1000))


@pytest.mark.sqlite_only("a second in-process SqliteStore appends to the file; on PostgreSQL another "
                         "instance appending is tests/test_pg_instances.py")
def test_another_process_appends_and_a_corrupt_webhook_secret_breaks_the_reload(make_server):
    srv = make_server("foreign", args=["--dev"])
    secret = srv.secret_path.read_text().strip().encode()
    receiver = Receiver()
    try:
        with srv.client() as c:
            r = c.post("/v1/event_subscriptions", json={"url": receiver.url("/hook")})
            assert r.status_code == 201, r.text
            sub_id = r.json()["data"]["id"]
            first = c.post("/v1/events", json={"action": "server.first"}).json()["data"]
        # The sealed secret no longer opens (its base64 is cut short): reloading the
        # subscriptions raises, which is not a sqlite3.Error.
        conn = sqlite3.connect(srv.db_path)
        conn.execute("UPDATE webhook_subscriptions SET secret = substr(secret, 1, length(secret) - 7) || '%' "
                     "WHERE id = ?", (sub_id,))
        conn.commit()
        conn.close()
        # Another process (as the CLI will) appends to the chain beside the running server.
        other = SqliteStore(srv.db_path, secret=secret)
        try:
            (foreign,) = other.writer.run_sync(AppendEvents([_prepared("cli.appended")]))
        finally:
            other.close()
        assert foreign.event.seq == first["seq"] + 1
        with srv.client() as c:
            after = [c.post("/v1/events", json={"action": f"server.after.{i}"}) for i in range(3)]
            assert [r.status_code for r in after] == [200, 200, 200], after[0].text
            seqs = [r.json()["data"]["seq"] for r in after]
            assert seqs == [foreign.event.seq + 1 + i for i in range(3)]
            assert after[0].json()["data"]["prevHash"] == foreign.event.hash
            ready = c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["data"]["seq"] == seqs[-1]
            verify = c.get("/v1/events/verify").json()["data"]
            assert verify["valid"] is True and verify["checked"] == seqs[-1]
            # The broken row no longer raises out of the reload at all (delivery/sealing.py):
            # the subscription reports it, and nothing else notices.
            broken = c.get(f"/v1/event_subscriptions/{sub_id}").json()["data"]
            assert broken["secret_error"], broken
        assert "changed by another process" in srv.log_text()
    finally:
        receiver.close()


def test_writes_racing_a_sigterm_are_answered_and_every_2xx_is_stored(make_server):
    srv = make_server("sigterm_race", config_text="[database]\nbusy_timeout_ms = 20000\n")
    outcomes: dict[str, object] = {}

    def write(marker: str) -> None:
        try:
            with srv.client(timeout=30.0) as c:
                r = c.post("/v1/events", json={"action": "race.write", "metadata": {"m": marker}})
                outcomes[marker] = r.status_code
        except httpx.TransportError as exc:
            outcomes[marker] = exc

    # 60 writes reach the server and wait behind a held write lock; SIGTERM lands while they
    # wait, and 40 more race it; the lock goes a moment later.
    outsider = srv.hold_write_lock()
    in_flight = [threading.Thread(target=write, args=(f"in-{i}",)) for i in range(60)]
    racing = [threading.Thread(target=write, args=(f"race-{i}",)) for i in range(40)]
    for t in in_flight:
        t.start()
    time.sleep(1.5)
    srv.proc.send_signal(signal.SIGTERM)
    for t in racing:
        t.start()
    time.sleep(0.3)
    outsider.release()
    for t in in_flight + racing:
        t.join(60)
    assert not any(t.is_alive() for t in in_flight + racing), "a write never returned"
    assert srv.proc.wait(60) in (0, -15)
    assert "database closed cleanly" in srv.log_text()

    assert len(outcomes) == 100
    for marker, outcome in outcomes.items():
        if marker.startswith("in-"):
            assert outcome in (200, 503), (marker, outcome)  # it had reached the server
        else:  # raced the listener closing: refused at the door, or answered
            assert outcome in (200, 503) or isinstance(outcome, httpx.TransportError), (marker, outcome)
    acked = {m for m, o in outcomes.items() if o == 200}
    assert {f"in-{i}" for i in range(60)} <= acked | {m for m, o in outcomes.items() if o == 503}

    srv.start()
    with srv.client() as c:
        stored = [e["metadata"]["m"] for e in c.get("/v1/exports", params={"format": "json"}).json()["data"]
                  if e["action"] == "race.write"]  # not the server's own audit events
        assert c.get("/v1/events/verify").json()["data"]["valid"] is True
    assert acked <= set(stored)
    assert len(stored) == len(set(stored))  # nothing stored twice
