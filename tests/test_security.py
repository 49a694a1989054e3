"""docs/security.md: secrets never reach the log; keys never travel in URLs; constant-time checks."""

from __future__ import annotations

import inspect
import time

from recalled_lite import auth, embed_tokens


def test_no_secret_ever_reaches_the_log(make_server):
    srv = make_server("sec", args=["--dev"], config_text="[server]\nlog_level = \"debug\"\n")
    created = srv.create_key(["events:write", "events:read", "embed:write", "webhooks:manage"], name="leak")
    wrong = created[:-4] + "zzzz"
    with srv.client(key=created) as c:
        assert c.post("/v1/events", json={"action": "sec.x", "idempotency_key": "k1"}).status_code == 200
        sub = c.post("/v1/event_subscriptions", json={"url": "http://127.0.0.1:9/hook"}).json()["data"]
        rotated = c.post(f"/v1/event_subscriptions/{sub['id']}/secret/rotate").json()["data"]["secret"]
        token = c.post("/v1/embed/token", json={}).json()["data"]["token"]
    with srv.client(key=None) as anon:
        assert anon.get("/v1/embed/events", params={"token": token}).status_code == 200
        assert anon.get("/v1/embed/events", params={"token": token + "x"}).status_code == 401
    with srv.client(key=wrong) as w:
        assert w.get("/v1/events").status_code == 401
    with srv.client() as admin:  # an unhandled-path error still logs without secrets
        admin.get("/v1/events", params={"cursor": created})
    time.sleep(0.5)
    srv.stop()
    log = srv.log_text()
    server_secret = srv.secret_path.read_text().strip()
    assert "request" in log  # the access log is on, so the test looks at real lines
    for secret in (srv.key, created, created.split("_")[3], wrong.split("_")[3], sub["secret"], rotated,
                   token, token.split(".")[1], server_secret):
        assert secret not in log


def test_comparisons_of_secrets_are_constant_time():
    assert "hmac.compare_digest" in inspect.getsource(auth.check_key)
    assert "hmac.compare_digest" in inspect.getsource(embed_tokens.verify)


def test_api_keys_in_the_url_are_not_accepted(server):
    with server.client(key=None) as c:
        for params in ({"api_key": server.key}, {"key": server.key}, {"token": server.key}):
            r = c.get("/v1/events", params=params)
            assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
        # an API key is not an embed token either
        r = c.get("/v1/embed/events", params={"token": server.key})
        assert r.status_code == 401
