"""What the console tests share: signing in over plain HTTP, reading CSRF tokens, and
launching Debian's Chromium through Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import httpx

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_in(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, "no CSRF field in the page"
    return match.group(1)


class ConsoleSession:
    """An httpx client with a console session cookie (and its CSRF token)."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30.0, follow_redirects=False)
        self.csrf = ""

    def sign_in(self, key: str) -> "ConsoleSession":
        page = self.http.get("/console/login")
        assert page.status_code == 200, page.text
        answer = self.http.post("/console/login", data={"csrf": csrf_in(page.text), "key": key})
        assert answer.status_code == 303, answer.text
        overview = self.http.get("/console/")
        assert overview.status_code == 200, overview.text
        self.csrf = csrf_in(overview.text)
        return self

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True) -> httpx.Response:
        fields = dict(data or {})
        if csrf:
            fields.setdefault("csrf", self.csrf)
        return self.http.post(path, data=fields)

    def close(self) -> None:
        self.http.close()


def signed_in(base_url: str, key: str) -> ConsoleSession:
    return ConsoleSession(base_url).sign_in(key)


def screenshot_dir() -> Path:
    """Where the browser tests write their screenshots (printed by the tests).

    RECALLED_CONSOLE_SHOTS chooses it; by default a fresh temporary directory."""
    chosen = os.environ.get("RECALLED_CONSOLE_SHOTS")
    path = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="recalled-console-shots-"))
    path.mkdir(parents=True, exist_ok=True)
    return path
