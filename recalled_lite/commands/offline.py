"""The offline commands on a database file: verify (or an export file), migrate, export, backup."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import _load


def cmd_verify(args: argparse.Namespace) -> int:
    import json

    if args.export is not None:
        return _verify_export(args)
    from ..progress import Progress
    from ..server_secret import load_secret
    from ..storage.backend import require_database, verify_file

    config = _load(args)
    require_database(config.db_location)
    secret = None if args.no_signatures else load_secret(
        config, hint="; or check the hashes only with --no-signatures")
    bar = Progress("verifying")
    result = verify_file(config.db_location, secret, args.from_seq, args.to_seq, progress=bar.update)
    bar.finish()
    print(json.dumps({"data": result, "signaturesChecked": secret is not None}, indent=2))
    if result["valid"]:
        if secret is None:
            sys.stderr.write(f"OK (hashes only): {result['checked']:,} events chain correctly. Signatures "
                             "were NOT checked (--no-signatures): someone who rewrote the log and "
                             "recomputed the hashes would pass; verify with the secret to rule that out.\n")
        else:
            sys.stderr.write(f"OK: {result['checked']:,} events verified (hashes and signatures)\n")
        if result.get("purged"):
            purged = result["purged"]
            sys.stderr.write(f"{purged['count']:,} purged events are accounted for by tombstones under signed "
                             f"retention checkpoints, in {len(purged['ranges']):,} ranges (listed in the JSON)\n")
        return 0
    bad = result["firstInvalid"]
    sys.stderr.write(f"INVALID at seq {bad['seq']} ({bad['id']}): {bad['reason']}. "
                     "Restore from a backup and compare with `recalled-lite verify --db BACKUP`.\n")
    return 2


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring a database to this version's schema in place (as `serve` would at startup),
    with a progress bar, then verify the whole chain."""
    import json

    from ..progress import Progress
    from ..server_secret import load_secret
    from ..storage.backend import migrate_file, require_database, verify_file

    from ..instance_lock import ServerLock

    config = _load(args)
    require_database(config.db_location)
    secret = load_secret(config, hint="; migrate verifies the chain afterwards, which needs it")
    # Never beside a running server on SQLite: it would serve the old layout's queries on the
    # new one. PostgreSQL migrations run under their own advisory lock, beside instances.
    lock = ServerLock(config.db_path).acquire() if not config.database.url else None
    try:
        before, after, latest = migrate_file(config.db_location)
    finally:
        if lock is not None:
            lock.release()
    sys.stderr.write(f"schema {before} -> {after} (latest {latest})\n")
    bar = Progress("verifying")
    result = verify_file(config.db_location, secret, None, None, progress=bar.update)
    bar.finish()
    print(json.dumps({"data": {"schemaBefore": before, "schemaAfter": after, "verify": result}}, indent=2))
    if not result["valid"]:
        bad = result["firstInvalid"]
        sys.stderr.write(f"INVALID at seq {bad['seq']} ({bad['id']}): {bad['reason']}\n")
        return 2
    sys.stderr.write(f"OK: {result['checked']:,} events verified after the migration\n")
    return 0


def _verify_export(args: argparse.Namespace) -> int:
    import json
    import os

    from ..integrity.export_check import verify_export
    from ..integrity.note import NoteError, parse_verifier
    from ..progress import Progress

    if not args.key:
        raise ConfigError("--export needs --key VERIFIER_KEY (GET /v1/checkpoint/key, or `recalled-lite checkpoint key`)")
    try:
        verifier = parse_verifier(args.key.strip())
    except NoteError as exc:
        raise ConfigError(f"--key: {exc}; expected <name>+<8 hex>+<base64>") from None
    if not os.path.isfile(args.export):
        raise ConfigError(f"no export file at {args.export}")
    bar = Progress("verifying export (bytes)")
    report = verify_export(args.export, verifier, progress=bar.update)
    bar.finish()
    print(json.dumps({"data": report}, indent=2))
    if not report["valid"]:
        bad = report["firstInvalid"]
        where = f" at seq {bad['seq']}" if bad.get("seq") is not None else ""
        sys.stderr.write(f"INVALID{where}: {bad['reason']}. Get a fresh export (GET /v1/exports) and "
                         "compare; if it fails too, the server's log no longer matches its checkpoints.\n")
        return 2
    checkpoint = report["checkpoint"]
    if report.get("purged"):
        sys.stderr.write(f"{report['purged']['count']:,} seqs were purged by retention: the file carries their "
                         "tombstones (seq, hash, signature), and the chain and the Merkle root run through them\n")
    if report["complete"]:
        after = report.get("afterCheckpoint") or 0
        tail = f"; {after:,} newer events are covered by the chain only" if after else ""
        sys.stderr.write(f"OK: {report['checked']:,} events; the Merkle root of the first "
                         f"{checkpoint['treeSize']:,} matches the checkpoint signed by {checkpoint['signedBy']}{tail}\n")
    else:
        sys.stderr.write(f"OK: {report['checked']:,} events each verify and the checkpoint is signed by "
                         f"{checkpoint['signedBy']}, but this export is not the whole log (filtered): it does "
                         "not prove the events are in the signed tree, nor that none is missing. Check single "
                         "events with GET /v1/events/{id}/proof.\n")
    return 0

def cmd_export(args: argparse.Namespace) -> int:
    from ..exporting import Renderer
    from ..private_files import create_private_file
    from ..progress import Progress
    from ..search_query import QueryError, parse_date_bound
    from ..storage.backend import export_file
    from ..storage.filters import ListFilters

    config = _load(args)
    try:
        date_from = parse_date_bound(args.date_from, upper=False) if args.date_from else None
        date_to = parse_date_bound(args.date_to, upper=True) if args.date_to else None
    except QueryError as exc:
        raise ConfigError(f"--date-from/--date-to: {exc}") from None
    filters = ListFilters(
        organization=args.organization, actor_id=args.actor_id, action=args.action,
        target_type=args.target_type, target_id=args.target_id,
        date_from_ms=date_from, date_to_ms=date_to,
    )
    bar = Progress("exporting (seq)")
    if args.output in (None, "-"):
        try:
            count, head_seq, _ = export_file(config.db_location, filters, lambda pid: Renderer(args.format, pid),
                                             sys.stdout.buffer.write, progress=bar.update)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # `recalled-lite export | head`: the reader left, stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        destination = "stdout"
    else:
        # Written beside the target and renamed at the end: no half file under the real name.
        partial = args.output + ".partial"
        try:
            with os.fdopen(create_private_file(Path(partial)), "wb") as out:
                count, head_seq, _ = export_file(config.db_location, filters, lambda pid: Renderer(args.format, pid),
                                                 out.write, progress=bar.update)
            os.replace(partial, args.output)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise
        destination = args.output
    bar.finish()
    sys.stderr.write(f"exported {count:,} events ({args.format}, chain head seq {head_seq}) to {destination}\n")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from ..progress import Progress
    from ..storage.backend import backup_file

    config = _load(args)
    bar = Progress("backing up (pages)")
    backup_file(config.db_location, Path(args.dest), progress=bar.update)
    bar.finish()
    sys.stderr.write(
        f"backup written to {args.dest}.\nThe server secret is NOT inside it: keep a copy of "
        f"{config.secret_path} (or RECALLED_SECRET) with it, or signatures cannot be verified.\n"
        f"Nor is the checkpoint signing key: keep {config.signing_key_path} (or RECALLED_SIGNING_KEY) too.\n"
    )
    return 0
