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
