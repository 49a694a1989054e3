"""A client process for the multi-process tests (run as a script, never imported by pytest).

    child_emitter.py emit  MODE URL KEY SPOOL ORG COUNT [--flush SECONDS] [--batch N] [--wait-go]
    child_emitter.py fork  MODE URL KEY SPOOL ORG COUNT WORKERS
    child_emitter.py exit  MODE URL KEY SPOOL ORG COUNT
    child_emitter.py drain MODE URL KEY SPOOL [--flush SECONDS]
    child_emitter.py noop  MODE URL KEY SPOOL

MODE is sync or async. Lines on stdout tell the test what happened: ``EMITTED <json>``,
``FLUSHED <json>``, ``EXITING <unix time>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import recalled
from recalled import SpoolConfig


def out(prefix: str, value: object) -> None:
    sys.stdout.write(f"{prefix} {json.dumps(value)}\n")
    sys.stdout.flush()


def make(mode: str, url: str, key: str, spool: str, batch: int = 1000):
    config = SpoolConfig(path=spool, max_batch_events=batch)
    cls = recalled.Recalled if mode == "sync" else recalled.AsyncRecalled
    return cls(api_key=key, base_url=url, spool=config)


async def _emit_async(client, org: str, count: int, worker: int | None) -> list[str]:
    keys = []
    for i in range(count):
        keys.append(await client.events.emit(action="child.emitted", organization=org,
                                             actor={"id": f"worker-{worker}"},
                                             metadata={"i": i, "worker": worker, "pid": os.getpid()}))
    return keys


def emit_events(mode: str, client, org: str, count: int, worker: int | None = None) -> list[str]:
    if mode == "async":
        return asyncio.run(_emit_async(client, org, count, worker))
    return [client.events.emit(action="child.emitted", organization=org, actor={"id": f"worker-{worker}"},
                               metadata={"i": i, "worker": worker, "pid": os.getpid()})
            for i in range(count)]


def flush(mode: str, client, timeout: float) -> int:
    if mode == "async":
        return asyncio.run(client.flush(timeout))
    return client.flush(timeout)


def cmd_emit(a: argparse.Namespace) -> int:
    client = make(a.mode, a.url, a.key, a.spool, a.batch)
    keys = emit_events(a.mode, client, a.org, a.count)
    out("EMITTED", {"count": len(keys), "keys": keys, "pid": os.getpid()})
    if a.wait_go:
        sys.stdin.readline()  # the test starts the server first
    if a.flush is not None:
        out("FLUSHED", {"remaining": flush(a.mode, client, a.flush)})
    return 0


def cmd_fork(a: argparse.Namespace) -> int:
    # As gunicorn --preload: the client exists (and has sent) before the workers fork.
    client = make(a.mode, a.url, a.key, a.spool)
    emit_events(a.mode, client, a.org, 1, worker=-1)
    assert flush(a.mode, client, 30) == 0
    children = []
    for worker in range(a.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                emit_events(a.mode, client, a.org, a.count, worker=worker)
                code = 0 if flush(a.mode, client, 60) == 0 else 3
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    out("FLUSHED", {"children": codes, "remaining": flush(a.mode, client, 60), "parent": os.getpid()})
    return 0


def cmd_exit(a: argparse.Namespace) -> int:
    client = make(a.mode, a.url, a.key, a.spool)
    keys = emit_events(a.mode, client, a.org, a.count)
    out("EMITTED", {"count": len(keys)})
    # Nothing else: returning starts interpreter exit, where the atexit flush runs.
    out("EXITING", time.time())
    return 0


def cmd_noop(a: argparse.Namespace) -> int:
    # The same imports and interpreter, no client: the baseline cost of tearing it down.
    out("EXITING", time.time())
    return 0


def cmd_drain(a: argparse.Namespace) -> int:
    client = make(a.mode, a.url, a.key, a.spool)
    out("FLUSHED", {"remaining": flush(a.mode, client, a.flush)})
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("emit", "fork", "exit", "drain", "noop"):
        p = sub.add_parser(name)
        p.add_argument("mode", choices=["sync", "async"])
        p.add_argument("url")
        p.add_argument("key")
        p.add_argument("spool")
        if name not in ("drain", "noop"):
            p.add_argument("org")
            p.add_argument("count", type=int)
        if name == "fork":
            p.add_argument("workers", type=int)
        p.add_argument("--flush", type=float, default=None if name != "drain" else 60.0)
        p.add_argument("--batch", type=int, default=1000)
        p.add_argument("--wait-go", action="store_true", help="read a line from stdin before flushing")
    a = parser.parse_args()
    return {"emit": cmd_emit, "fork": cmd_fork, "exit": cmd_exit, "drain": cmd_drain,
            "noop": cmd_noop}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
