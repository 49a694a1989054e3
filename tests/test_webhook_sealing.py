"""Signing secrets sealed with an AEAD (sealed:v2, AES-256-GCM): rows written by the first
release (sealed:v1, or in clear) are upgraded once at start and still verify with the
reference `standardwebhooks` library; a tampered, unknown-format or cleartext row is then
refused with a clear error on that subscription only - it signs nothing, the server keeps
serving intake, /readyz stays truthful, and the other subscriptions keep delivering."""

from __future__ import annotations

import base64
import json
import sqlite3

import httpx
import standardwebhooks

from test_webhook_units import legacy_seal_v1
from webhook_receiver import Receiver, wait_until

from recalled_lite.delivery.signing import generate_secret


def write(srv, sql: str, *params) -> None:
    """Change a row behind the stopped server, on either backend."""
    if srv.on_postgres:
        import psycopg

        with psycopg.connect(srv.db_location, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s"), params)
        return
    conn = sqlite3.connect(srv.db_path, isolation_level=None)
    try:
        conn.execute(sql, params)
    finally:
        conn.close()


def server_secret(srv) -> bytes:
    return srv.secret_path.read_text().strip().encode("ascii")


def stored_secret(srv, sub_id):
    return srv.query("SELECT secret FROM webhook_subscriptions WHERE id = ?", sub_id)[0][0]


def set_secret(srv, sub_id, value):
    write(srv, "UPDATE webhook_subscriptions SET secret = ? WHERE id = ?", value, sub_id)


def deliver(c, rx, path, action, n=3):  # noqa: ARG001 - path names the receiver for readers
    r = c.post("/v1/events/batch", json={"events": [{"action": action, "metadata": {"i": i}} for i in range(n)]})
    assert r.status_code == 200, r.text
    ids = {e["id"] for e in r.json()["data"]}
    return ids


def received(rx, path):
    return {x.json["event"]["id"]: x for x in rx.received(path)}


def test_old_secrets_upgrade_and_bad_ones_are_refused_without_harm(make_server):
    rx = Receiver()
    try:
        srv = make_server("sealing", config_text="[webhooks]\nallow_private_destinations = true\n")
        secrets = {name: generate_secret() for name in "abcd"}
        subs = {}
        with srv.client() as c:
            for name, secret in secrets.items():
                r = c.post("/v1/event_subscriptions", json={"url": rx.url(f"/{name}"), "secret": secret,
                                                            "event_types": [f"seal.{name}"]})
                assert r.status_code == 201, r.text
                subs[name] = r.json()["data"]["id"]
                rx.verifiers[f"/{name}"] = {"standardwebhooks": standardwebhooks.Webhook(secret).verify}
            for sid in subs.values():
                wait_until(lambda sid=sid: c.get(f"/v1/event_subscriptions/{sid}").json()["data"]["state"] == "valid")
        assert all(stored_secret(srv, sid).startswith("sealed:v2:") for sid in subs.values())
        srv.stop()

        # -- a database as the first release left it: a v1 row, a cleartext row, no upgrade mark
        key = server_secret(srv)
        set_secret(srv, subs["a"], legacy_seal_v1(key, subs["a"], secrets["a"]))
        set_secret(srv, subs["b"], secrets["b"])
        write(srv, "DELETE FROM meta WHERE key = 'webhook_secret_seal'")
        srv.start()
        for name in "ab":
            assert stored_secret(srv, subs[name]).startswith("sealed:v2:")
        assert '"upgraded":2' in srv.log_text().replace(" ", "")
        with srv.client() as c:
            for name in "ab":
                got = c.get(f"/v1/event_subscriptions/{subs[name]}/secret").json()["data"]
                assert got == {"secret": secrets[name], "previous_secret_expires_at": None, "secret_error": None}
                ids = deliver(c, rx, f"/{name}", f"seal.{name}")
                wait_until(lambda name=name, ids=ids: ids <= set(received(rx, f"/{name}")), timeout=15)
                assert all(received(rx, f"/{name}")[e].verified == {"standardwebhooks": True} for e in ids)
        srv.stop()

        # -- after the upgrade: tampered, unknown-format and cleartext rows are refused
        sealed_c = stored_secret(srv, subs["c"])
        raw = bytearray(base64.b64decode(sealed_c[len("sealed:v2:"):]))
        raw[-1] ^= 0x01
        set_secret(srv, subs["c"], "sealed:v2:" + base64.b64encode(bytes(raw)).decode())
        set_secret(srv, subs["d"], secrets["d"])  # planted in clear
        srv.start()
        assert httpx.get(srv.url + "/readyz").status_code == 200
        with srv.client() as c:
            c_sub = c.get(f"/v1/event_subscriptions/{subs['c']}").json()["data"]
            d_sub = c.get(f"/v1/event_subscriptions/{subs['d']}").json()["data"]
            assert "failed its integrity check" in c_sub["secret_error"] and "rotate" in c_sub["secret_error"]
            assert "not sealed" in d_sub["secret_error"]
            assert c.get(f"/v1/event_subscriptions/{subs['a']}").json()["data"]["secret_error"] is None
            secret_view = c.get(f"/v1/event_subscriptions/{subs['c']}/secret").json()["data"]
            assert secret_view["secret"] is None and "integrity" in secret_view["secret_error"]

            before = {name: len(rx.received(f"/{name}")) for name in "cd"}
            ok_ids = deliver(c, rx, "/a", "seal.a")
            bad_c = deliver(c, rx, "/c", "seal.c")
            deliver(c, rx, "/d", "seal.d")
            wait_until(lambda: ok_ids <= set(received(rx, "/a")), timeout=15, message="a keeps delivering")
            assert all(received(rx, "/a")[e].verified == {"standardwebhooks": True} for e in ok_ids)

            def refused(sid):
                data = c.get(f"/v1/event_subscriptions/{sid}/attempts", params={"limit": 50}).json()["data"]
                return [a for a in data if a["trigger"] == "scheduled" and a["status"] == "failed"] or None
            attempts = wait_until(lambda: refused(subs["c"]), timeout=15)
            assert {a["event_id"] for a in attempts} <= bad_c
            assert all(a["error"].startswith("not sent: ") and "integrity check" in a["error"]
                       and a["response_status_code"] is None for a in attempts)
            wait_until(lambda: refused(subs["d"]), timeout=15)
            assert {name: len(rx.received(f"/{name}")) for name in "cd"} == before  # nothing signed wrongly
            assert httpx.get(srv.url + "/readyz").status_code == 200
            assert c.post("/v1/events", json={"action": "seal.other"}).status_code == 200

            # rotating repairs it
            rotated = c.post(f"/v1/event_subscriptions/{subs['c']}/secret/rotate").json()["data"]
            assert rotated["secret"].startswith("whsec_") and rotated["secret_error"] is None
            assert rotated["previous_secret_expires_at"] is None  # the broken one does not keep signing
            rx.verifiers["/c"] = {"standardwebhooks": standardwebhooks.Webhook(rotated["secret"]).verify}
            ids = deliver(c, rx, "/c", "seal.c")
            wait_until(lambda: ids <= set(received(rx, "/c")), timeout=15, message="c delivers again")
            assert all(received(rx, "/c")[e].verified == {"standardwebhooks": True} for e in ids)
        log = srv.log_text()
        assert "Traceback" not in log
        errors = [json.loads(line) for line in log.splitlines()
                  if line.startswith("{") and "unusable signing secret" in line]
        assert errors and sorted(errors[-1]["subscription_ids"]) == sorted([subs["c"], subs["d"]])
    finally:
        rx.close()


def test_unreadable_rows_never_raise_out_of_the_writers_reload(tmp_path):
    """The first release let a malformed sealed secret raise binascii.Error out of the
    writer's reload_state (run after a failed write group), killing the writer thread.
    Now every bad row becomes a subscription that says what is wrong; the rest carry on."""
    from recalled_lite.storage.sqlite.store import SqliteStore
    from recalled_lite.storage.webhook_base import NewSubscription, RetryPolicy

    store = SqliteStore(tmp_path / "bad.db", secret=b"s" * 64)
    try:
        storage = store.webhook_storage(RetryPolicy((1.0,), 0.0, 10**9, 60_000), handoff_limit=10)
        store.write_sync(storage._attach)
        ids = [store.write_sync(storage._create_subscription, NewSubscription(
            url=f"http://127.0.0.1:9/{n}", description="", event_types=["a.*"], organization=None,
            disabled=False, secret=generate_secret())).id for n in range(3)]
        conn = store._conn
        conn.execute("UPDATE webhook_subscriptions SET secret = 'sealed:v2:@@not base64@@' WHERE id = ?", (ids[0],))
        conn.execute("UPDATE webhook_subscriptions SET event_types = '[not json' WHERE id = ?", (ids[1],))
        store.writer.reload_state(conn)  # what the writer runs after a failed group: must not raise
        subs = storage.subs
        assert "damaged" in subs[ids[0]].secret_error and subs[ids[0]].secret == ""
        assert "unreadable" in subs[ids[1]].secret_error and not subs[ids[1]].receiving
        assert subs[ids[2]].secret_error is None and subs[ids[2]].secret.startswith("whsec_")
        # a broken secret still queues (its deliveries fail visibly, recover sends them once
        # rotated); an unreadable row receives nothing
        assert sorted(storage.index.match(None, "a.x")) == sorted([ids[0], ids[2]])
    finally:
        store.close()
