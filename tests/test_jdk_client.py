"""The JDK's own HTTP client, at its default settings, against the real server. It offers an
h2c upgrade with every POST on plain http; the server must ignore it and store the body
(tests/interop/JdkPost.java, run with the JDK 11+ single-file source launcher)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="needs a JDK (java on PATH)")


def test_jdk_httpclient_default_settings_posts_events(server):
    actions = [f"jdk.{uuid.uuid4().hex[:10]}" for _ in range(2)]
    bodies = [json.dumps({"action": a, "actor": {"id": "u_jdk", "name": "Duke"},
                          "metadata": {"client": "java.net.http", "n": i}}) for i, a in enumerate(actions)]
    result = subprocess.run(["java", str(ROOT / "tests" / "interop" / "JdkPost.java"), server.url, server.key, *bodies],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2, result.stdout
    for i, (line, action) in enumerate(zip(lines, actions)):
        status, version, body = line.split(" ", 2)
        assert (status, version) == ("200", "HTTP_1_1"), line
        created = json.loads(body)["data"]
        assert created["action"] == action
        with server.client() as c:
            stored = c.get(f"/v1/events/{created['id']}").json()["data"]
        assert stored["action"] == action and stored["actor"]["name"] == "Duke"
        assert stored["metadata"] == {"client": "java.net.http", "n": i}
    assert "Unsupported upgrade" not in server.log_text()
