"""Must-show 5: without --dev, non-public webhook destinations are refused at creation (400)
and again at connect time against the address actually dialled; a loopback sink sees zero
connections (spec §5.2)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from webhook_receiver import Sink, wait_until


def loopback_name() -> str | None:
    """A hostname other than `localhost` that resolves (via /etc/hosts or DNS) only to
    loopback, so the refusal comes from checking resolved addresses, not from the name."""
    candidates = [socket.gethostname(), "vm", "runsc", "ip6-localhost", "ip6-loopback",
                  "localhost.localdomain"]
    for name in candidates:
        if not name or name == "localhost":
            continue
        try:
            infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
        except OSError:
            continue
        addresses = {info[4][0].split("%")[0] for info in infos}
        if addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses):
            return name
    return None


def error(r):
    body = r.json()
    return r.status_code, body["error"]["code"], body["error"]["details"]["field"], body["error"]["message"]


def test_private_destinations_are_refused_at_creation(make_server):
    sink = Sink()
    try:
        srv = make_server("ssrf")  # no --dev, no allow_private_destinations
        p = sink.port
        urls = [
            f"http://127.0.0.1:{p}/hook",
            f"http://[::1]:{p}/hook",
            "http://10.0.0.1/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/hook",
            f"http://0.0.0.0:{p}/hook",
            f"http://[::ffff:127.0.0.1]:{p}/hook",
            f"http://localhost:{p}/hook",
            f"http://2130706433:{p}/hook",  # decimal 127.0.0.1
            f"http://0x7f000001:{p}/hook",
            f"http://127.1:{p}/hook",
            f"https://127.0.0.1:{p}/hook",
            f"http://[::]:{p}/hook",
            "http://192.168.1.1/hook",
            "http://[fd00::1]/hook",
            "http://[64:ff9b::7f00:1]/hook",
        ]
        name = loopback_name()
        if name is not None:
            urls.append(f"http://{name}:{p}/hook")
        with srv.client() as c:
            for url in urls:
                r = c.post("/v1/event_subscriptions", json={"url": url})
                status, code, field, message = error(r)
                assert (status, code, field) == (400, "VALIDATION_ERROR", "url"), (url, r.text)
                assert "allow_private_destinations" in message or "--dev" in message, message
            # a URL change to a private address is refused the same way
            r = c.post("/v1/event_subscriptions", json={"url": f"http://127.0.0.1:{p}/", "disabled": True})
            assert r.status_code == 400
            assert c.get("/v1/event_subscriptions").json()["data"] == []
        assert sink.connections == 0
        assert name is not None, "no non-localhost loopback name on this machine (checked the rest)"
    finally:
        sink.close()


def test_connect_time_guard_refuses_the_dialled_address(make_server):
    """A subscription stored while private destinations were allowed is still refused when
    the server later runs without that permission: the check runs against the address
    being dialled, not only at creation."""
    sink = Sink()
    try:
        srv = make_server("ssrf_connect", config_text="[webhooks]\nallow_private_destinations = true\n")
        name = loopback_name() or "localhost"
        with srv.client() as c:
            subs = []
            for url in [f"http://127.0.0.1:{sink.port}/hook", f"http://{name}:{sink.port}/hook"]:
                r = c.post("/v1/event_subscriptions", json={"url": url, "disabled": True})
                assert r.status_code == 201, r.text
                subs.append(r.json()["data"]["id"])
        srv.stop()
        assert srv.config_path is not None
        srv.config_path.write_text("[webhooks]\nallow_private_destinations = false\n")
        srv.start()
        with srv.client() as c:
            for sub_id in subs:
                r = c.patch(f"/v1/event_subscriptions/{sub_id}", json={"disabled": False})
                assert r.status_code == 200 and r.json()["data"]["state"] == "new"
            for sub_id in subs:
                sub = wait_until(lambda: (s := c.get(f"/v1/event_subscriptions/{sub_id}").json()["data"])
                                 ["state"] == "invalid" and s, message="refused test")
                assert "destination refused" in sub["state_reason"] and "loopback" in sub["state_reason"]
                attempts = c.get(f"/v1/event_subscriptions/{sub_id}/attempts").json()["data"]
                assert len(attempts) == 1 and attempts[0]["response_status_code"] is None
                assert attempts[0]["error"].startswith("destination refused")
                # an explicit example and a re-test are refused the same way
                assert c.post(f"/v1/simulate/event_subscriptions/{sub_id}/send_example").status_code == 202
                assert c.post(f"/v1/event_subscriptions/{sub_id}/test").status_code == 202
                wait_until(lambda: len([a for a in c.get(f"/v1/event_subscriptions/{sub_id}/attempts").json()["data"]
                                        if a["status"] == "failed"]) == 3, message="3 refused attempts")
        assert sink.connections == 0
    finally:
        sink.close()


@pytest.mark.parametrize("flag", [["--dev"]])
def test_dev_allows_loopback(make_server, flag):
    """The positive control: with --dev the same loopback sink is dialled."""
    sink = Sink()
    try:
        srv = make_server("ssrf_dev", args=flag)
        with srv.client() as c:
            r = c.post("/v1/event_subscriptions", json={"url": f"http://127.0.0.1:{sink.port}/hook"})
            assert r.status_code == 201, r.text
        wait_until(lambda: sink.connections > 0, message="a connection to the sink")
        assert "DEV MODE" in srv.log_text()
    finally:
        sink.close()
