"""Prefilled databases: filled through the batch API in parallel, cached under
bench/data/ keyed by a schema/version marker, cloned per run.

Cache layout: bench/data/<marker>-<events>/ holds the server's whole data
directory (recalled.db, its WAL and the secret file beside it) plus meta.json
(marker, event count, the admin key that works against it) and COMPLETE.
A bigger cache is built by cloning the biggest smaller one and topping it up.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

import msgspec

from . import dataset
from .procs import progress, short

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "bench" / "data"
N_BODIES = 50          # distinct 1000-event batch bodies, cycled


class NotBuilt(Exception):
    pass


def marker() -> str:
    """Changes whenever the on-disk format could change: the schema migrations,
    the FTS text function (storage/fts.py), the package version and the
    dataset generator. Query-side code changes keep the cache."""
    h = hashlib.sha256()
    h.update(f"dataset={dataset.DATASET_VERSION}\n".encode())
    try:
        from importlib.metadata import version
        h.update(f"version={version('recalled-lite')}\n".encode())
    except Exception:
        pass
    storage = REPO / "recalled_lite" / "storage"
    # What a stored row depends on: the schema, the full-text columns and the filter keys.
    files = (sorted(storage.rglob("migrations/*.sql")) + sorted(storage.rglob("fts.py"))
             + sorted(storage.rglob("keys.py")))
    for path in files:
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def cache_dir(events: int) -> Path:
    return DATA_DIR / f"{marker()}-{events}"


def find_cached(events: int) -> Path | None:
    d = cache_dir(events)
    return d if (d / "COMPLETE").exists() else None


def read_meta(d: Path) -> dict:
    return msgspec.json.decode((d / "meta.json").read_bytes())


def clone(src: Path, dest: Path) -> None:
    """Copy a cached data directory (database, WAL, secret) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name in ("meta.json", "COMPLETE") or f.is_dir():
            continue
        shutil.copy2(f, dest / f.name)


def smaller_cached(events: int) -> Path | None:
    mk = marker()
    best, best_n = None, 0
    if DATA_DIR.exists():
        for d in DATA_DIR.iterdir():
            name = d.name.rsplit("-", 1)
            if len(name) == 2 and name[0] == mk and name[1].isdigit() and (d / "COMPLETE").exists():
                n = int(name[1])
                if best_n < n < events:
                    best, best_n = d, n
    return best


def drop_stale() -> None:
    """Remove caches built for another schema/version marker (they can be GBs)."""
    if not DATA_DIR.exists():
        return
    mk = marker()
    for d in DATA_DIR.iterdir():
        if d.is_dir() and not d.name.startswith(mk + "-"):
            progress(f"removing stale prefill cache {d.name}")
            shutil.rmtree(d, ignore_errors=True)


def load_batches(port: int, key: str, total: int, *, conns: int = 4, batch: int = 1000,
                 on_progress: Callable[[int, float], None] | None = None,
                 time_limit: float = 3600.0) -> dict:
    """POST `total` events as batches of `batch` over `conns` keep-alive connections.

    Bounded: exactly ceil(total/batch) requests, and aborted after time_limit."""
    bodies = [dataset.batch_body(1000 + i, batch) for i in range(N_BODIES)]
    n_req = (total + batch - 1) // batch
    last_size = total - (n_req - 1) * batch
    last_body = bodies[0] if last_size == batch else dataset.batch_body(999, last_size)
    lock = threading.Lock()
    state = {"next": 0, "done_events": 0, "error": None}
    t0 = time.monotonic()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        try:
            while True:
                with lock:
                    if state["error"] or state["next"] >= n_req:
                        return
                    if time.monotonic() - t0 > time_limit:
                        state["error"] = f"prefill exceeded its time limit of {time_limit:.0f}s"
                        return
                    i = state["next"]
                    state["next"] += 1
                body = last_body if i == n_req - 1 else bodies[i % N_BODIES]
                size = last_size if i == n_req - 1 else batch
                for attempt in range(10):
                    try:
                        conn.request("POST", "/v1/events/batch", body=body, headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                    except (OSError, http.client.HTTPException) as exc:
                        conn.close()
                        if attempt == 9:
                            raise
                        time.sleep(0.5)
                        continue
                    if resp.status in (429, 503):
                        try:
                            wait = min(5.0, float(resp.getheader("Retry-After") or 1))
                        except ValueError:
                            wait = 1.0
                        time.sleep(wait)
                        continue
                    break
                if resp.status in (404, 405):
                    raise NotBuilt(f"POST /v1/events/batch -> {resp.status}")
                if resp.status != 200:
                    raise RuntimeError(f"POST /v1/events/batch -> {resp.status}: {short(data)}")
                with lock:
                    state["done_events"] += size
                    done = state["done_events"]
                if on_progress:
                    on_progress(done, time.monotonic() - t0)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            with lock:
                state["error"] = state["error"] or exc
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    err = state["error"]
    if err:
        raise err if isinstance(err, BaseException) else RuntimeError(err)
    return {"events": state["done_events"], "seconds": round(elapsed, 2),
            "events_per_s": round(state["done_events"] / elapsed, 1) if elapsed else 0.0}


def progress_printer(total: int, label: str) -> Callable[[int, float], None]:
    step = max(1, total // 10)
    nxt = {"at": step}
    lock = threading.Lock()

    def cb(done: int, elapsed: float) -> None:
        with lock:
            if done >= nxt["at"] or done >= total:
                nxt["at"] = done + step
                rate = done / elapsed if elapsed else 0
                progress(f"{label}: {done:,}/{total:,} events ({rate:,.0f}/s)")
    return cb
