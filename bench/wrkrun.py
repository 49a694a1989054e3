"""Run wrk and parse its result (the Lua done() JSON line, or wrk's text as a fallback)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import msgspec

WRK_DIR = Path(__file__).resolve().parent / "wrk"


class WrkError(Exception):
    pass


def wrk_version() -> str | None:
    exe = shutil.which("wrk")
    if not exe:
        return None
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10)
    first = (out.stdout + out.stderr).strip().splitlines()
    if not first:
        return "wrk (unknown version)"
    return first[0].split(" Copyright")[0].split(" [")[0].strip()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_text(out: str) -> dict:
    """Fallback parser for wrk's --latency text output."""
    res: dict = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not m:
        raise WrkError(f"cannot parse wrk output: {out[-500:]}")
    res["requests"] = int(m.group(1))
    res["duration_s"] = _ms(m.group(2) + m.group(3)) / 1000
    pct = dict(re.findall(r"^\s+(\d+(?:\.\d+)?)%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.M))
    res["p50_ms"] = _ms(pct["50"]) if "50" in pct else None
    res["p99_ms"] = _ms(pct["99"]) if "99" in pct else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return res


def parse(out: str) -> dict:
    for line in out.splitlines():
        if line.startswith("WRK_RESULT "):
            raw = msgspec.json.decode(line[len("WRK_RESULT "):])
            e, lat = raw["errors"], raw["latency_us"]
            return {
                "requests": raw["requests"],
                "duration_s": raw["duration_us"] / 1e6,
                "p50_ms": lat["p50"] / 1000, "p75_ms": lat["p75"] / 1000,
                "p90_ms": lat["p90"] / 1000, "p99_ms": lat["p99"] / 1000,
                "p999_ms": lat["p999"] / 1000, "max_ms": lat["max"] / 1000,
                "mean_ms": round(lat["mean"] / 1000, 3),
                "non_2xx": e["status"],
                "socket_errors": e["connect"] + e["read"] + e["write"] + e["timeout"],
                "bytes": raw["bytes"],
            }
    return parse_text(out)


def run(url: str, script: str, *, conns: int, duration: float, threads: int = 1,
        env: dict | None = None, timeout: str = "10s") -> dict:
    """Run wrk once (bounded by `duration`; the subprocess itself is killed at duration+60 s).

    Returns requests, ok requests (2xx/3xx), ok_rps, latency percentiles in ms, errors."""
    exe = shutil.which("wrk")
    if not exe:
        raise WrkError("wrk not found: run `make bench-deps` (or apt-get install wrk)")
    threads = max(1, min(threads, conns))
    cmd = [exe, f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s",
           f"--timeout={timeout}", "--latency", "-s", str(WRK_DIR / script), url]
    full_env = dict(os.environ, BENCH_WRK_DIR=str(WRK_DIR), **(env or {}))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env,
                              timeout=duration + 60)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration + 60:.0f}s") from exc
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {(proc.stderr or proc.stdout)[-500:]}")
    res = parse(proc.stdout)
    res["ok"] = max(0, res["requests"] - res["non_2xx"])
    res["ok_rps"] = round(res["ok"] / res["duration_s"], 1) if res["duration_s"] else 0.0
    res["conns"], res["threads"] = conns, threads
    for k in ("p50_ms", "p75_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"):
        if res.get(k) is not None:
            res[k] = round(res[k], 3)
    return res
