"""The console's pages for `make bench` (scenario `console`): signing in over HTTP, a few
subscriptions so the webhook pages have rows, and the paths of each measured page.

Each page is one row of the table (p50/p99 of one connection, bar 50 ms) on the read
prefill (1M events; 200k with --quick). bench/run.py runs wrk over the paths with the
session cookie (bench/wrk/common.lua sends BENCH_COOKIE).
"""

from __future__ import annotations

import http.client
import re
from urllib.parse import urlencode

import msgspec

from . import dataset
from .procs import request

BAR_MS = 50.0


def _http(port: int, method: str, path: str, body: bytes | None = None,
          headers: dict | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def _cookie(headers: http.client.HTTPMessage, name: str) -> str:
    for value in headers.get_all("Set-Cookie") or []:
        if value.startswith(name + "="):
            return value.split(";", 1)[0]
    raise RuntimeError(f"no {name} cookie in the answer")


def sign_in(port: int, key: str) -> str:
    """A console session for `key`: the Cookie header value to send."""
    status, headers, body = _http(port, "GET", "/console/login")
    if status in (404, 405):
        raise NotImplementedError(f"GET /console/login -> {status}")
    login_cookie = _cookie(headers, "recalled_console_login")
    csrf = re.search(rb'name="csrf" value="([^"]+)"', body).group(1).decode()
    status, headers, body = _http(port, "POST", "/console/login",
                                  urlencode({"csrf": csrf, "key": key}).encode(),
                                  {"Content-Type": "application/x-www-form-urlencoded", "Cookie": login_cookie})
    if status != 303:
        raise RuntimeError(f"console sign-in -> {status}: {body[:200]!r}")
    return _cookie(headers, "recalled_console")


def get(port: int, path: str, cookie: str) -> tuple[int, bytes]:
    status, _, body = _http(port, "GET", path, headers={"Cookie": cookie})
    return status, body


def seed(port: int, key: str, subscriptions: int = 12) -> dict:
    """Subscriptions (to a closed loopback port: they become invalid, with attempts), and ids."""
    subs = []
    for i in range(subscriptions):
        body = msgspec.json.encode({"url": f"http://127.0.0.1:9/bench-{i}", "description": f"bench {i}",
                                    "event_types": [dataset.ACTIONS[i % len(dataset.ACTIONS)]]})
        status, _, data = request(port, "POST", "/v1/event_subscriptions", body, key=key)
        if status != 201:
            raise RuntimeError(f"POST /v1/event_subscriptions -> {status}: {data[:200]!r}")
        subs.append(msgspec.json.decode(data)["data"]["id"])
    events = []
    for path in dataset.list_paths(16):
        status, _, data = request(port, "GET", path.replace("limit=50", "limit=1"), key=key)
        rows = msgspec.json.decode(data)["data"] if status == 200 else []
        events += [row["id"] for row in rows]
    status, _, data = request(port, "GET", "/v1/events?limit=1", key=key)
    head = msgspec.json.decode(data)["data"][0]["seq"] if status == 200 else 0
    return {"subs": subs, "events": events or ["evt_none"], "head": head}


def pages(ids: dict) -> list[tuple[str, list[str]]]:
    """(row title, paths), one row per console page."""
    filtered = [p.replace("/v1/events?", "/console/events?") for p in dataset.list_paths(32)]
    searches = ["/console/events?" + urlencode({"q": q}) for q in dataset.SEARCH_QUERIES]
    return [
        ("overview", ["/console/"]),
        ("events, newest first", ["/console/events"]),
        ("events, org + action filter", filtered),
        ("events, search", searches),
        ("live tail poll (nothing new)", [f"/console/events/tail?after_seq={ids['head']}&limit=100"]),
        ("one event", [f"/console/events/{e}" for e in ids["events"]]),
        ("one event, verify its link", [f"/console/events/{e}?verify=link" for e in ids["events"]]),
        ("chain", ["/console/chain"]),
        ("webhooks", ["/console/webhooks"]),
        ("one subscription with attempts", [f"/console/webhooks/{s}" for s in ids["subs"]]),
        ("keys", ["/console/keys"]),
        ("erase an actor", ["/console/actors"]),
    ]
