"""`migrate-to-postgres`: move a log from its SQLite file to PostgreSQL (docs/scaling.md)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError


def cmd_migrate_to_postgres(args: argparse.Namespace) -> int:
    from ..instance_lock import ServerLock
    from ..progress import Progress
    from ..server_secret import load_secret
    from ..storage.backend import copy_to_postgres, require_database
    from .common import _load

    if not args.to.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"--to {args.to!r}: expected a PostgreSQL URL, postgresql://USER:PASSWORD@HOST/DATABASE")
    config = _load(argparse.Namespace(config=args.config, db=args.source, secret_file=args.secret_file))
    require_database(config.db_path)
    secret = load_secret(config, hint="; the copy is verified with it")
    # No server may write to the file during the copy: what it wrote after the copy's
    # snapshot would be missing on PostgreSQL while its clients saw it acknowledged.
    lock = ServerLock(config.db_path).acquire()
    try:
        bars: dict[str, Progress] = {}

        def step(label: str):
            def update(done: int, total: int) -> None:
                if label not in bars:  # created on first use, so its rate counts from there
                    for earlier in bars.values():
                        earlier.finish()
                    bars[label] = Progress(label, lines=True)
                bars[label].update(done, total)
            return update

        result = copy_to_postgres(config.db_path, args.to, secret, copy_progress=step("copying (rows)"),
                                  verify_progress=step("verifying the copy (events)"))
        list(bars.values())[-1].finish()
    finally:
        lock.release()
    print(json.dumps({"data": result}, indent=2))
    copied, verify = result["copied"], result["verify"]
    if not verify["valid"]:
        bad = verify["chain"]["firstInvalid"]
        for problem in verify["problems"]:
            sys.stderr.write(f"INVALID: {problem}\n")
        if bad:
            sys.stderr.write(f"INVALID at seq {bad['seq']} ({bad['id']}): {bad['reason']}\n")
        sys.stderr.write("The copy does not verify: do not serve it. Drop the PostgreSQL database, check the "
                         "source with `recalled-lite verify`, and copy again.\n")
        return 2
    tables = ", ".join(f"{name} {rows:,}" for name, rows in copied["tables"].items() if rows)
    sys.stderr.write(
        f"OK: {copied['tables']['events']:,} events copied and verified on PostgreSQL (hashes, signatures, "
        f"Merkle root of {verify['treeSize']:,} leaves equal to the source's).\nRows copied: {tables}.\n"
        f"Serve it with the same secret and signing key: recalled-lite serve --db URL "
        f"--secret-file {config.secret_path}, with checkpoints.signing_key_file = {config.signing_key_path} "
        "(or RECALLED_SECRET / RECALLED_SIGNING_KEY). The SQLite file is left as it was.\n")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("migrate-to-postgres",
                         help="copy a SQLite log into an empty PostgreSQL database, then verify the copy")
    cmd.add_argument("--config", help="TOML config file (env RECALLED_CONFIG)")
    cmd.add_argument("--from", dest="source", required=True, metavar="FILE", help="the SQLite database file")
    cmd.add_argument("--to", required=True, metavar="URL", help="an empty PostgreSQL database, postgresql://...")
    cmd.add_argument("--secret-file", dest="secret_file",
                     help="the server secret file (default FILE.secret; or env RECALLED_SECRET)")
    cmd.set_defaults(func=cmd_migrate_to_postgres)
