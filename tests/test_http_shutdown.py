"""SIGTERM under keep-alive load: every request the server received is answered (200, or 503
with Retry-After and Connection: close), none is reset, and every 200 is stored.

The one race no server can close is a client writing a new request exactly as the server closes
its idle connection. The server makes it rare (an idle connection is closed only after it has
been quiet for a moment, edge/protocol.py SHUTDOWN_IDLE_GRACE), and these clients do what a
connection pool does: before reusing a connection they check it was not closed under them.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import threading
import time
import uuid

from rawhttp import connect, parse_responses, request

CLIENTS = 8
PIPELINED = 2    # of which this many send 3 requests at a time


def _closed_by_peer(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Client(threading.Thread):
    def __init__(self, port: int, key: str, prefix: str, depth: int) -> None:
        super().__init__(daemon=True)
        self.port, self.key, self.prefix, self.depth = port, key, prefix, depth
        self.sent = 0                 # requests fully written
        self.statuses: list[int] = []
        self.acked: list[str] = []    # ids of events answered 200
        self.problems: list[str] = []
        self.ended = ""

    def run(self) -> None:
        sock = connect(self.port, timeout=30)
        buffer = b""
        n = 0
        try:
            while True:
                if _closed_by_peer(sock):
                    self.ended = "closed while idle"
                    return
                batch = []
                for _ in range(self.depth):
                    n += 1
                    batch.append(request("POST", "/v1/events", json.dumps({"action": f"{self.prefix}.{n}"}).encode(),
                                         {"Content-Type": "application/json"}, key=self.key))
                try:
                    sock.sendall(b"".join(batch))
                except OSError as exc:
                    self.problems.append(f"write failed: {exc!r}")
                    return
                self.sent += len(batch)
                got: list = []
                while len(got) < len(batch):
                    try:
                        chunk = sock.recv(65536)
                    except OSError as exc:
                        self.problems.append(f"{len(batch) - len(got)} request(s) reset: {exc!r}")
                        return
                    if not chunk:
                        self.problems.append(f"{len(batch) - len(got)} request(s) got EOF, no response")
                        return
                    buffer += chunk
                    responses, buffer = parse_responses(buffer)
                    got += responses
                for response in got:
                    self.statuses.append(response.status)
                    if response.status == 200:
                        self.acked.append(response.json()["data"]["id"])
                    elif response.status == 503:
                        if "retry-after" not in response.headers or response.json()["error"]["code"] != "UNAVAILABLE":
                            self.problems.append(f"bad 503: {response}")
                    else:
                        self.problems.append(f"unexpected status {response.status}: {response.body[:200]!r}")
                if any(r.closes for r in got):
                    self.ended = "connection: close"
                    return
        finally:
            sock.close()


def test_sigterm_under_keepalive_load_answers_every_received_request(make_server):
    srv = make_server("term")
    prefix = f"term.{uuid.uuid4().hex[:8]}"
    clients = [Client(srv.port, srv.key, f"{prefix}.c{i}", 3 if i < PIPELINED else 1) for i in range(CLIENTS)]
    for client in clients:
        client.start()
    time.sleep(2.0)
    assert sum(c.sent for c in clients) > 50, "the load did not get going"
    srv.proc.send_signal(signal.SIGTERM)
    for client in clients:
        client.join(40)
    assert srv.proc.wait(40) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    assert not any(c.is_alive() for c in clients)

    problems = [f"client {i}: {p}" for i, c in enumerate(clients) for p in c.problems]
    assert problems == [], problems
    for client in clients:
        # every fully written request got a complete response
        assert len(client.statuses) == client.sent, (client.sent, len(client.statuses), client.ended)
        assert client.ended in ("connection: close", "closed while idle"), client.ended
    total = sum(c.sent for c in clients)
    acked = {event_id for c in clients for event_id in c.acked}
    assert len(acked) > 0 and total > len(acked) * 0.5

    srv.start()
    stored: set[str] = set()
    with srv.client() as c:
        cursor = None
        while True:
            params = {"cursor": cursor} if cursor else {"action": f"{prefix}.*", "limit": 200}
            page = c.get("/v1/events", params=params)
            assert page.status_code == 200, page.text
            stored.update(event["id"] for event in page.json()["data"])
            cursor = page.json()["nextCursor"]
            if not cursor:
                break
    assert acked <= stored, f"{len(acked - stored)} acknowledged events are missing"


def test_requests_pipelined_behind_one_in_flight_at_sigterm_get_503s_in_order(make_server):
    srv = make_server("term-pipe")
    action = f"term.pipe.{uuid.uuid4().hex[:8]}"
    first = request("POST", "/v1/events", json.dumps({"action": action}).encode(),
                    {"Content-Type": "application/json"}, key=srv.key)
    with connect(srv.port, timeout=30) as sock:
        sock.sendall(first[:-5])  # its head is in, its body not yet: the request is in flight
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # uvicorn notices within 0.1 s and shuts every connection down
        later = [request("POST", "/v1/events", json.dumps({"action": f"{action}.late{i}"}).encode(),
                         key=srv.key) for i in range(2)]
        sock.sendall(first[-5:] + b"".join(later))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    responses, leftover = parse_responses(data)
    assert [r.status for r in responses] == [200, 503, 503], responses
    assert not leftover
    assert responses[0].json()["data"]["action"] == action and not responses[0].closes
    for response in responses[1:]:
        assert response.json()["error"]["code"] == "UNAVAILABLE" and response.headers["retry-after"] == "1"
    assert [r.closes for r in responses] == [False, False, True]
    assert srv.proc.wait(30) in (0, -signal.SIGTERM)
    srv.start()
    with srv.client() as c:
        stored = c.get("/v1/events", params={"action": f"{action}*"}).json()["data"]
    assert [e["action"] for e in stored] == [action]  # the 503s ran nothing
