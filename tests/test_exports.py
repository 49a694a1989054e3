"""SPEC §4.7 exports: GET /v1/exports?format=csv|json|ndjson and `recalled-lite export`.

Streamed in ascending seq, ending with the chain head; an unfiltered export re-verifies offline
with the independent verifier of tests/test_integrity_independent.py; 200,000 events stream
without the server's memory growing with the count."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from pathlib import Path


from audit_events import audit_events
from test_cli_progress import run_on_tty
from test_integrity_independent import canonical, independent_verify

EVENTS = [
    {"action": "invoice.paid", "organization": "org_x",
     "actor": {"type": "user", "id": "u1", "name": "Zoë Ångström", "email": "z@example.com"},
     "targets": [{"type": "invoice", "id": "inv_1", "name": "Invoice “1”"}],
     "metadata": {"amount": 4200, "ratio": 0.1, "big": 1.5e16, "nested": {"b": [1, {"a": None}]},
                  "text": "line\nbreak, \"quoted\" \\ emoji 🎉"},
     "ip_address": "203.0.113.9", "user_agent": "Mozilla/5.0 (X11)"},
    {"action": "user.login", "organization": "org_y", "actor": {"id": "u2", "name": ""}},
    {"event_type": "quick.start", "occurred_at": "2026-01-02T03:04:05.678+02:00", "idempotency_key": "k-1",
     "data": {"x": 1}},
    {"action": "doc.shared", "organization": "org_x", "actor": {"id": "u1"},
     "targets": [{"type": "doc", "id": "d1"}], "occurred_at": "2025-06-01T00:00:00Z"},
]


def secret_of(srv) -> bytes:
    return srv.secret_path.read_text().strip().encode()


def fill(srv, extra_batches: int = 2) -> str:
    with srv.client() as c:
        for body in EVENTS:
            r = c.post("/v1/events", json=body)
            assert r.status_code == 200, r.text
        for b in range(extra_batches):
            batch = [{"action": f"batch.{i % 3}", "organization": ["org_x", "org_y"][i % 2],
                      "actor": {"id": f"u{i % 5}", "email": f"u{i}@example.com"}, "metadata": {"i": i, "b": b}}
                     for i in range(100)]
            assert c.post("/v1/events/batch", json={"events": batch}).status_code == 200
        return c.get("/v1/events", params={"limit": 1}).json()["data"][0]["projectId"]


def own_events(srv) -> int:
    """The server's own audit events (the bootstrap key's, first in the chain)."""
    with srv.client() as c:
        return len(audit_events(c))


def parse_ndjson(text: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in text.splitlines()]
    assert list(lines[-1]) == ["head"]
    return lines[:-1], lines[-1]["head"]


def parse_csv(text: str) -> list[list]:
    """RFC 4180, keeping the export's distinction between null (empty, unquoted) and "" (quoted)."""
    rows, row, i, n = [], [], 0, len(text)
    while i < n:
        if text[i] == '"':
            j, buf = i + 1, []
            while True:
                k = text.index('"', j)
                buf.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            row.append("".join(buf))
        else:
            j = i
            while j < n and text[j] not in ",\r":
                j += 1
            raw = text[i:j]
            row.append(None if raw == "" else int(raw) if raw.lstrip("-").isdigit() else raw)
            i = j
        if i < n and text[i] == ",":
            i += 1
            if i >= n or text[i] == "\r":
                row.append(None)
        if i < n and text[i] == "\r":
            assert text[i + 1] == "\n"
            rows.append(row)
            row, i = [], i + 2
    return rows


def check_each_event(events: list[dict], project_id: str, secret: bytes) -> None:
    """What a filtered export can show: every event's own hash and signature (not completeness)."""
    for e in events:
        core = {"action": e["action"], "actorType": e["actor"]["type"], "id": e["id"],
                "idempotencyKey": e["idempotencyKey"], "occurredAt": e["occurredAt"],
                "organization": e["organization"], "personalDigest": e["personalDigest"],
                "projectId": project_id, "receivedAt": e["receivedAt"], "seq": e["seq"], "targets": e["targets"]}
        message = (e["prevHash"] or "").encode() + b"\n" + canonical(core)
        assert "sha256:" + hashlib.sha256(message).hexdigest() == e["hash"]
        assert "hmac-sha256:" + hmac.new(secret, message, "sha256").hexdigest() == e["signature"]


