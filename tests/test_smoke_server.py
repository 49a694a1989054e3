"""The server starts, answers health checks and accepts the recalled example event."""

EXAMPLE_EVENT = {
    "action": "invoice.paid",
    "organization": "org_acme",
    "actor": {"type": "user", "id": "user_123", "name": "Ada Lovelace", "email": "ada@example.com"},
    "targets": [{"type": "invoice", "id": "inv_42", "name": "Invoice #42"}],
    "metadata": {"amount": 4200, "currency": "EUR"},
}


def test_health_and_ready(server):
    with server.client(key=None) as c:
        assert c.get("/healthz").json() == {"data": {"status": "ok"}}
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["data"]["status"] == "ready"


def test_example_event_round_trip(server):
    with server.client() as c:
        response = c.post("/v1/events", json=EXAMPLE_EVENT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["deduplicated"] is False
    event = body["data"]
    assert event["action"] == "invoice.paid"
    assert event["actor"] == EXAMPLE_EVENT["actor"]
    assert event["id"].startswith("evt_") and len(event["id"]) == 30
    assert event["hash"].startswith("sha256:") and event["signature"].startswith("hmac-sha256:")
    assert response.headers["x-request-id"]


def test_logs_are_json_lines_with_request_ids(server):
    import json

    from webhook_receiver import wait_until

    with server.client() as c:
        c.get("/v1/nope", headers={"x-request-id": "log-check-42"})

    def access_lines():
        # The access line is written once the response has gone out: poll for it.
        lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
        return [entry for entry in lines if entry.get("request_id") == "log-check-42"]

    access = wait_until(access_lines, timeout=5, message="the access log line")
    assert access[0]["status"] == 404 and access[0]["path"] == "/v1/nope"
    # Every line the server writes is JSON (uvicorn's own included), except the
    # one-time admin key banner, which this fixture does not trigger.
    raw = [l for l in server.log_text().splitlines() if l.strip()]
    assert all(l.startswith("{") for l in raw), [l for l in raw if not l.startswith("{")][:3]


def test_metrics_count_writes_and_webhook_deliveries(make_server):
    from audit_events import audit_events
    from webhook_receiver import Receiver, wait_until

    srv = make_server("metrics", args=["--dev"])
    receiver = Receiver()
    try:
        with srv.client() as c:
            sub = c.post("/v1/event_subscriptions", json={"url": receiver.url(), "event_types": []})
            assert sub.status_code in (200, 201), sub.text
            for _ in range(3):
                assert c.post("/v1/events", json={"action": "metric.check"}).status_code == 200
            wait_until(lambda: len(receiver.received()) >= 3, message="3 deliveries")

            def scrape() -> dict[str, float]:
                text = c.get("/metrics").text
                # The value is the last field: a label value may hold spaces (PostgreSQL's
                # server_version does, in recalled_build_info).
                return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                        for line in text.splitlines() if line and not line.startswith("#")}

            values = wait_until(lambda: (v := scrape())["recalled_webhook_deliveries_total"] >= 3 and v,
                                message="delivery counter")
            own = len(audit_events(c))  # the bootstrap key's and the subscription's creation
            assert own == 2
            assert values["recalled_events_stored"] == 3 + own
            assert values["recalled_writer_ops_total"] >= 3
            assert values['recalled_http_requests_total{status="200"}'] >= 3
            assert "recalled_webhook_in_flight" in values
            # What the server really runs with, read back from SQLite: the defaults.
            if srv.on_postgres:  # ... or from PostgreSQL
                (info,) = [k for k in values if k.startswith("recalled_storage_info{")]
                assert set(info[len("recalled_storage_info{"):-1].split(",")) == {
                    'fsync="on"', 'fts="on"', 'synchronous_commit="on"'} and values[info] == 1
            else:
                assert values['recalled_storage_info{fts="on",journal_mode="wal",secure_delete="on",synchronous="FULL"}'] == 1
    finally:
        receiver.close()
