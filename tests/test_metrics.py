"""GET /metrics: parseable Prometheus text with the histograms and gauges dashboards need."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from recalled_lite import __version__
from recalled_lite.app import create_app
from recalled_lite.config import Config
from recalled_lite.metrics import UNMATCHED_ROUTE, route_template
from recalled_lite.storage.sqlite import gauges
from recalled_lite.storage.sqlite.store import SqliteStore


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family, suffix: str = "") -> list:
    return [s for s in family.samples if s.name == family.name + suffix]


def test_metrics_parse_and_carry_every_histogram_after_traffic(make_server):
    from audit_events import audit_events
    from webhook_receiver import Receiver, wait_until

    srv = make_server("metrics-histograms", args=["--dev"])
    receiver = Receiver()
    try:
        with srv.client() as c:
            sub = c.post("/v1/event_subscriptions", json={"url": receiver.url(), "event_types": []})
            assert sub.status_code in (200, 201), sub.text
            ids = [c.post("/v1/events", json={"action": "metric.h"}).json()["data"]["id"] for _ in range(4)]
            for event_id in ids:
                assert c.get(f"/v1/events/{event_id}").status_code == 200
            for n in range(30):  # a scanner: each path different, all one label value
                assert c.get(f"/no/such/path/{n}").status_code == 404
            wait_until(lambda: len(receiver.received()) >= 4, message="4 deliveries")

            def attempts_observed():
                found = families(c.get("/metrics").text)
                family = found["recalled_webhook_attempt_duration_seconds"]
                count = sum(s.value for s in samples(family, "_count") if s.labels.get("outcome") == "success")
                return found if count >= 4 else None

            found = wait_until(attempts_observed, message="attempt durations in /metrics")
            server_events = len(audit_events(c))  # the bootstrap key and the subscription
    finally:
        receiver.close()

    requests = found["recalled_http_request_duration_seconds"]
    assert requests.type == "histogram"
    counts = {(s.labels["route"], s.labels["status_class"]): s.value for s in samples(requests, "_count")}
    assert counts[("/v1/events/{event_id}", "2xx")] == 4
    assert counts[("/v1/events", "2xx")] >= 4
    assert counts[(UNMATCHED_ROUTE, "4xx")] == 30
    routes = {route for route, _ in counts}
    assert not any(event_id in route for route in routes for event_id in ids), routes
    assert not any(route.startswith("/no/such") for route in routes), routes
    buckets = [s for s in samples(requests, "_bucket") if s.labels["route"] == "/v1/events/{event_id}"]
    assert buckets and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 4

    for name in ("recalled_writer_group_ops", "recalled_writer_commit_duration_seconds"):
        family = found[name]
        assert family.type == "histogram"
        assert samples(family, "_count")[0].value >= 5, name  # 4 events + the subscription
    group_sum = samples(found["recalled_writer_group_ops"], "_sum")[0].value
    assert group_sum >= samples(found["recalled_writer_group_ops"], "_count")[0].value  # >= 1 op per group
    attempts = found["recalled_webhook_attempt_duration_seconds"]
    assert attempts.type == "histogram"
    assert all(s.value >= 0 for s in samples(attempts, "_sum"))

    # Gauges for alerts.
    backlog = {s.labels["status"]: s.value for s in found["recalled_webhook_backlog_messages"].samples}
    assert set(backlog) >= {"pending", "sending", "failed"}
    states = {s.labels["state"]: s.value for s in found["recalled_webhook_subscriptions"].samples}
    assert states["valid"] == 1 and states["invalid"] == 0
    sizes = {s.labels["file"]: s.value for s in found["recalled_database_size_bytes"].samples}
    assert sizes["database"] > 0 and "wal" in sizes
    build = found["recalled_build_info"].samples[0]
    engine = ("postgresql", srv.query("SHOW server_version")[0][0].split()[0]) if srv.on_postgres else ("sqlite", sqlite3.sqlite_version)
    assert build.labels["version"] == __version__ and build.labels[engine[0]] == engine[1]
    assert build.labels["python"]
    assert found["process_resident_memory_bytes"].samples[0].value > 1_000_000

    # Today's names, kept (bench/ reads recalled_storage_info).
    assert found["recalled_events_stored"].samples[0].value == 4 + server_events
    assert found["recalled_writer_groups"].type == "counter"
    assert found["recalled_writer_ops"].samples[0].value >= 5
    info = found["recalled_storage_info"].samples[0]
    if srv.on_postgres:  # what the write connection runs with, read back from PostgreSQL
        assert info.labels == {"fsync": "on", "fts": "on", "synchronous_commit": "on"}
    else:
        assert info.labels == {"fts": "on", "journal_mode": "wal", "secure_delete": "on", "synchronous": "FULL"}
    statuses = {s.labels["status"]: s.value for s in found["recalled_http_requests"].samples}
    assert statuses["404"] == 30 and statuses["200"] >= 8
    assert samples(found["recalled_webhook_deliveries"], "_total")[0].value >= 4
    assert "recalled_webhook_failed_attempts" in found and "recalled_webhook_in_flight" in found


def test_each_app_has_its_own_registry():
    first, second = create_app(Config(), store=None), create_app(Config(), store=None)
    a, b = first.metrics, second.metrics
    assert a.registry is not b.registry
    a.observe_request({}, 200, 0.01)
    assert b.registry.get_sample_value("recalled_http_request_duration_seconds_count",
                                       {"route": UNMATCHED_ROUTE, "status_class": "2xx"}) is None
    assert a.registry.get_sample_value("recalled_http_request_duration_seconds_count",
                                       {"route": UNMATCHED_ROUTE, "status_class": "2xx"}) == 1


def test_route_template_is_the_pattern_also_under_mounts():
    seen: list[str] = []

    async def endpoint(request):
        return PlainTextResponse("ok")

    async def raw_app(scope, receive, send):
        await PlainTextResponse("static")(scope, receive, send)

    inner = Starlette(routes=[
        Route("/a/{x}", endpoint),
        Mount("/m", routes=[Route("/b/{y}", endpoint)]),
        Mount("/s", app=raw_app),
    ])

    async def recording(scope, receive, send):
        await inner(scope, receive, send)
        seen.append(route_template(scope))

    async def fetch_all():
        transport = httpx.ASGITransport(app=recording)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for path in ("/a/1", "/m/b/2", "/s/file.css", "/nowhere", "/a/1/extra"):
                await client.get(path)

    import asyncio
    asyncio.run(fetch_all())
    assert seen == ["/a/{x}", "/m/b/{y}", "/s/{path}", UNMATCHED_ROUTE, UNMATCHED_ROUTE]


@pytest.mark.parametrize("sql, index", [
    (gauges.OPEN_DELIVERIES, "webhook_messages_open"),
    (gauges.FAILED_DELIVERIES, "webhook_messages_failed"),
])
def test_backlog_counts_use_the_partial_indexes(tmp_path, sql, index):
    store = SqliteStore(tmp_path / "g.db", secret=b"s" * 64)
    try:
        plan = " | ".join(row[-1] for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql))
    finally:
        store.close()
    assert index in plan, plan  # a scan of every message would name no index


def test_a_failing_storage_read_leaves_the_other_metrics():
    import asyncio

    from recalled_lite.metrics import AppMetrics

    class LockedStore:
        durability = {"journal_mode": "wal", "synchronous": "FULL"}
        engine_versions = {"sqlite": "3.0"}

        async def storage_gauges(self):
            raise sqlite3.OperationalError("database is locked")

    metrics = AppMetrics(LockedStore())
    metrics.observe_request({}, 200, 0.002)
    found = families(asyncio.run(metrics.render()).decode())
    assert "recalled_events_stored" not in found  # what needed the database is left out
    assert found["recalled_storage_info"].samples[0].labels["synchronous"] == "FULL"
    assert samples(found["recalled_http_request_duration_seconds"], "_count")[0].value == 1
