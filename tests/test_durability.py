"""Acknowledged means durable: SIGKILL the server under load, restart, count (SPEC §4.1, §2)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import httpx


def marker_of(metadata: str | None) -> str | None:
    return json.loads(metadata).get("m") if metadata else None


def _load(server, acked: dict, stop: threading.Event, worker: int) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=5) as c:
        n = 0
        while not stop.is_set() and n < 5000:
            n += 1
            marker = f"w{worker}-{n}-{uuid.uuid4().hex[:8]}"
            try:
                if n % 5 == 0:  # mix in batches
                    body = {"events": [{"action": "load.batch", "metadata": {"m": f"{marker}-{i}"}} for i in range(20)]}
                    r = c.post("/v1/events/batch", json=body)
                    if r.status_code == 200:
                        for i, event in enumerate(r.json()["data"]):
                            acked[f"{marker}-{i}"] = event["id"]
                else:
                    r = c.post("/v1/events", json={"action": "load.single", "metadata": {"m": marker}})
                    if r.status_code == 200:
                        acked[marker] = r.json()["data"]["id"]
            except httpx.TransportError:
                time.sleep(0.05)  # server is down: not acknowledged, try again


def test_sigkill_under_load_loses_nothing_acknowledged(make_server):
    srv = make_server("durable")
    acked: dict[str, str] = {}
    for round_ in range(4):
        stop = threading.Event()
        workers = [threading.Thread(target=_load, args=(srv, acked, stop, w + 10 * round_)) for w in range(8)]
        for w in workers:
            w.start()
        time.sleep(1.5)
        srv.kill()  # SIGKILL mid-load: requests in flight, groups mid-commit
        stop.set()
        for w in workers:
            w.join()
        srv.start()
    srv.stop()

    assert len(acked) > 500, "the load did not get going"
    rows = [(event_id, marker_of(metadata), seq) for event_id, metadata, seq in
            srv.query("SELECT id, metadata, seq FROM events")]
    by_marker: dict[str, list[str]] = {}
    for event_id, marker, _ in rows:
        by_marker.setdefault(marker, []).append(event_id)
    missing = [m for m in acked if m not in by_marker]
    assert missing == [], f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"
    for marker, event_id in acked.items():
        assert by_marker[marker] == [event_id], f"{marker} stored {len(by_marker[marker])} times"
    seqs = sorted(seq for *_, seq in rows)
    assert seqs == list(range(1, len(seqs) + 1)), "seq has gaps"

    result = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "verify", "--db", srv.db_location],
                            capture_output=True, text=True, cwd=srv.workdir)
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)["data"]
    assert verdict["valid"] is True and verdict["checked"] == len(rows)


def test_sigterm_drains_in_flight_requests(make_server):
    srv = make_server("drain")
    acked: dict[str, str] = {}
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=(srv, acked, stop, w)) for w in range(4)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is the normal exit.
    assert srv.stop() in (0, -15)
    stop.set()
    for w in workers:
        w.join()
    assert "database closed cleanly" in srv.log_text()
    stored = {marker_of(metadata) for (metadata,) in srv.query("SELECT metadata FROM events")}
    assert set(acked) <= stored