def test_formats_headers_and_offline_verification(make_server):
    srv = make_server("exp_formats")
    project_id = fill(srv)
    secret = secret_of(srv)
    own = own_events(srv)  # seq 1..own; then the 204 events of fill()
    total = 204 + own
    with srv.client() as c:
        r = c.get("/v1/exports", params={"format": "ndjson"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert r.headers["content-disposition"].startswith("attachment; filename=\"recalled-export-")
        assert r.headers["content-disposition"].endswith('.ndjson"')
        events, head = parse_ndjson(r.text)
        assert [e["seq"] for e in events] == list(range(1, total + 1))
        assert {"seq": total, "hash": events[-1]["hash"]}.items() <= head.items()
        assert head["checkpoint"].split("\n")[1] == str(total)  # cut at a checkpoint of that size
        assert r.headers["recalled-chain-head"] == f"{total} {events[-1]['hash']}"
        assert independent_verify(events, project_id, secret) == (True, total, None)
        # The exported objects are the Event objects plus the verification fields.
        listed = c.get(f"/v1/events/{events[0]['id']}").json()["data"]
        assert {k: v for k, v in events[0].items() if k in listed} == listed
        assert set(events[0]) - set(listed) == {"personalSalt", "personalDigest", "erasedAt"}
        assert len(events[0]["personalSalt"]) == 32 and events[0]["erasedAt"] is None

        r = c.get("/v1/exports", params={"format": "json"})
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert set(body) == {"data", "head"} and body["data"] == events and body["head"] == head
        assert independent_verify(body["data"], project_id, secret) == (True, total, None)

        r = c.get("/v1/exports")  # csv is the default
        assert r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"].endswith('.csv"')
        rows = parse_csv(r.text)
        header, data, last = rows[0], rows[1:-1], rows[-1]
        assert header[:4] == ["record", "seq", "id", "projectId"] and len(header) == 24
        assert header[-1] == "checkpoint"
        assert all(len(row) == 24 for row in rows)
        assert last[0] == "head" and last[1] == total and last[header.index("hash")] == head["hash"]
        assert last[-1] == head["checkpoint"] and all(row[-1] is None for row in data)
        assert [row[1] for row in data] == list(range(1, total + 1))
        # Rebuild the events from the CSV: they verify too (null and "" stay distinct).
        rebuilt = []
        for row in data:
            rec = dict(zip(header, row))
            rebuilt.append({
                "seq": rec["seq"], "id": rec["id"], "organization": rec["organization"], "action": rec["action"],
                "actor": {"type": rec["actorType"], "id": rec["actorId"], "name": rec["actorName"],
                          "email": rec["actorEmail"]},
                "targets": json.loads(rec["targets"]) if rec["targets"] is not None else None,
                "metadata": json.loads(rec["metadata"]) if rec["metadata"] is not None else None,
                "ipAddress": rec["ipAddress"], "userAgent": rec["userAgent"], "occurredAt": rec["occurredAt"],
                "receivedAt": rec["receivedAt"], "idempotencyKey": rec["idempotencyKey"],
                "personalSalt": rec["personalSalt"], "personalDigest": rec["personalDigest"],
                "prevHash": rec["prevHash"], "hash": rec["hash"], "signature": rec["signature"],
                "erasedAt": rec["erasedAt"],
            })
        assert rebuilt[own + 1]["actor"]["name"] == "" and rebuilt[own + 1]["actor"]["email"] is None
        assert independent_verify(rebuilt, project_id, secret) == (True, total, None)

        r = c.get("/v1/exports", params={"format": "xml"})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "format"

    # A tampered export is caught by the same verifier (the check is real).
    events[own + 3]["actor"]["name"] = "someone else"  # the fourth of EVENTS
    assert independent_verify(events, project_id, secret)[0] is False


def test_export_filters_and_the_organization_wall(make_server):
    srv = make_server("exp_filters")
    project_id = fill(srv)
    secret = secret_of(srv)
    total = 204 + own_events(srv)
    with srv.client() as c:
        for params in ({"organization": "org_x"}, {"actor_id": "u1"}, {"action": "batch.*"},
                       {"action": "doc.shared"}, {"target_type": "doc", "target_id": "d1"},
                       {"date_from": "2026-01-01", "date_to": "2026-01-02"}, {"organization": "org_y", "actor_id": "u1"}):
            events, head = parse_ndjson(c.get("/v1/exports", params={"format": "ndjson", **params}).text)
            listed = []
            page = c.get("/v1/events", params={**params, "limit": 200}).json()
            while True:
                listed.extend(page["data"])
                if not page["nextCursor"]:
                    break
                page = c.get("/v1/events", params={"cursor": page["nextCursor"], "limit": 200}).json()
            assert [e["seq"] for e in events] == sorted(e["seq"] for e in listed), params
            assert head["seq"] == total
            check_each_event(events, project_id, secret)
        r = c.get("/v1/exports", params={"date_from": "nope"})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "date_from"

    bound = srv.create_key(["exports:read"], organization="org_y")
    with srv.client(key=bound) as c:
        events, head = parse_ndjson(c.get("/v1/exports", params={"format": "ndjson"}).text)
        assert events and {e["organization"] for e in events} == {"org_y"}
        events, head = parse_ndjson(c.get("/v1/exports", params={"format": "ndjson", "organization": "org_x"}).text)
        assert events == [] and head["seq"] == total + 1  # + the bound key's creation
        assert c.get("/v1/exports", params={"format": "json", "organization": "org_x"}).json()["data"] == []


def test_export_is_a_snapshot_while_events_keep_arriving(make_server):
    srv = make_server("exp_snapshot")
    with srv.client() as c:
        for b in range(5):
            assert c.post("/v1/events/batch", json={"events": [{"action": "snap", "metadata": {"i": i}}
                                                               for i in range(1000)]}).status_code == 200
        project_id = c.get("/v1/events", params={"limit": 1}).json()["data"][0]["projectId"]
        total = 5000 + len(audit_events(c))
        chunks = []
        with c.stream("GET", "/v1/exports", params={"format": "ndjson"}) as r:
            it = r.iter_bytes()
            chunks.append(next(it))
            with srv.client() as writer:  # events committed after the export started
                for i in range(20):
                    assert writer.post("/v1/events", json={"action": "late", "metadata": {"i": i}}).status_code == 200
            chunks.extend(it)
    events, head = parse_ndjson(b"".join(chunks).decode())
    assert head["seq"] == total and [e["seq"] for e in events] == list(range(1, total + 1))
    assert independent_verify(events, project_id, secret_of(srv)) == (True, total, None)


def test_cli_export_matches_the_api_and_shows_progress(make_server):
    srv = make_server("exp_cli")
    fill(srv, extra_batches=30)
    total = 3004 + own_events(srv)
    cli = [sys.executable, "-m", "recalled_lite.cli", "export", "--db", srv.db_location]
    with srv.client() as c:
        api = {fmt: c.get("/v1/exports", params={"format": fmt, "organization": "org_x"}).content
               for fmt in ("ndjson", "csv", "json")}
    for fmt, body in api.items():
        out = srv.workdir / f"cli.{fmt}"
        done = subprocess.run(cli + ["--format", fmt, "--organization", "org_x", "--output", str(out)],
                              capture_output=True, text=True, cwd=srv.workdir, timeout=60)
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == body, fmt  # byte for byte the same file while the server runs
        assert not Path(str(out) + ".partial").exists()
        assert "exported" in done.stderr and "exporting [" not in done.stderr  # no bar when not a terminal
    stdout = subprocess.run(cli, capture_output=True, cwd=srv.workdir, timeout=60)  # default: ndjson to stdout
    events, head = parse_ndjson(stdout.stdout.decode())
    assert len(events) == head["seq"] == total
    code, screen = run_on_tty(cli + ["--output", str(srv.workdir / "tty.ndjson")], srv.workdir)
    assert code == 0 and "exporting (seq) [" in screen and "100.0%" in screen and f"{total:,}/{total:,}" in screen
    bad = subprocess.run(cli + ["--date-from", "nope"], capture_output=True, text=True, cwd=srv.workdir, timeout=60)
    assert bad.returncode == 2 and "--date-from" in bad.stderr


# --- 200,000 events: constant memory, and the file verifies offline -------------------------------

N_LARGE = 200_000
BATCH = 1000


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_kib(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, rss_kib(self.pid))


def stream_to_file(c, params: dict, path: Path) -> int:
    size = 0
    with c.stream("GET", "/v1/exports", params=params) as r, open(path, "wb") as out:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            out.write(chunk)
            size += len(chunk)
    return size


class NdjsonEvents:
    """The events of an ndjson export, read lazily (a list of 200,000 dicts is not needed)."""

    def __init__(self, path: Path) -> None:
        self.path, self.count, self.head = path, 0, None

    def __iter__(self):
        self.count = 0
        with open(self.path, "rb") as f:
            for line in f:
                obj = json.loads(line)
                if "head" in obj and len(obj) == 1:
                    self.head = obj["head"]
                    return
                self.count += 1
                yield obj

    def __len__(self) -> int:
        return self.count


def test_export_of_200k_events_streams_in_constant_memory_and_verifies(make_server, tmp_path):
    srv = make_server("exp_large", config_text="[database]\ncache_mb = 4\n")
    bodies = []
    for b in range(10):
        bodies.append(json.dumps({"events": [
            {"action": f"invoice.{['paid', 'sent', 'void'][i % 3]}", "organization": "org_small" if i % 10 == 0 else f"org_{i % 7}",
             "actor": {"type": "user", "id": f"user_{(b * 1000 + i) % 5000:05d}", "name": f"Person {i}",
                       "email": f"person{i}@example.com"},
             "targets": [{"type": "invoice", "id": f"inv_{b}_{i}", "name": f"Invoice {i}"}],
             "metadata": {"amount": i * 7, "currency": "EUR", "note": f"batch {b} item {i} of the large export"},
             "ip_address": f"198.51.100.{i % 256}", "user_agent": "Mozilla/5.0 (large export test)"}
            for i in range(BATCH)]}).encode())
    with srv.client(timeout=120) as c:
        headers = {"Content-Type": "application/json"}
        for n in range(N_LARGE // BATCH):
            r = c.post("/v1/events/batch", content=bodies[n % len(bodies)], headers=headers)
            assert r.status_code == 200, r.text
        project_id = c.get("/v1/events", params={"limit": 1}).json()["data"][0]["projectId"]
        total = N_LARGE + len(audit_events(c))

        pid = srv.proc.pid
        # A first, 10x smaller export warms every cache and allocator pool the export path uses.
        with RssSampler(pid) as small:
            small_size = stream_to_file(c, {"format": "ndjson", "organization": "org_small"}, tmp_path / "small.ndjson")
        rss_before = rss_kib(pid)
        with RssSampler(pid) as large:
            size = stream_to_file(c, {"format": "ndjson"}, tmp_path / "all.ndjson")
    growth_mib = (large.peak - rss_before) / 1024
    print(f"export: {size / 2**20:.0f} MiB streamed; RSS before {rss_before / 1024:.0f} MiB, "
          f"peak {large.peak / 1024:.0f} MiB (+{growth_mib:.1f} MiB); small export peak {small.peak / 1024:.0f} MiB")
    assert size > 9 * small_size and size > 100 * 2**20
    # The body is well over 100 MiB; the server's memory moves by a small constant.
    assert growth_mib < 24, growth_mib
    assert large.peak - small.peak < 24 * 1024

    events = NdjsonEvents(tmp_path / "all.ndjson")
    assert independent_verify(events, project_id, secret_of(srv)) == (True, total, None)
    assert events.head["seq"] == total
