"""One-time sign-in links (`recalled-lite console-link`), for an operator with a shell on the
server but not the key: a random token, its hash stored with the key it signs in as, valid
once and for ten minutes (the landing page is ``signin.link_page``)."""

from __future__ import annotations

from typing import Any

from ..auth import ADMIN
from ..config import Config
from ..errors import ConfigError
from ..storage.base import ApiKeyRecord
from ..timefmt import now_ms
from .sessions import LINK_MINUTES, new_token, token_hash


def default_key(store: Any) -> ApiKeyRecord | None:
    """The oldest active admin key not bound to an organization (key ids sort by creation)."""
    candidates = [k for k in store.list_keys()
                  if ADMIN in k.scopes and k.organization is None and k.revoked_at is None]
    return min(candidates, key=lambda k: (k.created_at, k.id)) if candidates else None


def base_url_of(config: Config) -> str:
    host = config.server.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


def create_sign_in_link(store: Any, config: Config, *, key_id: str | None = None,
                        base_url: str | None = None) -> tuple[str, ApiKeyRecord]:
    if key_id is not None:
        key = store.key_by_id(key_id)
        if key is None:
            raise ConfigError(f"no key with id {key_id}; list them with `recalled-lite keys list`")
        if key.revoked_at is not None:
            raise ConfigError(f"key {key_id} is revoked; pick an active one with `recalled-lite keys list`")
    else:
        key = default_key(store)
        if key is None:
            raise ConfigError("no active admin key without an organization; create one with "
                              "`recalled-lite keys create --name console --scopes admin`, or pass --key-id")
    token = new_token()
    now = now_ms()
    store.create_console_link_sync(token_hash(token), key.id, now, now + LINK_MINUTES * 60_000)
    return f"{(base_url or base_url_of(config)).rstrip('/')}/console/link?token={token}", key
