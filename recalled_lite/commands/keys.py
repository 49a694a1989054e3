"""`recalled-lite keys create|list|revoke` and `console-link` (a sign-in link for a key)."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from .common import _audited, _load, _open_store


def cmd_keys_create(args: argparse.Namespace) -> int:
    from ..audit import key_created
    from ..auth import new_key_record, normalize_scopes
    from ..errors import ValidationError

    config = _load(args)
    store = _open_store(config)
    try:
        try:
            scopes = normalize_scopes(s for s in args.scopes.split(",") if s.strip())
        except ValidationError as exc:
            raise ConfigError(exc.message) from None
        plaintext, record = new_key_record(args.name, scopes, args.organization)
        store.create_key_sync(record, audit=_audited("keys create", "recalled.key.created", key_created(record)))
    finally:
        store.close()
    sys.stderr.write(f"created key {record.id} ({', '.join(sorted(scopes))}"
                     f"{', organization ' + args.organization if args.organization else ''}). "
                     "It is shown once:\n")
    print(plaintext)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    config = _load(args)
    store = _open_store(config)
    try:
        keys = store.list_keys()
    finally:
        store.close()
    print(f"{'ID':<31} {'PREFIX':<9} {'NAME':<20} {'ORGANIZATION':<16} {'STATUS':<8} SCOPES")
    for key in keys:
        status = "revoked" if key.revoked_at is not None else "active"
        print(f"{key.id:<31} {key.prefix:<9} {key.name[:20]:<20} {(key.organization or '-')[:16]:<16} "
              f"{status:<8} {','.join(sorted(key.scopes))}")
    if not keys:
        sys.stderr.write("no keys yet; `recalled-lite serve` creates an admin key on first start\n")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from ..audit import key_revoked
    from ..storage.base import RecordNotFound

    config = _load(args)
    store = _open_store(config)
    try:
        try:
            record = store.revoke_key_sync(args.id, None, audit=_audited("keys revoke", "recalled.key.revoked",
                                                                         key_revoked))
        except RecordNotFound:
            raise ConfigError(f"no key with id {args.id}; list them with `recalled-lite keys list`") from None
    finally:
        store.close()
    sys.stderr.write(f"revoked {record.id} ({record.name}); a running server refuses it within 2 seconds\n")
    return 0


def cmd_console_link(args: argparse.Namespace) -> int:
    from ..console.links import create_sign_in_link

    config = _load(args)
    if not config.database.url and not config.db_path.exists():
        raise ConfigError(f"no database at {config.db_path}; pass --db PATH (the server's database)")
    store = _open_store(config)
    try:
        url, key = create_sign_in_link(store, config, key_id=args.key_id, base_url=args.base_url)
    finally:
        store.close()
    sys.stderr.write(f"one-time sign-in link for key {key.id} ({key.name}); it works once, "
                     "within 10 minutes:\n")
    print(url)
    return 0
