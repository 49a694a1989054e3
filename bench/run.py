"""recalled-lite benchmark harness: measures the spec's §7 performance bars.

    python -m bench.run [--quick] [--json PATH] [--only NAME,...]

wrk generates the HTTP load (C, so it is not the bottleneck); this module only
orchestrates: it starts servers on free ports with temporary databases, runs
the scenarios, prints progress to stderr and ONE table to stdout, and writes
the full results as JSON (default bench/results/<UTC timestamp>.json).
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import msgspec

from . import (console, dataset, durability, erasure, exports, pocketbase, postgres, prefill, retention,
               sql_floor, trickle, webhooks, wrkrun)
from .procs import Server, ServerFailed, free_port, json_or_none, progress, request, short

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
SCENARIOS = ["baseline", "pocketbase", "intake", "batch", "floor", "prefilled", "list", "search", "erasure",
             "retention", "webhooks", "exports", "console", "trickle", "postgres"]
MAX_ERROR_RATE = 0.01   # more non-2xx/socket errors than this and a figure is not trusted

# The targets of issue #14, each a ratio or figure measured in the same run.
INTAKE_VS_ECHO = 0.5        # single-event intake >= 0.5x the bare Starlette + msgspec echo
INTAKE_VS_POCKETBASE = 3.0  # ... and >= 3x PocketBase inserting the same event
BATCH_EVENTS_PER_S = 30_000  # 1000 events/request, empty database
GROWTH_RATIO = 0.85         # intake with 5M stored vs empty, single-event and batch
BATCH_AT_5M_EVENTS_PER_S = 16_500  # 2.5x the 6.6k/s measured before the layout change


class NotBuilt(Exception):
    pass


@dataclass
class Config:
    quick: bool
    duration: float          # seconds per measured wrk run
    warmup: float            # seconds of wrk warm-up per server
    conns: tuple[int, ...] = (32, 64)
    batch_conns: int = 4
    read_conns: int = 1      # p50 is measured unloaded; full mode adds a loaded run for info
    read_loaded_conns: int = 16
    intake_prefill: int = 5_000_000
    read_prefill: int = 1_000_000
    prefill_conns: int = 4
    wh_rate: float = 500.0
    wh_seconds: float = 20.0
    wh_burst_events: int = 3000
    wh_subs: int = 16
    wrk_threads: int = 1
    tricklers: int = 200     # slow-body connections held open during the trickle run


def make_config(args) -> Config:
    if args.quick:
        cfg = Config(quick=True, duration=5, warmup=1, intake_prefill=200_000,
                     read_prefill=200_000, wh_seconds=5, wh_burst_events=1000)
    else:
        cfg = Config(quick=False, duration=20, warmup=3)
    if args.duration:
        cfg.duration = args.duration
    if args.prefill:
        cfg.intake_prefill = args.prefill
    if args.read_prefill:
        cfg.read_prefill = args.read_prefill
    cfg.wrk_threads = args.wrk_threads
    return cfg


@dataclass
class Row:
    scenario: str
    figure: str
    bar: str = "—"
    status: str = "info"     # pass | short | info | not built | failed | errors | skipped


@dataclass
class Ctx:
    cfg: Config
    tmp: Path
    server_bin: list[str]
    refill: bool
    server_config: str | None = None
    rows: list[Row] = field(default_factory=list)
    raw: dict = field(default_factory=dict)
    memory: list[dict] = field(default_factory=list)   # one entry per recalled-lite run
    audits: list[dict] = field(default_factory=list)   # one per server that took intake load

    def add(self, *rows: Row) -> None:
        for r in rows:
            r.figure = " ".join(r.figure.split())
            self.rows.append(r)
            progress(f"  => {r.scenario}: {r.figure} [{r.status}]")


# -- helpers -----------------------------------------------------------------

def new_key() -> str:
    alnum = string.ascii_letters + string.digits
    return "rec_live_bench001_" + "".join(secrets.choice(alnum) for _ in range(32))


def human_n(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def verdict(ok: bool) -> str:
    return "pass" if ok else "short"


def error_note(res: dict) -> str | None:
    bad = res["non_2xx"] + res["socket_errors"]
    if res["requests"] and bad / res["requests"] > MAX_ERROR_RATE:
        return f"{res['non_2xx']} non-2xx, {res['socket_errors']} socket errors of {res['requests']}"
    return None


def lat_str(res: dict) -> str:
    out = f"p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms"
    if res.get("server_cpu_pct") is not None:
        out += f", server CPU {res['server_cpu_pct']:.0f}%"
    return out


def start_recalled(ctx: Ctx, name: str, data_dir: Path, key: str, *, dev: bool = False,
                   timeout: float = 60.0) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [*ctx.server_bin, "serve", "--db", str(data_dir / "recalled.db"),
            "--host", "127.0.0.1", "--port", str(port)]
    if dev:
        argv.append("--dev")
    if ctx.server_config:
        argv += ["--config", ctx.server_config]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
    env["RECALLED_BOOTSTRAP_KEY"] = key
    progress(f"starting recalled-lite ({name}) on :{port}")
    server = Server(f"recalled-lite ({name})", argv, env=env, cwd=data_dir,
                    log_path=ctx.tmp / f"server-{name}.log", port=port)
    server.start(timeout=timeout)
    # For the durability audit at stop: where the chain stood, and how many events
    # the load generator saw acknowledged (run_wrk and the probes add to it).
    server.key, server.db = key, data_dir / "recalled.db"
    server.base_seq, server.acked = durability.head_seq(port), 0
    return server


def stop_recalled(ctx: Ctx, server: Server, scenario: str, timeout: float = 30.0) -> bool:
    mem = server.memory()
    acked = getattr(server, "acked", 0)
    settings = durability.storage_info(server.port, server.key) if acked and server.alive() else {}
    clean = server.stop(timeout=timeout)
    ctx.memory.append({"scenario": scenario, **mem, "clean_exit": clean,
                       "exit_code": server.returncode})
    if acked:
        progress(f"durability audit ({scenario}): {acked:,} acknowledged events")
        result = durability.audit(ctx.server_bin, server.db, base_seq=server.base_seq,
                                  acknowledged=acked, settings=settings)
        ctx.audits.append({"scenario": scenario, **result})
        if not result["ok"]:
            progress(f"durability audit ({scenario}) FAILED: {'; '.join(result['problems'])}")
    return clean


def probe(port: int, method: str, path: str, body: bytes | None, key: str) -> dict | None:
    """One request before the load: a missing route means "not built"; any other
    non-200 means the figure would be meaningless."""
    status, _, data = request(port, method, path, body, key=key)
    if status in (404, 405):
        raise NotBuilt(f"{method} {path.split('?')[0]} -> {status}")
    if status != 200:
        raise RuntimeError(f"probe {method} {path.split('?')[0]} -> {status}: {short(data)}")
    return json_or_none(data)


def run_wrk(server: Server, script: str, conns: int, duration: float, ctx: Ctx, label: str,
            path: str = "/", env: dict | None = None, events_per_request: int = 0) -> dict:
    progress(f"wrk {label}: {conns} conns, {duration:g}s")
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    res = wrkrun.run(f"http://127.0.0.1:{server.port}{path}", script, conns=conns,
                     duration=duration, threads=ctx.cfg.wrk_threads, env=env)
    # Server CPU use during the run: ~100 % means the server is the bottleneck
    # (one event loop); well below means something else is (machine busy, wrk).
    res["server_cpu_pct"] = round(100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - t0), 1)
    if events_per_request:
        server.acked += res["ok"] * events_per_request
    if not server.alive():
        head = f"{server.name} died during the load (exit {server.proc.poll()})"
        raise ServerFailed(f"{head}: {server.tail()}", f"{head}: {server.tail(1)}")
    return res


SINGLE_EVENT = msgspec.json.encode({
    "action": "invoice.paid", "organization": "org_acme",
    "actor": {"type": "user", "id": "user_123", "name": "Ada", "email": "ada@example.com"},
    "targets": [{"type": "invoice", "id": "inv_42"}],
    "metadata": {"amount": 4200, "currency": "EUR"}})


# -- scenarios -----------------------------------------------------------------

def scen_baseline(ctx: Ctx) -> None:
    port = free_port()
    srv = Server("baseline echo", [sys.executable, "-m", "bench.baseline_app", "--host",
                                   "127.0.0.1", "--port", str(port)],
                 cwd=REPO, log_path=ctx.tmp / "baseline.log", port=port)
    progress(f"starting baseline echo app on :{port}")
    srv.start(timeout=30)
    try:
        probe(port, "POST", "/v1/events", SINGLE_EVENT, "")
        measure_peer(ctx, srv, "baseline", "baseline echo", {})
    finally:
        ctx.raw["baseline_memory"] = srv.memory()
        srv.stop(5)


def measure_peer(ctx: Ctx, srv: Server, tag: str, label: str, env: dict[str, str]) -> None:
    """Single-event POSTs at every connection count against a peer (the echo, PocketBase):
    the rows the intake ratios are taken against, under ctx.raw[f"{tag}_{conns}"]."""
    run_wrk(srv, "post_event.lua", max(ctx.cfg.conns), ctx.cfg.warmup, ctx, f"{tag} warm-up", env=env)
    for c in ctx.cfg.conns:
        srv.phase_reset()
        res = run_wrk(srv, "post_event.lua", c, ctx.cfg.duration, ctx, f"{tag} {c}", env=env)
        res["peak_rss_mb"] = srv.phase_peak_mb()
        ctx.raw[f"{tag}_{c}"] = res
        note = error_note(res)
        ctx.add(Row(f"{label}, {c} conns",
                    f"{res['ok_rps']:,.0f} req/s, {lat_str(res)}" + (f" ({note})" if note else ""),
                    "—", "errors" if note else "info"))


def scen_pocketbase(ctx: Ctx) -> None:
    """The PocketBase peer (bench/pocketbase.py); the fallback row when it cannot run."""
    try:
        srv, token = pocketbase.start(ctx.tmp)
    except (pocketbase.Unavailable, ServerFailed) as exc:
        reason = str(getattr(exc, "brief", exc))
        ctx.raw["pocketbase_unavailable"] = reason
        ctx.add(Row("PocketBase peer", f"unavailable ({reason[:200]})", "—", "info"))
        return
    env = {"BENCH_KEY": token, "BENCH_PATH": pocketbase.RECORDS_PATH}
    try:
        measure_peer(ctx, srv, "pocketbase", f"PocketBase {pocketbase.VERSION} peer", env)
    finally:
        ctx.raw["pocketbase_memory"] = srv.memory()
        srv.stop(10)


def measure_single(ctx: Ctx, server: Server, key: str, conns: tuple[int, ...], tag: str) -> dict:
    probe(server.port, "POST", "/v1/events", SINGLE_EVENT, key)
    server.acked += 1
    env = {"BENCH_KEY": key}
    run_wrk(server, "post_event.lua", max(conns), ctx.cfg.warmup, ctx, f"{tag} warm-up", env=env,
            events_per_request=1)
    out = {}
    for c in conns:
        server.phase_reset()
        res = run_wrk(server, "post_event.lua", c, ctx.cfg.duration, ctx, f"{tag} {c}", env=env,
                      events_per_request=1)
        res["peak_rss_mb"] = server.phase_peak_mb()
        out[c] = res
    return out


def measure_batch(ctx: Ctx, server: Server, key: str, tag: str) -> dict:
    body_file = ctx.tmp / "batch-1000.json"
    if not body_file.exists():
        body_file.write_bytes(dataset.batch_body(424242, 1000))
    probe(server.port, "POST", "/v1/events/batch", dataset.batch_body(1, 10), key)
    server.acked += 10
    env = {"BENCH_KEY": key, "BENCH_BODY_FILE": str(body_file)}
    run_wrk(server, "post_batch.lua", ctx.cfg.batch_conns, ctx.cfg.warmup, ctx,
            f"{tag} warm-up", env=env, events_per_request=1000)
    server.phase_reset()
    res = run_wrk(server, "post_batch.lua", ctx.cfg.batch_conns, ctx.cfg.duration, ctx,
                  tag, env=env, events_per_request=1000)
    res["events_per_s"] = round(res["ok_rps"] * 1000, 1)
    res["peak_rss_mb"] = server.phase_peak_mb()
    return res


def scen_intake(ctx: Ctx) -> None:
    key = new_key()
    server = start_recalled(ctx, "intake", ctx.tmp / "intake", key)
    try:
        results = measure_single(ctx, server, key, ctx.cfg.conns, "intake")
    finally:
        stop_recalled(ctx, server, "intake")
    for c, res in results.items():
        ctx.raw[f"intake_{c}"] = res
        note = error_note(res)
        fig = f"{res['ok_rps']:,.0f} req/s, {lat_str(res)}"
        for peer, title, bar in (("baseline", "echo", INTAKE_VS_ECHO),
                                 ("pocketbase", "PocketBase", INTAKE_VS_POCKETBASE)):
            other = ctx.raw.get(f"{peer}_{c}")
            if other and other["ok_rps"] and not error_note(other):
                ratio = res["ok_rps"] / other["ok_rps"]
                res[f"ratio_to_{peer}"] = round(ratio, 3)
                row_fig = f"{ratio:.3f}x {title} ({fig} vs {other['ok_rps']:,.0f})"
                status = verdict(ratio >= bar)
            else:
                row_fig = f"{fig} (no {title} figure in this run)"
                status = "info"
            if note:
                row_fig, status = row_fig + f" ({note})", "errors"
            ctx.add(Row(f"single-event intake vs {title}, {c} conns", row_fig, f">= {bar:g}x {title}", status))


def scen_batch(ctx: Ctx) -> None:
    key = new_key()
    server = start_recalled(ctx, "batch", ctx.tmp / "batch", key)
    try:
        res = measure_batch(ctx, server, key, "batch 1000/req")
    finally:
        stop_recalled(ctx, server, "batch")
    ctx.raw["batch"] = res
    note = error_note(res)
    ctx.add(Row(f"batch intake, 1000/req, {ctx.cfg.batch_conns} conns",
                f"{res['events_per_s']:,.0f} events/s (per request {lat_str(res)})"
                + (f" ({note})" if note else ""),
                f">= {BATCH_EVENTS_PER_S:,} events/s",
                "errors" if note else verdict(res["events_per_s"] >= BATCH_EVENTS_PER_S)))


def scen_floor(ctx: Ctx) -> None:
    """SQLite alone (bench/sql_floor.py), to compare the intake rows with."""
    n = ctx.cfg.intake_prefill
    for label, source in (("empty", None), (f"{human_n(n)}{'*' if n != 5_000_000 else ''} stored",
                                             ensure_prefill(ctx, n))):
        progress(f"SQLite floor on the {label} database")
        results = sql_floor.floor(source, ctx.tmp / "floor", n=20_000)
        ctx.raw[f"sql_floor_{'empty' if source is None else 'prefilled'}"] = results
        ctx.add(Row(f"SQLite alone, {label} (no HTTP, no Python)",
                    sql_floor.describe(results), "— (compare intake)", "info"))


def ensure_prefill(ctx: Ctx, events: int) -> Path:
    """A cached database holding `events` events, built (or topped up) if needed."""
    mk = prefill.marker()
    if ctx.refill and not ctx.raw.get("_refilled", {}).get(events):
        shutil.rmtree(prefill.cache_dir(events), ignore_errors=True)
        ctx.raw.setdefault("_refilled", {})[events] = True
    cached = prefill.find_cached(events)
    if cached:
        progress(f"prefill: reusing cached {human_n(events)}-event database {cached.name}")
        return cached
    prefill.drop_stale()
    # Build the smaller standard level first (1M on the way to 5M), so both get cached.
    for level in sorted({ctx.cfg.read_prefill, ctx.cfg.intake_prefill}):
        if level < events and not prefill.find_cached(level):
            ensure_prefill(ctx, level)
    prefill.DATA_DIR.mkdir(parents=True, exist_ok=True)
    base = prefill.smaller_cached(events)
    build = prefill.DATA_DIR / f".build-{mk}-{events}-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    have, key = 0, new_key()
    if base:
        meta = prefill.read_meta(base)
        have, key = meta["events"], meta["key"]
        progress(f"prefill: topping up cached {human_n(have)} database to {human_n(events)}")
        prefill.clone(base, build)
    else:
        progress(f"prefill: building a {human_n(events)}-event database through the batch API "
                 f"({ctx.cfg.prefill_conns} connections); cached under bench/data/ for next time")
    try:
        server = start_recalled(ctx, f"prefill-{human_n(events)}", build, key, timeout=600)
        try:
            stats = prefill.load_batches(
                server.port, key, events - have, conns=ctx.cfg.prefill_conns,
                on_progress=prefill.progress_printer(events - have, "prefill"),
                time_limit=3 * 3600)
        except prefill.NotBuilt as exc:
            raise NotBuilt(str(exc)) from exc
        finally:
            clean = stop_recalled(ctx, server, f"prefill {human_n(events)}", timeout=300)
        if not clean:
            progress("prefill: server did not exit cleanly after SIGTERM; the copy is still "
                     "consistent (committed data is in the db + WAL)")
        stats.update(events_total=events, key=key, marker=mk, created=now_iso(),
                     from_cache=base.name if base else None)
        ctx.raw.setdefault("prefill_builds", []).append({k: v for k, v in stats.items() if k != "key"})
        (build / "meta.json").write_bytes(msgspec.json.encode(stats))
        (build / "COMPLETE").write_text(now_iso() + "\n")
        dest = prefill.cache_dir(events)
        shutil.rmtree(dest, ignore_errors=True)
        build.rename(dest)
        progress(f"prefill: {stats['events']:,} events in {stats['seconds']}s "
                 f"({stats['events_per_s']:,.0f}/s); cached as {dest.name}")
        return dest
    finally:
        shutil.rmtree(build, ignore_errors=True)


def scen_prefilled(ctx: Ctx) -> None:
    n = ctx.cfg.intake_prefill
    label = human_n(n) + ("*" if n != 5_000_000 else "")
    c = max(ctx.cfg.conns)
    cache = ensure_prefill(ctx, n)
    key = prefill.read_meta(cache)["key"]
    work = ctx.tmp / "prefilled"
    progress(f"cloning {cache.name} for the intake run")
    prefill.clone(cache, work)
    try:
        server = start_recalled(ctx, f"prefilled-{human_n(n)}", work, key, timeout=600)
        try:
            single = measure_single(ctx, server, key, (c,), f"intake on {human_n(n)}")[c]
            batch = measure_batch(ctx, server, key, f"batch on {human_n(n)}")
        finally:
            stop_recalled(ctx, server, f"prefilled {human_n(n)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    empty_single = ctx.raw.get(f"intake_{c}")
    empty_batch = ctx.raw.get("batch")
    if not empty_single or not empty_batch:
        key2 = new_key()
        server = start_recalled(ctx, "empty", ctx.tmp / "empty", key2)
        try:
            empty_single = empty_single or measure_single(ctx, server, key2, (c,), "intake empty")[c]
            empty_batch = empty_batch or measure_batch(ctx, server, key2, "batch empty")
        finally:
            stop_recalled(ctx, server, "empty")
    ctx.raw["prefilled"] = {"events": n, "single": single, "batch": batch,
                            "empty_single": empty_single, "empty_batch": empty_batch}
    for kind, full, empty, unit, field_ in (
            ("single-event", single, empty_single, "req/s", "ok_rps"),
            ("batch", batch, empty_batch, "events/s", "events_per_s")):
        ratio = full[field_] / empty[field_] if empty[field_] else 0.0
        note = error_note(full) or error_note(empty)
        ctx.add(Row(f"{kind} intake, {label} stored vs empty",
                    f"{ratio:.3f} ({full[field_]:,.0f} vs {empty[field_]:,.0f} {unit})"
                    + (f" ({note})" if note else ""),
                    f">= {GROWTH_RATIO:g}", "errors" if note else verdict(ratio >= GROWTH_RATIO)))
    note = error_note(batch)
    ctx.add(Row(f"batch intake, 1000/req, {label} stored",
                f"{batch['events_per_s']:,.0f} events/s" + (f" ({note})" if note else ""),
                f">= {BATCH_AT_5M_EVENTS_PER_S:,} events/s (2.5x 6.6k)",
                "errors" if note else verdict(batch["events_per_s"] >= BATCH_AT_5M_EVENTS_PER_S)))


def scen_read(ctx: Ctx, which: list[str]) -> None:
    """list/search p50 on the read prefill (1M) and on the intake prefill (5M)."""
    for n in sorted({ctx.cfg.read_prefill, ctx.cfg.intake_prefill}):
        read_on(ctx, which, n, suffix="" if n == ctx.cfg.read_prefill else f"_{human_n(n)}")


def read_on(ctx: Ctx, which: list[str], n: int, suffix: str) -> None:
    label = human_n(n) + ("*" if n not in (1_000_000, 5_000_000) else "")
    cache = ensure_prefill(ctx, n)
    key = prefill.read_meta(cache)["key"]
    work = ctx.tmp / "read"
    progress(f"cloning {cache.name} for the read runs")
    prefill.clone(cache, work)
    specs = {"list": ("list page (50, org+action)", dataset.list_paths(), 5.0),
             "search": ("search", dataset.search_paths(), 30.0)}
    try:
        server = start_recalled(ctx, f"read-{human_n(n)}", work, key, timeout=600)
        try:
            for name in which:
                title, paths, bar = specs[name]
                scenario = f"{title}, {label} events"
                try:
                    for p in paths[:8]:
                        probe(server.port, "GET", p, None, key)
                except NotBuilt as exc:
                    ctx.add(Row(scenario, f"not built ({exc})", f"p50 <= {bar:g} ms", "not built"))
                    continue
                paths_file = ctx.tmp / f"{name}-paths.txt"
                paths_file.write_text("\n".join(paths) + "\n")
                env = {"BENCH_KEY": key, "BENCH_PATHS_FILE": str(paths_file)}
                run_wrk(server, "get_paths.lua", ctx.cfg.read_conns, ctx.cfg.warmup, ctx,
                        f"{name} warm-up", env=env)
                server.phase_reset()
                res = run_wrk(server, "get_paths.lua", ctx.cfg.read_conns, ctx.cfg.duration,
                              ctx, name, env=env)
                res["peak_rss_mb"] = server.phase_peak_mb()
                res["paths"] = paths
                ctx.raw[name + suffix] = res
                if not ctx.cfg.quick:
                    loaded = run_wrk(server, "get_paths.lua", ctx.cfg.read_loaded_conns,
                                     ctx.cfg.duration / 2, ctx, f"{name} loaded", env=env)
                    ctx.raw[f"{name}_loaded{suffix}"] = loaded
                note = error_note(res)
                ctx.add(Row(scenario,
                            f"p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms "
                            f"({res['ok_rps']:,.0f} req/s at {ctx.cfg.read_conns} conn)"
                            + (f" ({note})" if note else ""),
                            f"p50 <= {bar:g} ms", "errors" if note else verdict(res["p50_ms"] <= bar)))
        finally:
            stop_recalled(ctx, server, f"read {human_n(n)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def scen_erasure(ctx: Ctx) -> None:
    """Single-event intake p99 on the read prefill (1M), alone and then while erasures run
    back to back (bench/erasure.py). Bar: the p99 during erasures is at most twice the p99
    without, i.e. the incremental purge costs intake about one write group, not a stall."""
    n = ctx.cfg.read_prefill
    label = human_n(n) + ("*" if n != 1_000_000 else "")
    c = max(ctx.cfg.conns)
    cache = ensure_prefill(ctx, n)
    key = prefill.read_meta(cache)["key"]
    work = ctx.tmp / "erasure"
    progress(f"cloning {cache.name} for the erasure run")
    prefill.clone(cache, work)
    env = {"BENCH_KEY": key}
    try:
        server = start_recalled(ctx, f"erasure-{human_n(n)}", work, key, timeout=600)
        try:
            without = measure_single(ctx, server, key, (c,), f"intake on {human_n(n)}, no erasure")[c]
            eraser = erasure.Eraser(server.port, key).start()
            try:
                time.sleep(1.0)  # the first purge is under way when wrk starts
                server.phase_reset()
                during = run_wrk(server, "post_event.lua", c, ctx.cfg.duration, ctx,
                                 f"intake on {human_n(n)} during erasures", env=env, events_per_request=1)
            finally:
                eraser.stop()
            erasures = eraser.summary()
        finally:
            stop_recalled(ctx, server, f"erasure {human_n(n)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ctx.raw["erasure"] = {"events": n, "conns": c, "without": without, "during": during,
                          "erasures": erasures}
    title = f"intake p99 during an erasure on {label} events, {c} conns"
    if not erasures["erasures"]:
        ctx.add(Row(title, f"no erasure completed ({erasures['errors'] or 'none started'})",
                    "<= 2x p99 without", "failed"))
        return
    ratio = during["p99_ms"] / without["p99_ms"] if without["p99_ms"] else float("inf")
    note = error_note(during) or error_note(without)
    fig = (f"p99 {during['p99_ms']:.1f} ms vs {without['p99_ms']:.1f} ms without ({ratio:.2f}x); "
           f"p50 {during['p50_ms']:.2f} vs {without['p50_ms']:.2f} ms; {during['ok_rps']:,.0f} vs "
           f"{without['ok_rps']:,.0f} req/s; {erasures['erasures']} erasures back to back, "
           f"{erasures['seconds_mean']:.1f} s each")
    ctx.add(Row(title, fig + (f" ({note})" if note else ""), "<= 2x p99 without",
                "errors" if note or erasures["error_count"] else verdict(ratio <= 2.0)))


def retention_events(cfg: Config) -> int:
    return 100_000 if cfg.quick else 400_000


def scen_retention(ctx: Ctx) -> None:
    """Single-event intake p99 alone, then while a purge job deletes back-dated expired events
    (bench/retention.py). Bar: at most twice the p99 without: a batch costs intake about one
    write group, never a stall."""
    n = retention_events(ctx.cfg)
    c = max(ctx.cfg.conns)
    key = new_key()
    work = ctx.tmp / "retention"
    env = {"BENCH_KEY": key}
    title = f"intake p99 during a purge of {human_n(n)} expired events, {c} conns"
    server = start_recalled(ctx, "retention", work, key, timeout=120)
    try:
        progress(f"loading {n:,} back-dated events")
        retention.load_expired(server.port, key, n)
        server.base_seq = durability.head_seq(server.port)  # the audit checks what wrk adds (kept)
        without = measure_single(ctx, server, key, (c,), "intake, no purge")[c]
        job_id = retention.start_purge(server.port, key)
        time.sleep(0.5)  # the first batches are under way when wrk starts
        server.phase_reset()
        during = run_wrk(server, "post_event.lua", c, ctx.cfg.duration, ctx, "intake during the purge",
                         env=env, events_per_request=1)
        at_end = retention.job(server.port, key, job_id)
        final = retention.wait(server.port, key, job_id)
    finally:
        stop_recalled(ctx, server, "retention")
        shutil.rmtree(work, ignore_errors=True)
    ctx.raw["retention"] = {"events": n, "conns": c, "without": without, "during": during,
                            "job_at_wrk_end": at_end, "job": final}
    if final.get("status") != "completed" or final.get("purged") != n:
        ctx.add(Row(title, f"the purge did not complete ({final})", "<= 2x p99 without", "failed"))
        return
    ratio = during["p99_ms"] / without["p99_ms"] if without["p99_ms"] else float("inf")
    note = error_note(during) or error_note(without)
    still = at_end.get("status") == "running"
    fig = (f"p99 {during['p99_ms']:.1f} ms vs {without['p99_ms']:.1f} ms without ({ratio:.2f}x); "
           f"p50 {during['p50_ms']:.2f} vs {without['p50_ms']:.2f} ms; {during['ok_rps']:,.0f} vs "
           f"{without['ok_rps']:,.0f} req/s; {at_end.get('purged', 0):,} purged during the run"
           f"{' (the purge was still running at its end)' if still else ' (the purge ended before wrk: partly unloaded)'}, "
           f"{final['batches']} batches in all")
    ctx.add(Row(title, fig + (f" ({note})" if note else ""), "<= 2x p99 without",
                "errors" if note else verdict(ratio <= 2.0)))


def scen_webhooks(ctx: Ctx) -> None:
    cfg = ctx.cfg
    rows = (f"webhook deliveries/s ({cfg.wh_subs} subscriptions)",
            f"webhook event->receiver p50 at {cfg.wh_rate:.0f} events/s")
    key = new_key()
    server = start_recalled(ctx, "webhooks", ctx.tmp / "webhooks", key, dev=True)
    receiver = None
    try:
        probe(server.port, "POST", "/v1/events", SINGLE_EVENT, key)
        receiver = webhooks.Receiver(ctx.tmp / "receiver.log")
        try:
            res = webhooks.run(server, key, receiver, rate=cfg.wh_rate,
                               rate_seconds=cfg.wh_seconds, burst_events=cfg.wh_burst_events,
                               burst_subs=cfg.wh_subs)
        except NotImplementedError as exc:
            for r in rows:
                ctx.add(Row(r, f"not built ({exc})", "", "not built"))
            ctx.rows[-2].bar, ctx.rows[-1].bar = ">= 2,000/s", "<= 20 ms"
            return
    finally:
        if receiver:
            receiver.stop()
        stop_recalled(ctx, server, "webhooks")
    ctx.raw["webhooks"] = res
    tp, lat = res["throughput"], res["latency"]
    dps = tp["deliveries_per_s"] or 0.0
    fig = (f"{dps:,.0f}/s ({tp['delivered']:,}/{tp['expected_deliveries']:,} delivered "
           f"in {tp['seconds_first_post_to_last_delivery']}s)")
    ctx.add(Row(rows[0], fig, ">= 2,000/s",
                verdict(dps >= 2000 and tp["complete"]) if tp["delivered"] else "failed"))
    p50 = lat["p50_ms_from_receivedAt"]
    if p50 is None:
        ctx.add(Row(rows[1], f"nothing delivered ({lat['delivered']} of "
                             f"{lat['events_acknowledged']} events)", "<= 20 ms", "failed"))
    else:
        complete = lat["delivered"] >= lat["events_acknowledged"]
        ctx.add(Row(rows[1],
                    f"p50 {p50:.1f} ms, p99 {lat['p99_ms_from_receivedAt']:.1f} ms "
                    f"(sent {lat['sender']['achieved_rate']:.0f}/s, "
                    f"{lat['delivered']}/{lat['events_acknowledged']} delivered)",
                    "<= 20 ms", verdict(p50 <= 20 and complete)))


EXPORT_EVENTS = 200_000
EXPORT_CLIENTS = 8
EXPORT_BAR_MB = 200
# "Memory comes back": after the exports, RSS must fall to within this much of idle.
EXPORT_SETTLE_MARGIN_MB = 40


def export_row_title() -> str:
    return f"{EXPORT_CLIENTS} concurrent exports of {human_n(EXPORT_EVENTS)} events: peak RSS"


def scen_exports(ctx: Ctx) -> None:
    cache = ensure_prefill(ctx, EXPORT_EVENTS)
    key = prefill.read_meta(cache)["key"]
    work = ctx.tmp / "exports"
    progress(f"cloning {cache.name} for the export run")
    prefill.clone(cache, work)
    try:
        server = start_recalled(ctx, f"exports-{human_n(EXPORT_EVENTS)}", work, key, timeout=600)
        try:
            res = exports.run(server, key, events=EXPORT_EVENTS, clients=EXPORT_CLIENTS)
        finally:
            stop_recalled(ctx, server, "exports")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ctx.raw["exports"] = res
    came_back = res["after_rss_mb"] <= res["idle_rss_mb"] + EXPORT_SETTLE_MARGIN_MB
    fig = (f"{res['peak_rss_mb']:.0f} MB peak; {res['after_rss_mb']:.0f} MB {res['settle_seconds']:g} s after "
           f"(idle {res['idle_rss_mb']:.0f} MB); {res['seconds']:.1f} s, {res['mb_per_s']} MB/s in all")
    if not res["complete"]:
        ctx.add(Row(export_row_title(), fig + " (an export was incomplete)",
                    f"<= {EXPORT_BAR_MB} MB, back to idle", "errors"))
        return
    ctx.add(Row(export_row_title(), fig, f"<= {EXPORT_BAR_MB} MB, back to idle +{EXPORT_SETTLE_MARGIN_MB}",
                verdict(res["peak_rss_mb"] <= EXPORT_BAR_MB and came_back)))


def scen_console(ctx: Ctx) -> None:
    """One row per console page (bench/console.py), each measured on one connection."""
    n = ctx.cfg.read_prefill
    label = human_n(n) + ("*" if n != 1_000_000 else "")
    cache = ensure_prefill(ctx, n)
    key = prefill.read_meta(cache)["key"]
    work = ctx.tmp / "console"
    progress(f"cloning {cache.name} for the console pages")
    prefill.clone(cache, work)
    seconds = max(3.0, ctx.cfg.duration / 4)
    try:
        server = start_recalled(ctx, f"console-{human_n(n)}", work, key, dev=True, timeout=600)
        try:
            try:
                cookie = console.sign_in(server.port, key)
            except NotImplementedError as exc:
                raise NotBuilt(str(exc)) from exc
            ids = console.seed(server.port, key)
            for title, paths in console.pages(ids):
                scenario = f"console: {title}, {label} events"
                for path in paths[:8]:
                    status, body = console.get(server.port, path, cookie)
                    if status != 200:
                        raise RuntimeError(f"console probe {path} -> {status}: {short(body)}")
                paths_file = ctx.tmp / "console-paths.txt"
                paths_file.write_text("\n".join(paths) + "\n")
                env = {"BENCH_COOKIE": cookie, "BENCH_PATHS_FILE": str(paths_file)}
                run_wrk(server, "get_paths.lua", 1, ctx.cfg.warmup, ctx, f"console {title} warm-up", env=env)
                res = run_wrk(server, "get_paths.lua", 1, seconds, ctx, f"console {title}", env=env)
                ctx.raw.setdefault("console", {})[title] = res
                note = error_note(res)
                ctx.add(Row(scenario, f"p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms"
                                      + (f" ({note})" if note else ""),
                            f"p50 <= {console.BAR_MS:g} ms",
                            "errors" if note else verdict(res["p50_ms"] <= console.BAR_MS)))
        finally:
            stop_recalled(ctx, server, f"console {human_n(n)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def scen_trickle(ctx: Ctx) -> None:
    """Intake latency while connections trickle request bodies (one byte a second), against the
    same server without them: the body deadline and the event loop must keep intake unharmed."""
    n, c = ctx.cfg.tricklers, min(ctx.cfg.conns)
    key = new_key()
    server = start_recalled(ctx, "trickle", ctx.tmp / "trickle", key)
    try:
        alone = measure_single(ctx, server, key, (c,), "intake alone")[c]
        progress(f"opening {n} trickling connections")
        slow = trickle.Tricklers(server.port, key, n)
        slow.start()
        try:
            during = run_wrk(server, "post_event.lua", c, ctx.cfg.duration, ctx,
                             f"intake with {n} trickling", env={"BENCH_KEY": key}, events_per_request=1)
        finally:
            held, cut = slow.connected, slow.cut_off
            slow.stop()
    finally:
        stop_recalled(ctx, server, "trickle")
    ctx.raw["trickle"] = {"tricklers": n, "alone": alone, "during": during,
                          "trickling_at_end": held, "cut_off": cut}
    p50 = during["p50_ms"] / alone["p50_ms"] if alone["p50_ms"] else float("inf")
    p99 = during["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] else float("inf")
    note = error_note(during) or error_note(alone)
    fig = (f"p50 {during['p50_ms']:.2f} vs {alone['p50_ms']:.2f} ms ({p50:.2f}x), p99 {during['p99_ms']:.2f} "
           f"vs {alone['p99_ms']:.2f} ms ({p99:.2f}x); {held} trickling at the end, {cut} cut off")
    ctx.add(Row(f"intake latency with {n} trickling bodies, {c} conns", fig + (f" ({note})" if note else ""),
                "p50, p99 within 2x", "errors" if note else verdict(p50 <= 2 and p99 <= 2)))


def durability_row(ctx: Ctx) -> None:
    if not ctx.audits:
        return
    ctx.raw["durability"] = ctx.audits
    bad = [a for a in ctx.audits if not a["ok"]]
    acked = sum(a["acknowledged"] for a in ctx.audits)
    stored = sum(a["stored"] for a in ctx.audits)
    if bad:
        fig = "; ".join(f"{a['scenario']}: {', '.join(a['problems'])}" for a in bad)
    else:
        s = ctx.audits[0]["settings"]
        n = len(ctx.audits)
        fig = (f"{n} server{'s' if n != 1 else ''}, all synchronous={s['synchronous']}, {s['journal_mode'].upper()}, "
               f"FTS on: {acked:,} events acknowledged, {stored:,} stored, "
               f"one FTS row each, chain verified")
    ctx.add(Row("durability of every intake run", fig, "FULL + FTS + chain, nothing lost",
                verdict(not bad)))


def rss_row(ctx: Ctx) -> None:
    runs = [m for m in ctx.memory if m.get("peak_rss_mb_sampled")]
    if not runs:
        return
    worst = max(runs, key=lambda m: max(m["peak_rss_mb_sampled"], m["vm_hwm_mb"]))
    peak = max(worst["peak_rss_mb_sampled"], worst["vm_hwm_mb"])
    ctx.add(Row("server peak RSS under load", f"{peak:.0f} MB (in: {worst['scenario']})",
                "<= 200 MB", verdict(peak <= 200)))


# -- machine, output -----------------------------------------------------------

def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def machine_info(server_bin: list[str]) -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    import sqlite3
    versions = {}
    for mod in ("starlette", "uvicorn", "msgspec", "uvloop", "httptools", "recalled-lite"):
        try:
            from importlib.metadata import version
            versions[mod] = version(mod)
        except Exception:
            versions[mod] = None
    git = {}
    try:
        git["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                       capture_output=True, text=True, timeout=10).stdout.strip()
        git["dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                           cwd=REPO, capture_output=True, text=True,
                                           timeout=10).stdout.strip())
    except Exception:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": mem_gb, "loadavg_at_start": loadavg(),
            "kernel": platform.release(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "wrk": wrkrun.wrk_version(),
            "packages": versions, "git": git, "server_cmd": server_bin}


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return None


def print_table(rows: list[Row]) -> None:
    head = ("scenario", "figure", "bar (spec §7)", "result")
    cells = [head] + [(r.scenario, r.figure, r.bar, r.status) for r in rows]
    widths = [min(max(len(c[i]) for c in cells), 90) for i in range(4)]
    line = "+".join("-" * (w + 2) for w in widths)
    for n, c in enumerate(cells):
        print(" " + " | ".join(c[i].ljust(widths[i]) for i in range(4)))
        if n == 0:
            print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="short runs and a 200k prefill (< 2 min once the prefill is cached)")
    ap.add_argument("--json", metavar="PATH", help="results file (default bench/results/<UTC>.json)")
    ap.add_argument("--only", metavar="NAMES", help="comma list of: " + ",".join(SCENARIOS))
    ap.add_argument("--duration", type=float, help="seconds per measured wrk run")
    ap.add_argument("--prefill", type=int, help="events stored before the prefilled intake run")
    ap.add_argument("--read-prefill", type=int, help="events stored for the list/search runs")
    ap.add_argument("--refill", action="store_true", help="rebuild cached prefilled databases")
    ap.add_argument("--data-dir", help="prefill cache directory (default bench/data)")
    ap.add_argument("--server-bin", help="recalled-lite executable (default: beside this python)")
    ap.add_argument("--server-config", metavar="TOML",
                    help="passed to the server as --config (e.g. to lift rate limits or quotas)")
    ap.add_argument("--wrk-threads", type=int, default=1,
                    help="wrk threads (default 1: on 2 cores the server gets the other)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep temp dirs and server logs")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any bar is short or failed")
    args = ap.parse_args(argv)

    only = SCENARIOS
    if args.only:
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in only if s not in SCENARIOS]
        if unknown:
            ap.error(f"unknown scenario(s) {unknown}; choose from {SCENARIOS}")
    if not shutil.which("wrk"):
        print("wrk not found: run `make bench-deps` (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    cfg = make_config(args)
    if args.data_dir:
        prefill.DATA_DIR = Path(args.data_dir).resolve()
    server_bin = [args.server_bin] if args.server_bin else [str(Path(sys.executable).parent / "recalled-lite")]
    started = time.monotonic()
    date = now_iso()
    machine = machine_info(server_bin)
    tmp = Path(tempfile.mkdtemp(prefix="recalled-bench-"))
    ctx = Ctx(cfg=cfg, tmp=tmp, server_bin=server_bin, refill=args.refill,
              server_config=str(Path(args.server_config).resolve()) if args.server_config else None)
    header = (f"recalled-lite bench {'--quick ' if cfg.quick else ''}{date} | {machine['cpu']}, "
              f"{machine['cores']} cores, {machine['ram_gb']} GB RAM | Python {machine['python']}, "
              f"SQLite {machine['sqlite']}, {machine['wrk']} | git {machine['git'].get('commit')}"
              f"{' (dirty)' if machine['git'].get('dirty') else ''}")
    progress(header)
    busy = ""
    if machine["loadavg_at_start"] and machine["loadavg_at_start"][0] > 0.7:
        busy = (f"WARNING: the machine was busy when the run started (load average "
                f"{machine['loadavg_at_start'][0]:.2f}); figures may be low and noisy")
        progress(busy)
    progress(f"temp dir {tmp}; wrk {cfg.duration:g}s per run, {cfg.wrk_threads} thread(s)")

    def guarded(name: str, titles: list[tuple[str, str]], fn, *fargs) -> None:
        progress(f"--- {name}")
        try:
            fn(ctx, *fargs)
        except NotBuilt as exc:
            ctx.add(*(Row(t, f"not built ({exc})", bar, "not built") for t, bar in titles))
        except ServerFailed as exc:
            ctx.raw.setdefault("errors", {})[name] = str(exc)
            text = exc.brief if len(exc.brief) <= 240 else exc.brief[:235] + " ..."
            ctx.add(*(Row(t, text, bar, "failed") for t, bar in titles))
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not sink the rest
            traceback.print_exc(file=sys.stderr)
            ctx.raw.setdefault("errors", {})[name] = traceback.format_exc()
            ctx.add(*(Row(t, f"error: {type(exc).__name__}: {exc}", bar, "failed")
                      for t, bar in titles))
        ctx.raw.setdefault("seconds", {})[name] = round(time.monotonic() - t_start[0], 1)

    t_start = [0.0]
    plan = [
        ("baseline", [("baseline echo", "—")], scen_baseline),
        ("pocketbase", [("PocketBase peer", "—")], scen_pocketbase),
        ("intake", [(f"single-event intake, {c} conns", f">= {INTAKE_VS_ECHO:g}x echo") for c in cfg.conns],
         scen_intake),
        ("batch", [(f"batch intake, 1000/req, {cfg.batch_conns} conns", f">= {BATCH_EVENTS_PER_S:,} events/s")],
         scen_batch),
        ("floor", [("SQLite alone", "— (compare intake)")], scen_floor),
        ("prefilled", [(f"intake, {human_n(cfg.intake_prefill)} stored vs empty", f">= {GROWTH_RATIO:g}")],
         scen_prefilled),
    ]
    read_which = [s for s in ("list", "search") if s in only]
    if read_which:
        plan.append(("+".join(read_which),
                     [(f"{s}, {human_n(cfg.read_prefill)} events",
                       "p50 <= 5 ms" if s == "list" else "p50 <= 30 ms") for s in read_which],
                     lambda c: scen_read(c, read_which)))
    plan.append(("erasure", [(f"intake p99 during an erasure on {human_n(cfg.read_prefill)} events",
                              "<= 2x p99 without")], scen_erasure))
    plan.append(("retention", [(f"intake p99 during a purge of {human_n(retention_events(cfg))} expired events",
                                "<= 2x p99 without")], scen_retention))
    plan.append(("webhooks", [("webhook delivery", ">= 2,000/s; p50 <= 20 ms")], scen_webhooks))
    plan.append(("exports", [(export_row_title(), f"<= {EXPORT_BAR_MB} MB")], scen_exports))
    plan.append(("console", [("console pages", f"p50 <= {console.BAR_MS:g} ms")], scen_console))
    plan.append(("trickle", [(f"intake with {cfg.tricklers} trickling bodies", "p50, p99 within 2x")],
                 scen_trickle))
    # Last: its rows print the SQLite figures of the same run beside its own.
    plan.append(("postgres", [("PostgreSQL backend", "—")], lambda c: postgres.scenario(c, Row, new_key)))
    try:
        for name, titles, fn in plan:
            if name in only or name == "+".join(read_which):
                t_start[0] = time.monotonic()
                guarded(name, titles, fn)
        durability_row(ctx)
        rss_row(ctx)
    finally:
        if args.keep_tmp:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    elapsed = round(time.monotonic() - started, 1)
    out_path = Path(args.json) if args.json else RESULTS_DIR / (date.replace(":", "").replace("-", "") + ".json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ctx.raw.pop("_refilled", None)
    result = {"date": date, "quick": cfg.quick, "elapsed_s": elapsed, "machine": machine,
              "config": msgspec.structs.asdict(cfg) if hasattr(cfg, "__struct_fields__") else cfg.__dict__,
              "rows": [r.__dict__ for r in ctx.rows], "server_memory": ctx.memory, "raw": ctx.raw}
    result["machine"]["loadavg_at_end"] = loadavg()
    out_path.write_bytes(msgspec.json.format(msgspec.json.encode(result)))

    print(header)
    if busy:
        print(busy)
    print_table(ctx.rows)
    notes = []
    if any("*" in r.scenario and "stored vs empty" in r.scenario for r in ctx.rows):
        notes.append(f"{human_n(cfg.intake_prefill)} events stored for the intake comparison (bar: 5M)")
    if any("*" in r.scenario and "events" in r.scenario for r in ctx.rows):
        notes.append(f"{human_n(cfg.read_prefill)} events for list/search and the console pages (bar: 1M)")
    if notes:
        print(" * smaller dataset than the spec's bar: " + "; ".join(notes) + ". Indicative only.")
    print(f"({elapsed:.0f}s; full results in {out_path.relative_to(REPO) if out_path.is_relative_to(REPO) else out_path})")
    if args.strict and any(r.status in ("short", "failed", "errors") for r in ctx.rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
