"""The server secret that signs events: a file beside the database, never inside it.

Only `serve` may create one (`load_or_create_secret`): it is also the only command that
creates a database. Every offline command reads an existing secret (`load_secret`): a
secret made up for a copy of the database could never verify its signatures, and would
sit beside the copy looking like the real one.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat

from .config import Config
from .errors import ConfigError

log = logging.getLogger("recalled_lite")


class SecretMissing(ConfigError):
    """No RECALLED_SECRET and no secret file: says where it looked and how to pass one."""


def _from_environment(config: Config) -> bytes | None:
    if not config.secret:
        return None
    if len(config.secret) < 32:
        raise ConfigError("RECALLED_SECRET must be at least 32 characters")
    return config.secret.encode("utf-8")


def _read_file(config: Config) -> bytes:
    path = config.secret_path
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ConfigError(f"cannot read the server secret {path}: {exc}") from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("server secret is readable by other users; chmod 600 it",
                    extra={"fields": {"path": str(path), "mode": oct(mode)}})
    if len(text) < 32:
        raise ConfigError(f"the server secret in {path} is too short (need at least 32 characters)")
    return text.encode("ascii")


def load_secret(config: Config, *, hint: str = "") -> bytes:
    """The existing secret, for offline commands. Never creates one."""
    from_env = _from_environment(config)
    if from_env is not None:
        return from_env
    try:
        return _read_file(config)
    except FileNotFoundError:
        raise SecretMissing(
            f"no server secret: RECALLED_SECRET is not set and {config.secret_path} does not exist. "
            "Pass the secret the database was created with: RECALLED_SECRET=... in the environment, "
            "or --secret-file PATH (the <db>.secret file kept with your backup)" + hint
        ) from None


def load_or_create_secret(config: Config) -> bytes:
    """The secret for `serve`: created (0600) beside a new database on first start."""
    from_env = _from_environment(config)
    if from_env is not None:
        return from_env
    try:
        return _read_file(config)
    except FileNotFoundError:
        pass
    path = config.secret_path
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
