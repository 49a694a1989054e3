"""docs/operations.md: its systemd unit is one systemd accepts, with the sandboxing it promises,
a stop timeout longer than the graceful shutdown, and command lines the CLI parses."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recalled_lite.cli import build_parser
from recalled_lite.config import Config

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operations.md"
INSTALLED_AT = "/opt/recalled/bin/recalled-lite"


def ini_blocks() -> list[str]:
    return re.findall(r"```ini\n(.*?)```", DOC.read_text(), re.S)


def server_unit() -> str:
    units = [b for b in ini_blocks() if b.startswith("[Unit]") and " serve " in b]
    assert len(units) == 1, "docs/operations.md must hold exactly one server unit"
    return units[0]


def settings(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_has_the_promised_sandboxing_and_stop_timeout():
    unit = settings(server_unit())
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "KillSignal": "SIGTERM"}.items():
        assert unit.get(key) == [value], key
    assert unit.get("DynamicUser") == ["yes"] or unit.get("User"), "a dedicated or dynamic user"
    assert unit["ReadWritePaths"] == ["/var/lib/recalled"]
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert re.fullmatch(r"\d+[KMG]", unit["MemoryMax"][0])
    config = Config()
    grace = config.server.graceful_shutdown_seconds + config.webhooks.shutdown_grace_seconds
    assert float(unit["TimeoutStopSec"][0]) > grace
    # The database lives where the process may write.
    argv = shlex.split(unit["ExecStart"][0])
    db = argv[argv.index("--db") + 1]
    assert db.startswith(unit["ReadWritePaths"][0] + "/")


def test_documented_command_lines_parse():
    parser = build_parser()
    lines = [settings(block).get("ExecStart", [None])[0] for block in ini_blocks()]
    lines = [line for line in lines if line]
    assert len(lines) >= 2  # the server and the backup job
    for line in lines:
        argv = shlex.split(line)
        if argv[0] == "/bin/sh":  # the backup job: sh -c 'exec recalled-lite ...'
            argv = shlex.split(re.sub(r"\$\([^)]*\)", "STAMP", argv[2]))[1:]
        assert argv[0] == INSTALLED_AT, line
        parser.parse_args(argv[1:])  # exits (SystemExit) on an unknown flag


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    binary = Path(sys.executable).parent / "recalled-lite"
    if not binary.exists():
        pytest.skip("recalled-lite is not installed beside this python")
    # The documented path, pointed at this checkout's installed command.
    unit = tmp_path / "recalled-lite.service"
    unit.write_text(server_unit().replace(INSTALLED_AT, str(binary)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if str(unit) in line or "Unknown" in line or "ignoring" in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr
