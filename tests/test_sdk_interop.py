"""The official JavaScript SDK `@recalled/sdk` 0.2.0 (from npm, unmodified) against the real server.

tests/interop/sdk_interop.mjs calls every SDK method (events.create/list/search/retrieve/emit/
flush, exports.fetch, actors.delete, embed.createToken) and the React widget's feed hook and
component, asserting on what they return. The SDK is installed from npm with `npm ci` (the
committed package-lock.json pins it) when node_modules is missing or stale. Skipped only when
`node` is not installed; a failing `npm ci` fails the test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

INTEROP = Path(__file__).resolve().parent / "interop"
STAMP = INTEROP / "node_modules" / ".recalled-lite-lock-sha256"


def ensure_sdk_installed() -> None:
    lock = (INTEROP / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    npm = shutil.which("npm")
    assert npm, "node is installed but npm is not; install npm to run the SDK interop test"
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=INTEROP, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    STAMP.write_text(digest)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: the SDK interop test needs Node 18+")
def test_official_sdk_against_the_real_server(make_server):
    ensure_sdk_installed()
    srv = make_server("sdk")
    env = {**os.environ, "RECALLED_BASE_URL": srv.url + "/v1", "RECALLED_API_KEY": srv.key}
    done = subprocess.run(["node", "sdk_interop.mjs"], cwd=INTEROP, env=env, capture_output=True, text=True,
                          timeout=240)
    print(done.stdout)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n--- server log ---\n{srv.log_tail()}"
    # Every check ran (a silently skipped section would lower the count).
    ok_lines = [line for line in done.stdout.splitlines() if line.startswith("ok ")]
    assert f"all {len(ok_lines)} SDK interop checks passed" in done.stdout
    assert len(ok_lines) >= 17
