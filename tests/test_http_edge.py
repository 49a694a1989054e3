"""The HTTP/1.1 edge against a real server, with raw sockets: upgrades ignored, no smuggling,
pipelining in order, refusals that reach the client, chunk limits, transfer codings, quiet client
disconnects, the body deadline and the connection cap (recalled_lite/edge/)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import httpx
import pytest

from rawhttp import connect, one_shot, read_exchange, request

# The exact upgrade headers java.net.http.HttpClient (default settings, plain http) sends.
JDK_UPGRADE = {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
               "HTTP2-Settings": "AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA",
               "User-Agent": "Java-http-client/17", "Content-Type": "application/json"}


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def events_with_action(srv, action: str) -> list[dict]:
    with srv.client() as c:
        r = c.get("/v1/events", params={"action": action, "limit": 50})
    assert r.status_code == 200, r.text
    return r.json()["data"]


# -- 1. upgrades are ignored ---------------------------------------------------------------------

@pytest.mark.parametrize("split", [False, True], ids=["one write", "body in a later write"])
def test_jdk_h2c_upgrade_is_ignored_and_the_event_stored_as_sent(server, split):
    action = unique("upgrade.jdk")
    event = {"action": action, "organization": "org_up", "actor": {"id": "u_1", "name": "Ada"},
             "metadata": {"n": 1, "s": "é"}}
    body = json.dumps(event).encode()
    wire = request("POST", "/v1/events", body, JDK_UPGRADE, key=server.key)
    with connect(server.port) as sock:
        if split:
            head, _, rest = wire.partition(b"\r\n\r\n")
            sock.sendall(head + b"\r\n\r\n")
            time.sleep(0.3)
            sock.sendall(rest)
        else:
            sock.sendall(wire)
        exchange = read_exchange(sock, expect=1)
        # the connection stays usable for plain HTTP/1.1
        sock.sendall(request("GET", "/healthz"))
        again = read_exchange(sock, expect=1)
    assert [r.status for r in exchange.responses] == [200], exchange
    created = exchange.responses[0].json()["data"]
    assert exchange.responses[0].headers.get("upgrade") is None
    assert [r.status for r in again.responses] == [200]
    stored = events_with_action(server, action)
    assert len(stored) == 1 and stored[0]["id"] == created["id"]
    assert stored[0]["organization"] == "org_up" and stored[0]["metadata"] == {"n": 1, "s": "é"}
    assert stored[0]["actor"]["id"] == "u_1" and stored[0]["actor"]["name"] == "Ada"
    assert "Unsupported upgrade" not in server.log_text()


def test_websocket_and_other_upgrades_are_plain_requests_on_every_route(server):
    upgrades = [{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
                {"Connection": "keep-alive, Upgrade", "Upgrade": "TLS/1.2, HTTP/2.0"}]
    for headers in upgrades:
        for method, path, status in (("GET", "/healthz", 200), ("GET", "/v1/events?limit=1", 200),
                                     ("GET", "/v1/nope", 404)):
            exchange = one_shot(server.port, request(method, path, headers=headers, key=server.key), expect=1)
            assert [r.status for r in exchange.responses] == [status], (headers, path, exchange)
        action = unique("upgrade.ws")
        body = json.dumps({"action": action}).encode()
        exchange = one_shot(server.port, request("POST", "/v1/events", body, headers, key=server.key), expect=1)
        assert [r.status for r in exchange.responses] == [200]
        assert len(events_with_action(server, action)) == 1


# -- 2. no smuggling -----------------------------------------------------------------------------

@pytest.mark.parametrize("upgrade", [True, False], ids=["with upgrade headers", "plain"])
def test_a_body_arriving_later_is_never_run_as_a_request(server, upgrade):
    action = unique("smuggled")
    inner = request("POST", "/v1/events", json.dumps({"action": action}).encode(),
                    {"Content-Type": "application/json"}, key=server.key)
    outer_headers = dict(JDK_UPGRADE) if upgrade else {}
    outer = request("POST", "/healthz", inner, outer_headers)
    head, _, body = outer.partition(b"\r\n\r\n")
    assert body == inner
    with connect(server.port) as sock:
        sock.sendall(head + b"\r\n\r\n")
        time.sleep(0.5)
        try:
            sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may have answered and closed; what matters is below
        exchange = read_exchange(sock, expect=1, quiet=1.5)
    assert len(exchange.responses) == 1, exchange
    assert exchange.responses[0].status != 200
    time.sleep(0.3)
    assert events_with_action(server, action) == []


# -- 3. pipelining -------------------------------------------------------------------------------

def test_pipelined_requests_are_answered_in_order_before_the_400_for_junk(server):
    actions = [unique("pipe") for _ in range(3)]
    wire = b"".join(request("POST", "/v1/events", json.dumps({"action": a}).encode(), key=server.key)
                    for a in actions)
    wire += request("GET", "/healthz") + b"\x00\x01GARBAGE\r\n\r\n"
    exchange = one_shot(server.port, wire, expect=5)
    assert [r.status for r in exchange.responses] == [200, 200, 200, 200, 400], exchange
    assert [r.json()["data"]["action"] for r in exchange.responses[:3]] == actions
    error = exchange.responses[4]
    assert error.json()["error"]["code"] == "VALIDATION_ERROR" and "details" in error.json()["error"]
    assert error.closes and error.headers["x-request-id"].startswith("req_")
    assert exchange.ended in ("eof", "open") and not exchange.leftover
    for a in actions:
        assert len(events_with_action(server, a)) == 1


def test_pipelined_requests_split_anywhere_are_all_answered(server):
    wire = request("GET", "/healthz") * 5 + request("GET", "/readyz")
    with connect(server.port) as sock:
        for i in range(0, len(wire), 7):
            sock.sendall(wire[i:i + 7])
        exchange = read_exchange(sock, expect=6, quiet=0.5)
    assert [r.status for r in exchange.responses] == [200] * 6, exchange


# -- 4. refusals reach the client ----------------------------------------------------------------

def _send_big_body_and_read(port: int, head: bytes, body: bytes) -> tuple[list, object]:
    errors: list[BaseException] = []
    with connect(port, timeout=30) as sock:
        sock.sendall(head)

        def write_body():
            try:
                sock.sendall(body)
            except OSError as exc:  # EPIPE / ECONNRESET: what lingering close prevents
                errors.append(exc)

        writer = threading.Thread(target=write_body)
        writer.start()
        exchange = read_exchange(sock, expect=1, quiet=0.5, deadline=30)
        writer.join(30)
    return errors, exchange


@pytest.mark.parametrize("kind", ["10 MB string", "million keys"])
def test_a_refused_large_body_gets_its_413_not_a_reset(server, kind):
    if kind == "10 MB string":
        body = b'{"action": "a", "metadata": {"x": "' + b"a" * 10_000_000 + b'"}}'
    else:
        body = b'{"action":"a","metadata":{' + b",".join(b'"k%d":1' % i for i in range(1_000_000)) + b"}}"
    wire = request("POST", "/v1/events", body, {"Content-Type": "application/json"}, key=server.key)
    head, _, body = wire.partition(b"\r\n\r\n")
    errors, exchange = _send_big_body_and_read(server.port, head + b"\r\n\r\n", body)
    assert errors == [], errors
    assert [r.status for r in exchange.responses] == [413], exchange
    response = exchange.responses[0]
    assert response.json()["error"]["code"] == "REQUEST_TOO_LARGE"
    assert response.closes and "x-request-id" in response.headers
    assert exchange.ended == "eof"


def test_a_refused_chunked_body_gets_its_413_not_a_reset(server):
    head = request("POST", "/v1/events", headers={"Transfer-Encoding": "chunked"}, key=server.key,
                   content_length=False)
    body = (b"10000\r\n" + b"x" * 0x10000 + b"\r\n") * 160 + b"0\r\n\r\n"  # 10 MiB in 64 KiB chunks
    errors, exchange = _send_big_body_and_read(server.port, head, body)
    assert errors == [], errors
    assert [r.status for r in exchange.responses] == [413], exchange
    assert exchange.responses[0].json()["error"]["code"] == "REQUEST_TOO_LARGE"


# -- 5. chunk limits and transfer codings ---------------------------------------------------------

@pytest.mark.parametrize("size", ["7FFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFFFF", "600000"])
def test_a_chunk_size_beyond_the_limit_gets_413_at_once(server, size):
    head = request("POST", "/v1/events", headers={"Transfer-Encoding": "chunked"}, key=server.key,
                   content_length=False)
    started = time.monotonic()
    exchange = one_shot(server.port, head + size.encode() + b"\r\nabc", expect=1)
    assert [r.status for r in exchange.responses] == [413], exchange
    error = exchange.responses[0].json()["error"]
    assert error["code"] == "REQUEST_TOO_LARGE" and error["details"]["limit"] == 5 * 1024 * 1024
    assert time.monotonic() - started < 25  # well before the 30 s body deadline: not waited for


@pytest.mark.parametrize("coding", ["gzip, chunked", "gzip", "chunked, gzip", "identity", "deflate, chunked"])
def test_transfer_codings_other_than_chunked_get_501(server, coding):
    action = unique("coded")
    body = json.dumps({"action": action}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = request("POST", "/v1/events", headers={"Transfer-Encoding": coding}, key=server.key,
                   content_length=False)
    exchange = one_shot(server.port, head + chunked, expect=1)
    assert [r.status for r in exchange.responses] == [501], exchange
    error = exchange.responses[0].json()["error"]
    assert error["code"] == "NOT_IMPLEMENTED" and error["details"]["field"] == "transfer-encoding"
    assert exchange.responses[0].closes and exchange.ended == "eof"
    assert events_with_action(server, action) == []


def test_transfer_encoding_with_content_length_is_400_and_close(server):
    action = unique("tecl")
    body = json.dumps({"action": action}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    for te_first in (True, False):
        headers = {"Transfer-Encoding": "chunked", "Content-Length": str(len(chunked))}
        if not te_first:
            headers = dict(reversed(list(headers.items())))
        wire = request("POST", "/v1/events", headers=headers, key=server.key, content_length=False)
        exchange = one_shot(server.port, wire + chunked + request("GET", "/healthz"), expect=1)
        assert [r.status for r in exchange.responses] == [400], exchange
        assert exchange.responses[0].json()["error"]["details"]["field"] == "content-length"
        assert exchange.responses[0].closes and exchange.ended == "eof"
    assert events_with_action(server, action) == []


def test_a_valid_chunked_body_with_extensions_and_trailers_is_stored(server):
    action = unique("chunked.ok")
    body = json.dumps({"action": action, "metadata": {"k": "v" * 100}}).encode()
    wire = request("POST", "/v1/events", headers={"Transfer-Encoding": "chunked"}, key=server.key,
                   content_length=False)
    wire += b"5;ext=1\r\n" + body[:5] + b"\r\n" + b"%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n"
    wire += b"0\r\nX-Checksum: none\r\n\r\n"
    exchange = one_shot(server.port, wire + request("GET", "/healthz"), expect=2)
    assert [r.status for r in exchange.responses] == [200, 200], exchange
    assert events_with_action(server, action)[0]["metadata"] == {"k": "v" * 100}


def test_expect_100_continue_and_http_1_0(server):
    action = unique("expect")
    body = json.dumps({"action": action}).encode()
    wire = request("POST", "/v1/events", body, {"Expect": "100-continue"}, key=server.key)
    head, _, body = wire.partition(b"\r\n\r\n")
    with connect(server.port) as sock:
        sock.sendall(head + b"\r\n\r\n")
        interim = read_exchange(sock, expect=1, quiet=0.2, deadline=10)
        assert [r.status for r in interim.responses] == [100], interim
        sock.sendall(body)
        final = read_exchange(sock, expect=1)
    assert [r.status for r in final.responses] == [200]
    exchange = one_shot(server.port, b"GET /healthz HTTP/1.0\r\n\r\n", expect=1)
    assert [r.status for r in exchange.responses] == [200] and exchange.ended == "eof"
    exchange = one_shot(server.port, b"GET /healthz\r\n\r\n", expect=1)  # HTTP/0.9
    assert [r.status for r in exchange.responses] == [400]


# -- 6. client disconnects are quiet --------------------------------------------------------------

def _http_request_counts(srv) -> dict[str, float]:
    counts: dict[str, float] = {}
    text = httpx.get(srv.url + "/metrics").text
    for line in text.splitlines():
        if line.startswith("#") or "http_requests" not in line or 'status="' not in line:
            continue
        status = line.split('status="', 1)[1].split('"', 1)[0]
        counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_client_disconnects_mid_body_are_499s_without_tracebacks(make_server):
    srv = make_server("disconnects")
    before = _http_request_counts(srv)
    n = 30
    for i in range(n):
        sock = connect(srv.port)
        head = request("POST", "/v1/events", headers={"Content-Length": "1000",
                                                       "Content-Type": "application/json"},
                       key=srv.key, content_length=False)
        sock.sendall(head + b'{"action": "x", ')
        if i % 2:  # a trickled body, then gone
            for byte in b'"metadata": {':
                sock.sendall(bytes([byte]))
                time.sleep(0.005)
        time.sleep(0.05)
        sock.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _http_request_counts(srv).get("499", 0) < before.get("499", 0) + n:
        time.sleep(0.1)
    after = _http_request_counts(srv)
    assert after.get("500", 0) == before.get("500", 0), after
    assert after.get("499", 0) >= before.get("499", 0) + n, after
    log = srv.log_text()
    assert "Traceback" not in log and "unhandled error" not in log and "ClientDisconnect" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("msg") == "request" and line.get("status") == 499]
    assert len(access) >= n and all(line["level"] == "info" for line in access)
    assert not [line for line in lines if line.get("level") in ("error", "critical")]


# -- 8. slow bodies -------------------------------------------------------------------------------

SLOW_BODY_CONFIG = "[server]\nbody_timeout_seconds = 2.0\nlinger_seconds = 1.0\n"


def test_a_trickled_body_gets_408_at_the_deadline_while_others_are_served(make_server):
    srv = make_server("slowbody", config_text=SLOW_BODY_CONFIG)
    action = unique("slow.body")
    body = json.dumps({"action": action, "metadata": {"pad": "x" * 50}}).encode()
    head = request("POST", "/v1/events", body, {"Content-Type": "application/json"}, key=srv.key)
    head = head[:len(head) - len(body)]
    result: dict = {}

    def trickle():
        with connect(srv.port, timeout=30) as sock:
            sock.sendall(head)
            started = time.monotonic()
            sock.settimeout(1.0)
            data = b""
            for byte in body:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    result["after"] = time.monotonic() - started
                    break
            # The head may have come without its body: read the rest onto what came.
            result["exchange"] = read_exchange(sock, quiet=0.5, deadline=10, already=data)

    thread = threading.Thread(target=trickle)
    thread.start()
    served = 0
    with srv.client() as c:
        while thread.is_alive():
            assert c.post("/v1/events", json={"action": unique("slow.other")}).status_code == 200
            served += 1
            time.sleep(0.05)
    thread.join()
    exchange = result["exchange"]
    assert [r.status for r in exchange.responses] == [408], exchange
    error = exchange.responses[0].json()["error"]
    assert error["code"] == "REQUEST_TIMEOUT" and error["details"] == {"limit_seconds": 2.0}
    assert exchange.responses[0].closes
    assert result["after"] >= 1.8  # not before the deadline (the upper side is the machine's)
    assert exchange.ended in ("eof", "reset")  # closed after the answer, not kept for ever
    assert served >= 5
    assert events_with_action(srv, action) == []
    lines = [json.loads(line) for line in srv.log_text().splitlines() if line.startswith("{")]
    assert [line["status"] for line in lines if line.get("msg") == "request" and line.get("status") == 408]


# -- 9. the connection cap ------------------------------------------------------------------------

CAP_CONFIG = "[server]\nmax_connections = 8\nheader_timeout_seconds = 30.0\nbody_timeout_seconds = 30.0\n"


def test_past_the_cap_a_newcomer_gets_503_and_established_clients_keep_service(make_server):
    srv = make_server("cap", config_text=CAP_CONFIG)
    time.sleep(0.3)  # the readiness probe's connection is gone
    busy = []
    for i in range(7):
        sock = connect(srv.port)
        if i % 2:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # mid-head
        else:
            sock.sendall(request("POST", "/v1/events", headers={"Content-Length": "100"},
                                 key=srv.key, content_length=False) + b'{"act')  # unfinished body
        busy.append(sock)
    keeper = connect(srv.port)
    try:
        for attempt in range(3):
            keeper.sendall(request("GET", "/healthz"))
            assert [r.status for r in read_exchange(keeper, expect=1, quiet=0.05).responses] == [200]
            answered = time.monotonic()  # >= 0.05 s after the server went idle (read_exchange's quiet)
            refused = one_shot(srv.port, request("GET", "/healthz"), expect=1, quiet=0.2)
            took = time.monotonic() - answered
            if [r.status for r in refused.responses] == [200] and took >= 0.9:
                # This machine stalled past the 1 s an idle keep-alive connection is spared, so
                # the keeper was rightly closed to make room: try again with a new one.
                keeper.close()
                keeper = connect(srv.port)
                continue
            break
        assert [r.status for r in refused.responses] == [503], refused
        response = refused.responses[0]
        assert response.json()["error"]["code"] == "UNAVAILABLE"
        assert response.json()["error"]["details"] == {"limit": 8}
        assert int(response.headers["retry-after"]) >= 1 and response.closes
        assert refused.ended == "eof" and took < 5
        keeper.sendall(request("GET", "/healthz"))
        assert [r.status for r in read_exchange(keeper, expect=1, quiet=0.05).responses] == [200]
    finally:
        keeper.close()
        for sock in busy:
            sock.close()


def test_at_the_cap_the_longest_idle_keepalive_connection_makes_room(make_server):
    srv = make_server("evict", config_text=CAP_CONFIG)
    time.sleep(0.3)
    socks = [connect(srv.port) for _ in range(8)]
    try:
        for sock in socks:
            sock.sendall(request("GET", "/healthz"))
            assert [r.status for r in read_exchange(sock, expect=1, quiet=0.05).responses] == [200]
        time.sleep(1.5)  # all idle for more than the 1 s minimum; socks[0] the longest
        for sock in socks[1:]:
            sock.sendall(request("GET", "/healthz"))
            assert [r.status for r in read_exchange(sock, expect=1, quiet=0.05).responses] == [200]
        newcomer = one_shot(srv.port, request("GET", "/healthz"), expect=1, quiet=0.2)
        assert [r.status for r in newcomer.responses] == [200], newcomer
        socks[0].settimeout(5)
        assert socks[0].recv(100) == b""  # the longest-idle one was closed to make room
        for sock in socks[1:]:
            sock.sendall(request("GET", "/healthz"))
            assert [r.status for r in read_exchange(sock, expect=1, quiet=0.05).responses] == [200]
    finally:
        for sock in socks:
            sock.close()


def test_idle_keepalive_connections_are_closed_after_keepalive_seconds(make_server):
    srv = make_server("keepalive", config_text="[server]\nkeepalive_seconds = 1.0\n")
    with connect(srv.port) as sock:
        for _ in range(3):  # busy connections are not cut
            sock.sendall(request("GET", "/healthz"))
            assert [r.status for r in read_exchange(sock, expect=1, quiet=0.05).responses] == [200]
            time.sleep(0.5)
        idle_from = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(100) == b""  # closed without a response: nothing was asked
        # 1 s after the response, minus the 0.5 s above and read_exchange's 0.05 s of quiet
        assert time.monotonic() - idle_from >= 0.3
