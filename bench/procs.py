"""Subprocess plumbing: free ports, servers started and stopped cleanly, RSS sampling."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec


class ServerFailed(Exception):
    """The server did not come up (or died); the message carries its log tail,
    `brief` the headline plus the last log line (for the table)."""

    def __init__(self, message: str, brief: str | None = None) -> None:
        super().__init__(message)
        self.brief = brief or message


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None,
            key: str | None = None, timeout: float = 30.0) -> tuple[int, dict, bytes]:
    """One HTTP request to 127.0.0.1:port. Returns (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def json_or_none(body: bytes):
    try:
        return msgspec.json.decode(body)
    except Exception:
        return None


def short(body: bytes, n: int = 200) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= n else text[:n] + "..."


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
                out.extend(kids)
                todo.extend(kids)
        except OSError:
            pass
    return out


class Server:
    """A server subprocess: stderr to a log file, readiness by polling a GET path,
    RSS sampled every 100 ms (process plus descendants) while it runs."""

    def __init__(self, name: str, argv: list[str], *, env: dict | None = None,
                 cwd: Path, log_path: Path, ready_path: str = "/readyz",
                 port: int) -> None:
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log_path, self.ready_path, self.port = log_path, ready_path, port
        self.proc: subprocess.Popen | None = None
        self.peak_rss_kb = 0
        self.hwm_kb = 0
        self._phase_peak = 0
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self.returncode: int | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "Server":
        self._log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise ServerFailed(f"{self.name} failed to start: {exc}") from exc
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        deadline = time.monotonic() + timeout
        last_err = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                head = f"{self.name} failed to start (exit {self.proc.returncode})"
                raise ServerFailed(f"{head}: {self.tail()}", f"{head}: {self.tail(1)}")
            try:
                status, _, body = request(self.port, "GET", self.ready_path, timeout=2)
                if status == 200:
                    return self
                last_err = f"{self.ready_path} -> {status} {short(body, 80)}"
            except OSError as exc:
                last_err = str(exc)
            time.sleep(0.05)
        self.stop(timeout=5)
        head = f"{self.name} not ready after {timeout:.0f}s ({last_err})"
        raise ServerFailed(f"{head}: {self.tail()}", f"{head}: {self.tail(1)}")

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, wait, SIGKILL if needed. True if it exited on its own after SIGTERM."""
        clean = True
        if self.proc and self.proc.poll() is None:
            self.hwm_kb = max(self.hwm_kb, self._hwm())
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                clean = False
                progress(f"{self.name} did not exit {timeout:.0f}s after SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait(10)
        if self.proc:
            self.returncode = self.proc.returncode
        self._stop_sampling.set()
        if self._sampler:
            self._sampler.join(2)
        if getattr(self, "_log", None):
            self._log.close()
        return clean

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return bool(self.proc) and self.proc.poll() is None

    def tail(self, lines: int = 12) -> str:
        try:
            data = self.log_path.read_bytes()[-8000:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        out = [l for l in data.splitlines() if l.strip()][-lines:]
        return " | ".join(out) if out else "(empty log)"

    def cpu_seconds(self) -> float:
        """user+system CPU time of the process (all its threads), in seconds."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, AssertionError):
            return 0.0

    # -- memory ------------------------------------------------------------
    def _hwm(self) -> int:
        if not self.proc:
            return 0
        return sum(_rss_kb(p, "VmHWM") for p in [self.proc.pid, *_descendants(self.proc.pid)])

    def _sample(self) -> None:
        while not self._stop_sampling.is_set() and self.proc and self.proc.poll() is None:
            pids = [self.proc.pid, *_descendants(self.proc.pid)]
            rss = sum(_rss_kb(p) for p in pids)
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self._phase_peak = max(self._phase_peak, rss)
            self._stop_sampling.wait(0.1)

    def rss_mb(self) -> float:
        """Resident memory now (process plus descendants)."""
        if not self.proc:
            return 0.0
        return round(sum(_rss_kb(p) for p in [self.proc.pid, *_descendants(self.proc.pid)]) / 1024, 1)

    def phase_reset(self) -> None:
        self._phase_peak = 0

    def phase_peak_mb(self) -> float:
        return round(self._phase_peak / 1024, 1)

    def memory(self) -> dict:
        hwm = max(self.hwm_kb, self._hwm())
        self.hwm_kb = hwm
        return {"peak_rss_mb_sampled": round(self.peak_rss_kb / 1024, 1),
                "vm_hwm_mb": round(hwm / 1024, 1)}
