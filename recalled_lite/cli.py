"""`recalled-lite` command line: serve, keys, verify, export, backup, version.

The commands live in recalled_lite/commands/ (serve, keys, offline, checkpoints); this module
builds the parser and is the entry point (`recalled_lite.cli:main`, `python -m recalled_lite.cli`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import __version__
from .commands.checkpoints import cmd_checkpoint_key, cmd_witness
from .commands.keys import cmd_console_link, cmd_keys_create, cmd_keys_list, cmd_keys_revoke
from .commands.offline import cmd_backup, cmd_export, cmd_migrate, cmd_verify
from .commands.postgres import add_parser as add_migrate_to_postgres
from .commands.serve import cmd_serve
from .errors import ConfigError


def _common(parser: argparse.ArgumentParser, *, secret: bool = False) -> None:
    parser.add_argument("--config", help="TOML config file (env RECALLED_CONFIG)")
    parser.add_argument("--db", help="SQLite database path, or a postgresql:// URL (env RECALLED_DB; "
                                       "default ./recalled.db)")
    if secret:
        parser.add_argument("--secret-file", dest="secret_file",
                            help="the server secret file (default <db>.secret, ./recalled.secret with a "
                                 "postgresql:// URL; or env RECALLED_SECRET)")


def version_text() -> str:
    from .storage.backend import engine_description

    return f"recalled-lite {__version__} (Python {sys.version.split()[0]}, {engine_description()})"


class _PrintVersion(argparse.Action):
    """argparse's own version action reflows its text to the terminal width; this one prints
    exactly what `recalled-lite version` prints, on one line."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def cmd_version(args: argparse.Namespace) -> int:
    print(version_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recalled-lite", description="Self-hosted audit log server.")
    parser.add_argument("--version", action=_PrintVersion, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server")
    _common(serve)
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--dev", action="store_true",
                       help="allow private webhook destinations and short retries (never in production)")
    serve.add_argument("--rotate-signing-key", action="store_true", dest="rotate_signing_key",
                       help="sign checkpoints with a new key from now on (the old verifier key stays listed)")
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (printed once)")
    _common(create, secret=True)
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated, e.g. events:write,events:read or admin")
    create.add_argument("--organization", help="bind the key to one organization")
    create.set_defaults(func=cmd_keys_create)
    listing = keys_sub.add_parser("list", help="list keys")
    _common(listing, secret=True)
    listing.set_defaults(func=cmd_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    _common(revoke, secret=True)
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_keys_revoke)

    link = sub.add_parser("console-link", help="print a one-time sign-in URL for the web console")
    _common(link)
    link.add_argument("--key-id", dest="key_id",
                      help="the key to sign in as (default: the oldest active admin key not bound to an organization)")
    link.add_argument("--base-url", dest="base_url",
                      help="how browsers reach this server, e.g. https://audit.example.com (default: from host/port)")
    link.set_defaults(func=cmd_console_link)

    verify = sub.add_parser("verify", help="verify the hash chain and signatures offline")
    _common(verify, secret=True)
    verify.add_argument("--no-signatures", dest="no_signatures", action="store_true",
                        help="check the hashes only, without the secret (says so in its output)")
    verify.add_argument("--from-seq", type=int, dest="from_seq")
    verify.add_argument("--to-seq", type=int, dest="to_seq")
    verify.add_argument("--export", metavar="FILE",
                        help="check an export file instead, without the server secret (needs --key)")
    verify.add_argument("--key", metavar="VERIFIER_KEY", help="the log's checkpoint verifier key")
    verify.set_defaults(func=cmd_verify)

    migrate_cmd = sub.add_parser("migrate", help="migrate a database in place (as serve would), then verify it")
    _common(migrate_cmd, secret=True)
    migrate_cmd.set_defaults(func=cmd_migrate)
    add_migrate_to_postgres(sub)

    checkpoint = sub.add_parser("checkpoint", help="signed checkpoints")
    checkpoint_sub = checkpoint.add_subparsers(dest="checkpoint_command", required=True)
    checkpoint_key = checkpoint_sub.add_parser("key", help="print the verifier key to publish (never creates one)")
    _common(checkpoint_key)
    checkpoint_key.set_defaults(func=cmd_checkpoint_key)

    witness = sub.add_parser("witness", help="check that a server's log only ever grows (run from cron, or --interval)")
    witness.add_argument("url", help="the server's base URL, e.g. https://audit.example.com")
    witness.add_argument("--key", required=True, metavar="VERIFIER_KEY", help="the log's checkpoint verifier key")
    witness.add_argument("--state", required=True, metavar="FILE", help="where the last accepted checkpoint is kept")
    witness.add_argument("--interval", type=float, metavar="SECONDS", help="keep checking, this often")
    witness.set_defaults(func=cmd_witness)

    export = sub.add_parser("export", help="export events offline (read-only), with a progress bar")
    _common(export)
    export.add_argument("--format", choices=["ndjson", "csv", "json"], default="ndjson",
                        help="ndjson (default), csv or json; the formats of GET /v1/exports")
    export.add_argument("--output", "-o", help="file to write (default: stdout)")
    export.add_argument("--organization")
    export.add_argument("--actor-id", dest="actor_id")
    export.add_argument("--action", help="exact, or a prefix ending with *")
    export.add_argument("--target-type", dest="target_type")
    export.add_argument("--target-id", dest="target_id")
    export.add_argument("--date-from", dest="date_from", help="RFC 3339 or a date (inclusive)")
    export.add_argument("--date-to", dest="date_to", help="RFC 3339 or a date (inclusive: the whole day)")
    export.set_defaults(func=cmd_export)

    backup = sub.add_parser("backup", help="consistent online copy of the database")
    _common(backup)
    backup.add_argument("dest")
    backup.set_defaults(func=cmd_backup)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"recalled-lite: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
