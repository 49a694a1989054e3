"""`recalled-lite serve`: the HTTP server, its first admin key and its background services."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from typing import Any

from .. import __version__
from ..config import Config
from ..errors import ConfigError
from ..gc_tuning import tune_garbage_collector
from .common import _audited, _load, _open_store

log = logging.getLogger("recalled_lite")


def ensure_admin_key(store: Any, config: Config) -> str | None:
    """Install RECALLED_BOOTSTRAP_KEY, or mint an admin key if none exists. Returns a new plaintext."""
    from ..audit import key_created
    from ..auth import ADMIN, KEY_PATTERN, hash_key, new_key_record

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
    from ..instance_lock import ServerLock

    config = _load(args, host=args.host, port=args.port, dev=args.dev or None)
    lock = None
    if not config.database.url:
        config.db_path.parent.mkdir(parents=True, exist_ok=True)
        # Before anything touches the files (and before the slow imports): a second server
        # must change nothing, and say so at once. On PostgreSQL several instances are the
        # point: the chain-head lock orders their appends (docs/scaling.md).
        lock = ServerLock(config.db_path).acquire()

    import uvicorn

    from ..app import create_app
    from ..logs import configure_logging
    from ..edge import EdgeSettings, ensure_file_descriptors, protocol_class
    from ..listening import Server

    configure_logging(config.server.log_level)
    _check_tls(config)
    log.info("effective config", extra={"fields": {"config": config.redacted()}})  # secrets redacted
    store = _open_store(config, serving=True)
    from ..signing_key import checkpoint_origin, load_or_create_signing_key

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

    frozen = tune_garbage_collector()  # the imports, config and store are made: see gc_tuning.py

    def listening(addresses: list[tuple[str, int]]) -> None:
        log.info("recalled-lite listening", extra={"fields": {
            "host": config.server.host, "port": addresses[0][1] if addresses else config.server.port,
            "db": config.db_description, "project_id": store.project_id, "version": __version__,
            "pid": os.getpid(), "lock": str(lock.path) if lock is not None else None,
            "scheme": "https" if config.server.tls_cert else "http",
            "gc_frozen_objects": frozen, "gc_threshold": gc.get_threshold()[0],
        }})

    ensure_file_descriptors(config.server.max_connections)
    server = Server(server_config, on_listening=listening)
    try:
        server.run()
    finally:
        if lock is not None:
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
    from ..checkpointing import CheckpointService
    from ..console.service import ConsoleService
    from ..delivery.service import DeliveryService
    from ..key_usage import KeyUsageFlusher
    from ..retention_service import RetentionService
    from ..services import KeyCacheRefresher

    console = [ConsoleService(config.console)] if config.console.enabled else []
    # Checkpoints first: webhook deliveries carry the latest one from their first attempt.
    return [KeyCacheRefresher(), KeyUsageFlusher(), CheckpointService(config, signer, origin),
            DeliveryService(config), RetentionService(config), *console]
