"""Where the client connects and where its spool lives, from arguments or the environment."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

DEFAULT_BASE_URL = "http://127.0.0.1:8080"  # recalled-lite's default `serve` address
DEFAULT_TIMEOUT = 10.0


def resolve_api_key(api_key: str | None) -> str:
    key = api_key if api_key is not None else os.environ.get("RECALLED_API_KEY")
    if not key:
        raise ValueError("an API key is required: pass api_key=... or set RECALLED_API_KEY")
    return key


def resolve_base_url(base_url: str | None) -> str:
    """The server's root. A trailing ``/v1`` (the JS SDK's form) is accepted and removed,
    so the same RECALLED_BASE_URL serves both SDKs."""
    url = base_url if base_url is not None else os.environ.get("RECALLED_BASE_URL") or DEFAULT_BASE_URL
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    return url


def destination_fingerprint(base_url: str, api_key: str) -> str:
    """Tags spool rows with who may send them, without writing the key to disk: only a
    client with the same server and key claims them (a key bound to one organization must
    not send another client's events)."""
    return hashlib.sha256(f"{base_url}\0{api_key}".encode()).hexdigest()[:16]


def default_spool_path() -> Path:
    """``$RECALLED_SPOOL_PATH``, else a per-user state directory:

    - Linux and other Unix: ``$XDG_STATE_HOME/recalled/spool.db`` (``~/.local/state/...``)
    - macOS: ``~/Library/Application Support/recalled/spool.db``
    - Windows: ``%LOCALAPPDATA%\\recalled\\spool.db``

    State, not cache: the spool holds events not yet sent, which must survive a cache wipe.
    """
    explicit = os.environ.get("RECALLED_SPOOL_PATH")
    if explicit:
        return Path(explicit).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or home / ".local" / "state")
    return base / "recalled" / "spool.db"
