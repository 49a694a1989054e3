"""`recalled-lite` command line: serve, keys, verify, export, backup, version."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .config import Config, load_config
from .errors import ConfigError

log = logging.getLogger("recalled_lite")


def _common(parser: argparse.ArgumentParser, *, secret: bool = False) -> None:
    parser.add_argument("--config", help="TOML config file (env RECALLED_CONFIG)")
    parser.add_argument("--db", help="SQLite database path (env RECALLED_DB; default ./recalled.db)")
    if secret:
        parser.add_argument("--secret-file", dest="secret_file",
                            help="the server secret file (default <db>.secret; or env RECALLED_SECRET)")


def _load(args: argparse.Namespace, **overrides: Any) -> Config:
    return load_config(args.config, db=args.db, secret_file=getattr(args, "secret_file", None), **overrides)


def _open_store(config: Config, *, serving: bool = False):
    """The store; only `serve` may create a database or a secret (offline commands exit 2)."""
    from .server_secret import load_or_create_secret, load_secret
    from .storage.backend import is_new_database, open_store, require_database

    if serving:
        secret = load_or_create_secret(config) if is_new_database(config.db_path) else load_secret(config)
    else:
        require_database(config.db_path)
        secret = load_secret(config)
    return open_store(config, secret)


def _audited(command: str, action: str, describe: Any) -> Any:
    """The audit hook of a CLI action: the actor is the OS user at this terminal."""
    from .actions import AuditAction
    from .audit import AdminAction, Caller

    return AdminAction(Caller.for_command(command), AuditAction(action), describe)


def ensure_admin_key(store: Any, config: Config) -> str | None:
    """Install RECALLED_BOOTSTRAP_KEY, or mint an admin key if none exists. Returns a new plaintext."""
    from .audit import key_created
    from .auth import ADMIN, KEY_PATTERN, hash_key, new_key_record

    if config.bootstrap_key:
        match = KEY_PATTERN.match(config.bootstrap_key)
        if match is None:
            raise ConfigError("RECALLED_BOOTSTRAP_KEY must look like rec_live_<8 letters/digits>_<32+ letters/digits>")
        existing = store.key_by_prefix(match.group(2))
        if existing is None:
            _, record = new_key_record("bootstrap", frozenset({ADMIN}), None, plaintext=config.bootstrap_key)
            store.create_key_sync(record, audit=_audited("serve (RECALLED_BOOTSTRAP_KEY)", "recalled.key.created",
                                                         key_created(record)))
        elif existing.secret_hash != hash_key(config.bootstrap_key):
            raise ConfigError("RECALLED_BOOTSTRAP_KEY shares its prefix with a different stored key; pick another key")
        return None
    if any(ADMIN in k.scopes and k.revoked_at is None for k in store.list_keys()):
        return None
    plaintext, record = new_key_record("admin", frozenset({ADMIN}), None)
    store.create_key_sync(record, audit=_audited("serve (first start)", "recalled.key.created", key_created(record)))
    return plaintext


def cmd_serve(args: argparse.Namespace) -> int:
    from .instance_lock import ServerLock

    config = _load(args, host=args.host, port=args.port, dev=args.dev or None)
    config.db_path.parent.mkdir(parents=True, exist_ok=True)
    # Before anything touches the files (and before the slow imports): a second server
    # must change nothing, and say so at once.
    lock = ServerLock(config.db_path).acquire()

    import uvicorn

    from .app import configure_logging, create_app
    from .edge import EdgeSettings, ensure_file_descriptors, protocol_class
    from .listening import Server

    configure_logging(config.server.log_level)
    _check_tls(config)
    log.info("effective config", extra={"fields": {"config": config.redacted()}})  # secrets redacted
    store = _open_store(config, serving=True)
    from .signing_key import checkpoint_origin, load_or_create_signing_key

    signer = load_or_create_signing_key(config, store, rotate=args.rotate_signing_key)
    printed = ensure_admin_key(store, config)
    if printed:
        sys.stderr.write(
            "\n  An admin API key was created. It is shown ONCE; store it now:\n\n"
            f"    {printed}\n\n"
            "  Create narrower keys with: recalled-lite keys create --name NAME --scopes events:write\n\n"
        )
        sys.stderr.flush()
    if config.server.dev:
        sys.stderr.write(
            "\n  *** DEV MODE *** webhook destinations on private and loopback addresses are\n"
            "  allowed and retry delays are short. Never run --dev on a server others can reach.\n\n"
        )
    app = create_app(config, store, services=_services(config, signer, checkpoint_origin(config, store.project_id)))
    server_config = uvicorn.Config(
        app,
        host=config.server.host,
        port=config.server.port,
        loop="uvloop",
        # Our HTTP/1.1 protocol (recalled_lite/edge/): framing, deadlines, caps, lingering close.
        http=protocol_class(EdgeSettings.from_server_config(config.server)),
        ssl_certfile=config.server.tls_cert or None,
        ssl_keyfile=config.server.tls_key or None,
        lifespan="on",
        access_log=False,
        # uvicorn would rewrite the client address from X-Forwarded-For for any loopback peer;
        # server.trusted_proxies decides that instead (recalled_lite/client_address.py).
        proxy_headers=False,
        log_config=None,
        server_header=False,
        timeout_keep_alive=config.server.keepalive_seconds,
        timeout_graceful_shutdown=config.server.graceful_shutdown_seconds,
    )

    def listening(addresses: list[tuple[str, int]]) -> None:
        log.info("recalled-lite listening", extra={"fields": {
            "host": config.server.host, "port": addresses[0][1] if addresses else config.server.port,
            "db": str(config.db_path), "project_id": store.project_id, "version": __version__,
            "pid": os.getpid(), "lock": str(lock.path),
            "scheme": "https" if config.server.tls_cert else "http",
        }})

    ensure_file_descriptors(config.server.max_connections)
    server = Server(server_config, on_listening=listening)
    try:
        server.run()
    finally:
        lock.release()
    return 0 if server.started else 1


def _check_tls(config: Config) -> None:
    """A certificate that will not load stops the start with the keys named, not a traceback."""
    if not config.server.tls_cert:
        return
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            config.server.tls_cert, config.server.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls_cert / server.tls_key: cannot load {config.server.tls_cert} "
                          f"with {config.server.tls_key}: {exc}; give PEM files this user can read") from None


def _services(config: Config, signer: Any, origin: str) -> list[Any]:
    from .checkpointing import CheckpointService
    from .console.service import ConsoleService
    from .delivery.service import DeliveryService
    from .key_usage import KeyUsageFlusher
    from .retention_service import RetentionService
    from .services import KeyCacheRefresher

    console = [ConsoleService(config.console)] if config.console.enabled else []
    # Checkpoints first: webhook deliveries carry the latest one from their first attempt.
    return [KeyCacheRefresher(), KeyUsageFlusher(), CheckpointService(config, signer, origin),
            DeliveryService(config), RetentionService(config), *console]


def cmd_keys_create(args: argparse.Namespace) -> int:
    from .audit import key_created
    from .auth import new_key_record, normalize_scopes
    from .errors import ValidationError

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
    from .audit import key_revoked
    from .storage.base import RecordNotFound

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
    from .console.links import create_sign_in_link

    config = _load(args)
    if not config.db_path.exists():
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


def cmd_verify(args: argparse.Namespace) -> int:
    import json

    if args.export is not None:
        return _verify_export(args)
    from .progress import Progress
    from .server_secret import load_secret
    from .storage.backend import require_database, verify_file

    config = _load(args)
    require_database(config.db_path)
    secret = None if args.no_signatures else load_secret(
        config, hint="; or check the hashes only with --no-signatures")
    bar = Progress("verifying")
    result = verify_file(config.db_path, secret, args.from_seq, args.to_seq, progress=bar.update)
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

    from .progress import Progress
    from .server_secret import load_secret
    from .storage.backend import migrate_file, require_database, verify_file

    from .instance_lock import ServerLock

    config = _load(args)
    require_database(config.db_path)
    secret = load_secret(config, hint="; migrate verifies the chain afterwards, which needs it")
    # Never beside a running server: it would serve the old layout's queries on the new one.
    lock = ServerLock(config.db_path).acquire()
    try:
        before, after, latest = migrate_file(config.db_path)
    finally:
        lock.release()
    sys.stderr.write(f"schema {before} -> {after} (latest {latest})\n")
    bar = Progress("verifying")
    result = verify_file(config.db_path, secret, None, None, progress=bar.update)
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

    from .integrity.export_check import verify_export
    from .integrity.note import NoteError, parse_verifier
    from .progress import Progress

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


def cmd_checkpoint_key(args: argparse.Namespace) -> int:
    from .signing_key import read_signing_key

    config = _load(args)
    signer = read_signing_key(config)
    if signer is not None:
        print(signer.verifier.vkey)
        return 0
    raise ConfigError(f"no signing key at {config.signing_key_path} (nor RECALLED_SIGNING_KEY); `recalled-lite serve` "
                      "creates it at first start, and a running server lists its keys at GET /v1/checkpoint/key")


def cmd_witness(args: argparse.Namespace) -> int:
    from .integrity.note import NoteError, parse_verifier
    from .witness import run

    try:
        verifier = parse_verifier(args.key.strip())
    except NoteError as exc:
        raise ConfigError(f"--key: {exc}; expected <name>+<8 hex>+<base64>") from None
    if args.interval is not None and args.interval <= 0:
        raise ConfigError("--interval must be a positive number of seconds")
    return run(args.url, verifier, Path(args.state), args.interval)


def cmd_export(args: argparse.Namespace) -> int:
    from .exporting import Renderer
    from .private_files import create_private_file
    from .progress import Progress
    from .search_query import QueryError, parse_date_bound
    from .storage.backend import export_file
    from .storage.filters import ListFilters

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
            count, head_seq, _ = export_file(config.db_path, filters, lambda pid: Renderer(args.format, pid),
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
                count, head_seq, _ = export_file(config.db_path, filters, lambda pid: Renderer(args.format, pid),
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
    from .progress import Progress
    from .storage.backend import backup_file

    config = _load(args)
    bar = Progress("backing up (pages)")
    backup_file(config.db_path, Path(args.dest), progress=bar.update)
    bar.finish()
    sys.stderr.write(
        f"backup written to {args.dest}.\nThe server secret is NOT inside it: keep a copy of "
        f"{config.secret_path} (or RECALLED_SECRET) with it, or signatures cannot be verified.\n"
        f"Nor is the checkpoint signing key: keep {config.signing_key_path} (or RECALLED_SIGNING_KEY) too.\n"
    )
    return 0


def version_text() -> str:
    from .storage.backend import engine_description

    return f"recalled-lite {__version__} (Python {sys.version.split()[0]}, {engine_description()})"


def cmd_version(args: argparse.Namespace) -> int:
    print(version_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recalled-lite", description="Self-hosted audit log server.")
    parser.add_argument("--version", action="version", version=version_text())
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
