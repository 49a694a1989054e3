"""Concurrent full exports: the server's RSS while N clients stream GET /v1/exports at once,
and what it falls back to afterwards (memory must come back, not stay at the peak).

Each client reads the whole NDJSON export as fast as it can (64 KiB reads) and checks that it
got every event and the closing head line, so a figure never comes from a truncated export.
"""

from __future__ import annotations

import http.client
import json
import threading
import time

from .procs import Server, progress


def _one_export(port: int, key: str, fmt: str, out: dict) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", f"/v1/exports?format={fmt}", headers={"Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        out["status"] = resp.status
        size = lines = 0
        tail = b""
        while True:
            chunk = resp.read(65536)
            if not chunk:
                break
            size += len(chunk)
            lines += chunk.count(b"\n")
            tail = (tail + chunk)[-16384:]  # the head line carries the signed checkpoint
        out.update(bytes=size, lines=lines, last_line=tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    except (OSError, http.client.HTTPException) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def _stored(port: int) -> int:
    """Events in the log (the prefill's, and the server's own audit events before them)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/readyz")
        return json.loads(conn.getresponse().read())["data"]["seq"]
    finally:
        conn.close()


def run(server: Server, key: str, *, events: int, clients: int = 8, fmt: str = "ndjson",
        settle_seconds: float = 5.0) -> dict:
    stored = _stored(server.port)
    assert stored >= events, (stored, events)
    idle_mb = server.rss_mb()
    server.phase_reset()
    results = [dict() for _ in range(clients)]
    threads = [threading.Thread(target=_one_export, args=(server.port, key, fmt, r), daemon=True)
               for r in results]
    progress(f"exports: {clients} concurrent {fmt} exports of {events:,} events (idle RSS {idle_mb:.0f} MB)")
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    seconds = time.monotonic() - t0
    peak_mb = server.phase_peak_mb()
    # Memory must come back: sample after the exports, once the server had time to settle.
    time.sleep(settle_seconds)
    after_mb = server.rss_mb()
    complete = all(r.get("status") == 200 and r.get("lines") == stored + 1
                   and r.get("last_line", b"").startswith(b'{"head"') for r in results)
    total_bytes = sum(r.get("bytes", 0) for r in results)
    return {
        "events": events, "clients": clients, "format": fmt, "seconds": round(seconds, 2),
        "idle_rss_mb": round(idle_mb, 1), "peak_rss_mb": peak_mb, "after_rss_mb": round(after_mb, 1),
        "settle_seconds": settle_seconds, "complete": complete,
        "mb_per_s": round(total_bytes / 1e6 / seconds, 1) if seconds else None,
        "per_client": [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in r.items()} for r in results],
    }
