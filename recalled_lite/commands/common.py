"""What every subcommand shares: the config, the store, the audit hook of a CLI action."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Config, load_config


def _load(args: argparse.Namespace, **overrides: Any) -> Config:
    return load_config(args.config, db=args.db, secret_file=getattr(args, "secret_file", None), **overrides)


def _open_store(config: Config, *, serving: bool = False):
    """The store; only `serve` may create a database or a secret (offline commands exit 2)."""
    from ..server_secret import load_or_create_secret, load_secret
    from ..storage.backend import is_new_database, open_store, require_database

    if serving:
        secret = load_or_create_secret(config) if is_new_database(config.db_location) else load_secret(config)
    else:
        require_database(config.db_location)
        secret = load_secret(config)
    return open_store(config, secret)


def _audited(command: str, action: str, describe: Any) -> Any:
    """The audit hook of a CLI action: the actor is the OS user at this terminal."""
    from ..actions import AuditAction
    from ..audit import AdminAction, Caller

    return AdminAction(Caller.for_command(command), AuditAction(action), describe)
