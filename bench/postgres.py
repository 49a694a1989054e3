"""The PostgreSQL rows of `make bench`: intake (single and batch), list and search on the
PostgreSQL backend, with one and with two instances on one database, printed beside the
SQLite rows of the same run.

Runs when RECALLED_BENCH_PG_URL (or RECALLED_TEST_PG_URL) names a database whose role may
CREATE DATABASE: every measurement gets a fresh database, dropped afterwards. Two instances
share the secret and signing-key files and split the same connection count between them,
so the one- and two-instance rows put the same load on the machine.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from . import dataset, prefill, wrkrun
from .procs import Server, ServerFailed, free_port, progress, request


class Unconfigured(Exception):
    pass


def admin_url() -> str:
    url = os.environ.get("RECALLED_BENCH_PG_URL") or os.environ.get("RECALLED_TEST_PG_URL")
    if not url:
        raise Unconfigured("set RECALLED_BENCH_PG_URL=postgresql://USER:PASS@HOST/DB (a role with CREATEDB)")
    return url


def create_database(admin: str) -> str:
    import psycopg

    name = f"rl_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0] + "/" + name


def drop_database(admin: str, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    # FORCE cannot end a backend of another role: an autovacuum worker, busy for many seconds
    # after a big load (InsufficientPrivilege). A plain DROP DATABASE ends autovacuum workers
    # itself, so then this role's own sessions are ended first and the plain form is used. A
    # backend still exiting (ObjectInUse) is gone a moment later. tests/pg_support.py drops
    # through this too.
    for attempt in range(100):
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except psycopg.errors.InsufficientPrivilege:
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                                 "AND usename = current_user AND pid <> pg_backend_pid()", (name,))
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            return
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
            if attempt == 99:
                raise
            time.sleep(0.1)


def count_events(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def server_version(admin: str) -> str:
    import psycopg

    with psycopg.connect(admin) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


class Cluster:
    """`instances` servers on one fresh database, sharing the secret and signing-key files."""

    def __init__(self, server_bin: list[str], tmp: Path, name: str, key: str, instances: int) -> None:
        self.admin = admin_url()
        self.url = create_database(self.admin)
        self.dir = tmp / f"pg-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        secret = self.dir / "server.secret"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, secrets.token_hex(32).encode() + b"\n")
        os.close(fd)
        config = self.dir / "config.toml"
        config.write_text(f'[server]\nsecret_file = "{secret}"\n\n'
                          f'[checkpoints]\nsigning_key_file = "{self.dir / "signing-key"}"\n')
        self.key, self.servers = key, []
        try:
            # One after the other: the first creates the schema and the signing key file.
            for i in range(instances):
                port = free_port()
                argv = [*server_bin, "serve", "--db", self.url, "--host", "127.0.0.1", "--port", str(port),
                        "--config", str(config)]
                env = {k: v for k, v in os.environ.items() if not k.startswith("RECALLED_")}
                env["RECALLED_BOOTSTRAP_KEY"] = key
                progress(f"starting recalled-lite on PostgreSQL ({name} #{i + 1}) on :{port}")
                server = Server(f"recalled-lite PG ({name} #{i + 1})", argv, env=env, cwd=self.dir,
                                log_path=tmp / f"server-pg-{name}-{i + 1}.log", port=port)
                server.start(timeout=60)
                server.acked = 0
                self.servers.append(server)
        except BaseException:
            self.close()
            raise

    def close(self) -> dict[str, Any]:
        """Stop every instance, then check that every acknowledged event is stored."""
        acked = sum(getattr(s, "acked", 0) for s in self.servers)
        clean = [s.stop(timeout=30) for s in self.servers]
        try:
            stored = count_events(self.url) if self.servers else 0
        finally:
            drop_database(self.admin, self.url)
        return {"acknowledged": acked, "stored": stored, "clean_exit": all(clean),
                "ok": stored >= acked}


def run_parallel(cluster: Cluster, script: str, conns: int, duration: float, threads: int,
                 env: dict, events_per_request: int = 0) -> dict:
    """wrk against every instance at once, `conns` split between them; the figures summed
    (requests) or taken from the slowest (latency percentiles)."""
    n = len(cluster.servers)
    results: list[dict | Exception] = [None] * n  # type: ignore[list-item]
    cpu0 = [s.cpu_seconds() for s in cluster.servers]

    def one(i: int) -> None:
        try:
            results[i] = wrkrun.run(f"http://127.0.0.1:{cluster.servers[i].port}/", script,
                                    conns=max(1, conns // n), duration=duration, threads=threads, env=env)
        except Exception as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    workers = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for server, res in zip(cluster.servers, results):
        if isinstance(res, Exception):
            raise res
        if not server.alive():
            raise ServerFailed(f"{server.name} died during the load: {server.tail()}", f"{server.name} died")
        server.acked += res["ok"] * events_per_request
    out = {k: sum(r[k] for r in results) for k in ("requests", "ok", "non_2xx", "socket_errors")}
    out["ok_rps"] = round(sum(r["ok_rps"] for r in results), 1)
    for k in ("p50_ms", "p99_ms"):
        out[k] = max(r[k] for r in results if r.get(k) is not None)
    out["server_cpu_pct"] = round(sum(100 * (s.cpu_seconds() - c0) for s, c0 in zip(cluster.servers, cpu0))
                                  / max(r["duration_s"] for r in results), 1)
    out["per_instance"] = results
    return out


def measure(ctx: Any, instances: int, key: str, *, batch_body: Path, read_events: int) -> dict[str, Any]:
    """Intake (single, batch) and then list/search after a prefill, on `instances` servers."""
    cfg = ctx.cfg
    tag = f"{instances} instance{'s' if instances > 1 else ''}"
    out: dict[str, Any] = {}
    cluster = Cluster(ctx.server_bin, ctx.tmp, f"{instances}x", key, instances)
    try:
        env = {"BENCH_KEY": key}
        c = max(cfg.conns)
        run_parallel(cluster, "post_event.lua", c, cfg.warmup, cfg.wrk_threads, env, 1)
        out["single"] = run_parallel(cluster, "post_event.lua", c, cfg.duration, cfg.wrk_threads, env, 1)
        benv = {"BENCH_KEY": key, "BENCH_BODY_FILE": str(batch_body)}
        run_parallel(cluster, "post_batch.lua", cfg.batch_conns, cfg.warmup, cfg.wrk_threads, benv, 1000)
        res = run_parallel(cluster, "post_batch.lua", cfg.batch_conns, cfg.duration, cfg.wrk_threads, benv, 1000)
        res["events_per_s"] = round(res["ok_rps"] * 1000, 1)
        out["batch"] = res
        # Reads on at least `read_events` stored events (what intake stored counts).
        stored = count_events(cluster.url)
        if stored < read_events:
            progress(f"PostgreSQL prefill: {read_events - stored:,} more events through the batch API")
            stats = prefill.load_batches(cluster.servers[0].port, key, read_events - stored, conns=cfg.prefill_conns,
                                         on_progress=prefill.progress_printer(read_events - stored, "pg prefill"))
            cluster.servers[0].acked += stats["events"]
        out["read_events"] = count_events(cluster.url)
        for name, paths in (("list", dataset.list_paths()), ("search", dataset.search_paths())):
            answers = {request(cluster.servers[0].port, "GET", p, None, key=key)[0] for p in paths[:8]}
            if answers != {200}:
                out[name] = {"not_built": f"GET {paths[0].split('?')[0]} -> {sorted(answers)}"}
                continue
            paths_file = ctx.tmp / f"pg-{name}-paths.txt"
            paths_file.write_text("\n".join(paths) + "\n")
            renv = {"BENCH_KEY": key, "BENCH_PATHS_FILE": str(paths_file)}
            conns = max(cfg.read_conns, instances)
            run_parallel(cluster, "get_paths.lua", conns, cfg.warmup, cfg.wrk_threads, renv)
            out[name] = run_parallel(cluster, "get_paths.lua", conns, cfg.duration, cfg.wrk_threads, renv)
    finally:
        out["durability"] = cluster.close()
    progress(f"PostgreSQL {tag}: {out['durability']['acknowledged']:,} acknowledged, "
             f"{out['durability']['stored']:,} stored")
    return out


def _note(res: dict) -> str:
    """What makes a figure untrustworthy: errors, or too few requests to measure."""
    bad = res["non_2xx"] + res["socket_errors"]
    if res["requests"] and bad / res["requests"] > 0.01:
        return f" ({res['non_2xx']} non-2xx, {res['socket_errors']} socket errors of {res['requests']})"
    if res["requests"] < 10:
        return f" (only {res['requests']} requests finished: too few to measure; raise --duration)"
    return ""


def _cpu(res: dict) -> str:
    return f", server CPU {res['server_cpu_pct']:.0f}%" if res.get("server_cpu_pct") is not None else ""


def _beside(ctx: Any, raw_key: str, field: str, unit: str) -> str:
    """The SQLite figure of this run for the same measurement, if it ran."""
    other = ctx.raw.get(raw_key)
    if not other or not other.get(field):
        return ""
    return f"; SQLite {other[field]:,.{2 if unit == 'ms' else 0}f} {unit}"


def scenario(ctx: Any, row: Any, new_key: Callable[[], str]) -> None:
    """The rows; `row` is run.Row, `new_key` run.new_key."""
    try:
        admin = admin_url()
    except Unconfigured as exc:
        ctx.add(row("PostgreSQL backend", f"skipped ({exc})", "—", "skipped"))
        return
    ctx.raw["postgres_version"] = server_version(admin)
    host = admin.split("@")[-1].rsplit("/", 1)[0]
    ctx.add(row("PostgreSQL server", f"PostgreSQL {ctx.raw['postgres_version']} at {host}, a fresh database per "
                "measurement; server CPU below is recalled-lite's only, not PostgreSQL's", "—", "info"))
    body = ctx.tmp / "batch-1000.json"
    if not body.exists():
        body.write_bytes(dataset.batch_body(424242, 1000))
    read_events = ctx.cfg.read_prefill
    c = max(ctx.cfg.conns)
    for instances in (1, 2):
        res = measure(ctx, instances, new_key(), batch_body=body, read_events=read_events)
        ctx.raw[f"postgres_{instances}"] = res
        tag = "1 instance" if instances == 1 else f"{instances} instances"
        single = res["single"]
        echo = ctx.raw.get(f"baseline_{c}")
        ratio = f"{single['ok_rps'] / echo['ok_rps']:.3f}x echo, " if echo and echo.get("ok_rps") else ""
        ctx.add(row(f"PostgreSQL single-event intake, {tag}, {c} conns",
                    f"{ratio}{single['ok_rps']:,.0f} req/s, p50 {single['p50_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms"
                    + _cpu(single) + _beside(ctx, f"intake_{c}", "ok_rps", "req/s") + _note(single),
                    "—", "errors" if _note(single) else "info"))
        batch = res["batch"]
        ctx.add(row(f"PostgreSQL batch intake, 1000/req, {tag}, {ctx.cfg.batch_conns} conns",
                    f"{batch['events_per_s']:,.0f} events/s (per request p50 {batch['p50_ms']:.1f} ms{_cpu(batch)})"
                    + _beside(ctx, "batch", "events_per_s", "events/s") + _note(batch),
                    "—", "errors" if _note(batch) else "info"))
        n = res["read_events"]
        for name, title in (("list", "list page (50, org+action)"), ("search", "search")):
            r = res[name]
            if "not_built" in r:
                ctx.add(row(f"PostgreSQL {title}, {tag}", f"not built ({r['not_built']})", "—", "not built"))
                continue
            ctx.add(row(f"PostgreSQL {title}, {n:,} events, {tag}",
                        f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms ({r['ok_rps']:,.0f} req/s{_cpu(r)})"
                        + _beside(ctx, name, "p50_ms", "ms") + _note(r), "—", "errors" if _note(r) else "info"))
        audit = res["durability"]
        if not audit["ok"]:
            ctx.add(row(f"PostgreSQL durability, {tag}",
                        f"{audit['acknowledged']:,} acknowledged but {audit['stored']:,} stored", "all stored",
                        "failed"))
