"""The server secret that signs events: a file beside the database, never inside it."""

from __future__ import annotations

import logging
import os
import secrets
import stat

from .config import Config
from .errors import ConfigError

log = logging.getLogger("recalled_lite")


def load_or_create_secret(config: Config) -> bytes:
    if config.secret:
        if len(config.secret) < 32:
            raise ConfigError("RECALLED_SECRET must be at least 32 characters")
        return config.secret.encode("utf-8")
    path = config.secret_path
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(32)
        # O_EXCL: two processes starting at once cannot both create one.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_secret(config)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        log.info("created server secret", extra={"fields": {"path": str(path)}})
        return value.encode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the server secret {path}: {exc}") from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("server secret is readable by other users; chmod 600 it",
                    extra={"fields": {"path": str(path), "mode": oct(mode)}})
    if len(text) < 32:
        raise ConfigError(f"the server secret in {path} is too short (need at least 32 characters)")
    return text.encode("ascii")
