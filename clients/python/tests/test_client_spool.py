"""emit() never loses what it accepted: against the real server on loopback.

Must-show 1 (server down, then flush), 5 (dead letters never block the events behind them)
and 6 (each runs with the sync and the async client), plus the other refusals the sender
must tell apart: a foreign organization (403), a wrong key (401, then retry-dead), the
monthly quota (429 PLAN_LIMIT_REACHED, never retried) and the rate limit (429
RATE_LIMITED, retried after Retry-After).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from recalled import SpoolConfig

from .harness import Driver, spool_rows, tag, wait_until


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        value = {"n": value}
    return value


def test_emit_while_the_server_is_down_then_flush_stores_exactly_every_event(mode, make_server, spool_path):
    srv = make_server(start=False)  # its port is known, nothing listens on it yet
    org = f"org_down_{tag()}"
    driver = Driver(mode, api_key=srv.key, base_url=srv.url, spool=SpoolConfig(path=spool_path))
    try:
        keys = [driver.emit(action="down.emitted", organization=org, metadata={"i": i}) for i in range(1000)]
        assert len(set(keys)) == 1000
        # The sender did try, and failed: every event is still in the spool, with an attempt.
        wait_until(lambda: spool_rows(spool_path, "SELECT COUNT(*) FROM outbox WHERE attempts > 0")[0][0] > 0,
                   message="a failed attempt recorded")
        assert spool_rows(spool_path, "SELECT COUNT(*) FROM outbox")[0][0] == 1000

        srv.start()
        assert driver.flush(60) == 0
        stored = srv.events_of(org)
        assert len(stored) == 1000
        assert sorted(e["metadata"]["i"] for e in stored) == list(range(1000))
        assert {e["idempotencyKey"] for e in stored} == set(keys)
        assert spool_rows(spool_path, "SELECT COUNT(*) FROM outbox")[0][0] == 0
        assert spool_rows(spool_path, "SELECT COUNT(*) FROM dead_letters")[0][0] == 0
    finally:
        driver.close()


def test_refused_events_become_dead_letters_and_never_block_the_others(mode, make_server, spool_path):
    srv = make_server(start=False)  # down while emitting, so all of them go out in one batch
    org = f"org_dead_{tag()}"
    drops: list[tuple[dict[str, Any], str, Any]] = []
    delivered: list[Any] = []
    config = SpoolConfig(path=spool_path, on_drop=lambda e, reason, err: drops.append((e, reason, err)),
                         on_delivered=lambda e, stored: delivered.append((e, stored)))
    driver = Driver(mode, api_key=srv.key, base_url=srv.url, spool=config)
    bad = {
        5: {"action": "x" * 300},                              # 400, listed at its index
        10: {"action": "dead.big", "metadata": {"blob": "b" * 40_000}},  # metadata over 32 KiB
        15: {"action": "dead.deep", "metadata": _nested(40)},   # refused before decoding: no index
    }
    try:
        for i in range(20):
            fields = bad.get(i, {"action": "dead.good"})
            metadata = {**fields.get("metadata", {}), "i": i}
            driver.emit(**{**fields, "organization": org, "metadata": metadata})
        srv.start()
        assert driver.flush(60) == 0

        stored = srv.events_of(org)
        assert sorted(e["metadata"]["i"] for e in stored) == [i for i in range(20) if i not in bad]
        letters = driver.dead_letters()
        assert sorted(letter.event["metadata"]["i"] for letter in letters) == sorted(bad)
        for letter in letters:
            assert letter.status == 400 and letter.code == "VALIDATION_ERROR", letter
            assert letter.message
            assert letter.event["organization"] == org
        by_i = {letter.event["metadata"]["i"]: letter for letter in letters}
        assert any(e.get("field") == "action" for e in by_i[5].details["errors"])
        assert sorted(e[0]["metadata"]["i"] for e in drops) == sorted(bad)
        assert {reason for _, reason, _ in drops} == {"dead_letter"}
        assert all(err.code == "VALIDATION_ERROR" for _, _, err in drops)
        assert sorted(stored_event.raw["metadata"]["i"] for _, stored_event in delivered) == \
            [i for i in range(20) if i not in bad]
    finally:
        driver.close()


def test_a_foreign_organization_is_dead_lettered_alone(mode, server, spool_path):
    org, other = f"org_bound_{tag()}", f"org_foreign_{tag()}"
    bound_key = server.create_key(["events:write"], organization=org)
    driver = Driver(mode, api_key=bound_key, base_url=server.url, spool=SpoolConfig(path=spool_path))
    try:
        # Written with the sender held back, so that both organizations share a batch.
        db_config = SpoolConfig(path=spool_path)
        from recalled.spool.store import SpoolDB
        from recalled._settings import destination_fingerprint
        from recalled._wire import dumps

        db = SpoolDB(db_config.resolved_path())
        destination = destination_fingerprint(server.url, bound_key)
        for i in range(12):
            body = {"action": "bound.x", "organization": other if i % 4 == 0 else org,
                    "metadata": {"i": i}, "idempotency_key": f"k-{org}-{i}"}
            db.enqueue(destination, dumps(body), max_rows=1000, max_bytes=10**7, drop_oldest=False)
        db.close()
        assert driver.flush(60) == 0
        assert sorted(e["metadata"]["i"] for e in server.events_of(org)) == [i for i in range(12) if i % 4]
        letters = driver.dead_letters()
        assert sorted(letter.event["metadata"]["i"] for letter in letters) == [0, 4, 8]
        assert {letter.code for letter in letters} == {"FORBIDDEN"}
    finally:
        driver.close()


def test_a_refused_key_dead_letters_everything_and_retry_dead_retargets(server, spool_path):
    org = f"org_badkey_{tag()}"
    wrong = "rec_live_zzzzzzzz_" + "q" * 32
    driver = Driver("sync", api_key=wrong, base_url=server.url, spool=SpoolConfig(path=spool_path))
    try:
        for i in range(5):
            driver.emit(action="badkey.x", organization=org, metadata={"i": i})
        assert driver.flush(30) == 0
        letters = driver.dead_letters()
        assert len(letters) == 5 and {letter.code for letter in letters} == {"INVALID_API_KEY"}
        assert {letter.status for letter in letters} == {401}
        assert server.events_of(org) == []
    finally:
        driver.close()

    # The operator fixes the key, then requeues the dead letters for the new key.
    env = {"RECALLED_API_KEY": server.key, "RECALLED_BASE_URL": server.url}
    status = _cli("status", "--path", str(spool_path), env=env)
    assert "dead letters 5" in status.stdout and "INVALID_API_KEY" in status.stdout
    retry = _cli("retry-dead", "--path", str(spool_path), "--retarget", env=env)
    assert "requeued 5" in retry.stdout
    fixed = Driver("sync", api_key=server.key, base_url=server.url, spool=SpoolConfig(path=spool_path))
    try:
        assert fixed.flush(30) == 0
        assert sorted(e["metadata"]["i"] for e in server.events_of(org)) == list(range(5))
        assert fixed.dead_letters() == []
    finally:
        fixed.close()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
    full.update(env)
    done = subprocess.run([sys.executable, "-m", "recalled", "spool", *args], env=full,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


QUOTA_CONFIG = """
[limits]
monthly_events_default = 0
[limits.monthly_events]
{org} = 3
"""


def test_plan_limit_is_not_retried(make_server, spool_path):
    org = f"org_quota_{tag()}"
    srv = make_server(config_text=QUOTA_CONFIG.format(org=org))
    driver = Driver("sync", api_key=srv.key, base_url=srv.url, spool=SpoolConfig(path=spool_path))
    try:
        for i in range(3):
            driver.emit(action="quota.fits", organization=org, metadata={"i": i})
        assert driver.flush(30) == 0
        driver.emit(action="quota.over", organization=org, metadata={"i": 3})
        assert driver.flush(30) == 0  # dead-lettered at once, not waiting for next month
        letters = driver.dead_letters()
        assert [letter.event["metadata"]["i"] for letter in letters] == [3]
        assert letters[0].status == 429 and letters[0].code == "PLAN_LIMIT_REACHED"
        assert letters[0].attempts == 1
        assert len(srv.events_of(org)) == 3
    finally:
        driver.close()


RATE_CONFIG = """
[limits]
rate_limit_per_second = 1.0
rate_limit_burst = 1
[limits.keys.clienttt]   # the admin key the test counts with is not limited
per_second = 0.0
"""


def test_rate_limited_batches_wait_for_retry_after_then_go_through(make_server, spool_path):
    srv = make_server(config_text=RATE_CONFIG)
    org = f"org_rate_{tag()}"
    errors: list[Any] = []
    config = SpoolConfig(path=spool_path, max_batch_events=2, on_error=lambda err, e: errors.append(err))
    writer = srv.create_key(["events:write"])
    driver = Driver("sync", api_key=writer, base_url=srv.url, spool=config)
    try:
        for i in range(6):
            driver.emit(action="rate.x", organization=org, metadata={"i": i})
        assert driver.flush(60) == 0
        assert sorted(e["metadata"]["i"] for e in srv.events_of(org)) == list(range(6))
        # With one request per second allowed, some batches met a 429 and were retried.
        assert any(err.code == "RATE_LIMITED" and err.retry_after for err in errors), errors
        assert driver.dead_letters() == []
    finally:
        driver.close()


def test_callbacks_run_and_a_raising_callback_does_not_stop_delivery(server, spool_path):
    org = f"org_cb_{tag()}"
    seen = threading.Event()
    got: list[Any] = []

    def explode(event: dict[str, Any], stored: Any) -> None:
        got.append(stored)
        seen.set()
        raise RuntimeError("a user's bug")

    driver = Driver("sync", api_key=server.key, base_url=server.url,
                    spool=SpoolConfig(path=spool_path, on_delivered=explode))
    try:
        for i in range(3):
            driver.emit(action="cb.x", organization=org, metadata={"i": i})
        assert driver.flush(30) == 0
        assert sorted(e.metadata["i"] for e in got) == [0, 1, 2]
        assert {e.organization for e in got} == {org}
    finally:
        driver.close()


def test_full_spool_raises_or_drops_the_oldest(server, tmp_path: Path):
    from recalled import SpoolFullError

    down = "http://127.0.0.1:9"  # nothing listens: the rows stay
    raising = Driver("sync", api_key=server.key, base_url=down,
                     spool=SpoolConfig(path=tmp_path / "raise.db", max_rows=3))
    try:
        for i in range(3):
            raising.emit(action="full.x", metadata={"i": i})
        with pytest.raises(SpoolFullError):
            raising.emit(action="full.x", metadata={"i": 3})
        assert spool_rows(tmp_path / "raise.db", "SELECT COUNT(*) FROM outbox")[0][0] == 3
    finally:
        raising.close()

    drops: list[tuple[dict[str, Any], str]] = []
    dropping = Driver("sync", api_key=server.key, base_url=down,
                      spool=SpoolConfig(path=tmp_path / "drop.db", max_rows=3, when_full="drop_oldest",
                                        on_drop=lambda e, reason, err: drops.append((e, reason))))
    try:
        for i in range(5):
            dropping.emit(action="full.x", metadata={"i": i})
        kept = [json.loads(b)["metadata"]["i"] for (b,) in
                spool_rows(tmp_path / "drop.db", "SELECT body FROM outbox ORDER BY id")]
        assert kept == [2, 3, 4]
        assert [(e["metadata"]["i"], reason) for e, reason in drops] == [(0, "spool_full"), (1, "spool_full")]
    finally:
        dropping.close()


def test_many_threads_emit_through_one_client(server, spool_path):
    org = f"org_threads_{tag()}"
    driver = Driver("sync", api_key=server.key, base_url=server.url, spool=SpoolConfig(path=spool_path))
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(50):
                driver.emit(action="threads.x", organization=org, metadata={"worker": worker, "i": i})
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures
        assert driver.flush(60) == 0
        pairs = sorted((e["metadata"]["worker"], e["metadata"]["i"]) for e in server.events_of(org))
        assert pairs == [(w, i) for w in range(8) for i in range(50)]
    finally:
        driver.close()


def test_flush_on_a_client_that_never_emitted_creates_nothing(server, tmp_path):
    path = tmp_path / "never" / "spool.db"
    driver = Driver("sync", api_key=server.key, base_url=server.url, spool=SpoolConfig(path=path))
    try:
        assert driver.flush(5) == 0
        assert driver.client.events.queue_size() == 0
        assert not path.exists()
    finally:
        driver.close()


SMALL_BODY_CONFIG = """
[server]
max_request_bytes = 100000
"""


def test_a_batch_over_the_servers_body_limit_is_split_until_it_fits(mode, make_server, spool_path, caplog):
    caplog.set_level(logging.INFO, logger="recalled.spool")
    srv = make_server(config_text=SMALL_BODY_CONFIG, start=False)
    org = f"org_split_{tag()}"
    driver = Driver(mode, api_key=srv.key, base_url=srv.url, spool=SpoolConfig(path=spool_path))
    try:
        # 40 events of ~20 KB: one 800 KB batch, eight times what this server takes at once.
        for i in range(40):
            driver.emit(action="split.x", organization=org, metadata={"i": i, "pad": "p" * 20_000})
        srv.start()
        assert driver.flush(60) == 0
        assert sorted(e["metadata"]["i"] for e in srv.events_of(org)) == list(range(40))
        splits = [r.getMessage() for r in caplog.records if "in halves" in r.getMessage()]
        assert splits and all("REQUEST_TOO_LARGE" in m for m in splits)  # it met the limit, split around it
        assert driver.dead_letters() == []
    finally:
        driver.close()
