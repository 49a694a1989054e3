"""The Ed25519 key that signs checkpoints: a file beside the database, never inside it.

Only `serve` creates it (at first start) or replaces it (`serve --rotate-signing-key`); other
commands only read it. The database lists the public verifier keys that have signed
(table signing_keys): a server that finds a key other than the current one refuses to start,
as it does for a changed server secret, because witnesses would see every new checkpoint
signed by a stranger.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

from .config import Config
from .errors import ConfigError
from .integrity.checkpoint import default_origin, valid_origin
from .integrity.note import NoteError, Signer, generate_key, parse_signer
from .timefmt import now_ms

log = logging.getLogger("recalled_lite")


def checkpoint_origin(config: Config, project_id: str) -> str:
    origin = config.checkpoints.origin or default_origin(project_id)
    if not valid_origin(origin):
        raise ConfigError(f"checkpoints.origin: {origin!r} must be non-empty with no spaces or '+'")
    return origin


def read_signing_key(config: Config) -> Signer | None:
    """The configured key (RECALLED_SIGNING_KEY, else the file), or None if there is none."""
    if config.signing_key:
        try:
            return parse_signer(config.signing_key.strip())
        except NoteError as exc:
            raise ConfigError(f"RECALLED_SIGNING_KEY: {exc} (expected PRIVATE+KEY+<name>+<id>+<key>)") from None
    path = config.signing_key_path
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the signing key {path}: {exc}") from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("the signing key is readable by other users; chmod 600 it",
                    extra={"fields": {"path": str(path), "mode": oct(mode)}})
    try:
        return parse_signer(text)
    except NoteError as exc:
        raise ConfigError(f"the signing key in {path} is not a signed-note private key: {exc}") from None


def _create_key_file(path: Path, name: str) -> Signer:
    path.parent.mkdir(parents=True, exist_ok=True)
    skey, _ = generate_key(name)
    # O_EXCL: never overwrite a key; two servers starting at once cannot both create one.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(skey + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    log.info("created checkpoint signing key", extra={"fields": {"path": str(path)}})
    return parse_signer(skey)


def load_or_create_signing_key(config: Config, store: Any, *, rotate: bool = False) -> Signer:
    """The key `serve` signs with, checked against the keys the log has used (see module doc)."""
    origin = checkpoint_origin(config, store.project_id)
    path = config.signing_key_path
    keys = store.signing_keys_sync()
    current = next((k.verifier_key for k in keys if k.retired_at is None), None)
    signer = read_signing_key(config)
    if signer is None:
        if current is not None and not rotate:
            raise ConfigError(
                f"the signing key {path} is missing, but this log's checkpoints are signed with {current}. "
                "Restore the file (or set RECALLED_SIGNING_KEY); to sign with a new key from now on, start "
                "once with `recalled-lite serve --rotate-signing-key` (witnesses must then be given the new key)"
            )
        signer = _create_key_file(path, origin)
    elif rotate and signer.verifier.vkey == current:
        if config.signing_key:
            raise ConfigError("--rotate-signing-key: RECALLED_SIGNING_KEY holds the current key; "
                              "set it to a new key (or unset it to let serve create one)")
        retired = path.with_name(f"{path.name}.retired-{int(time.time())}")
        os.replace(path, retired)
        log.info("moved the old signing key aside", extra={"fields": {"path": str(retired)}})
        signer = _create_key_file(path, origin)
    vkey = signer.verifier.vkey
    if vkey != current:
        if current is not None and not rotate:
            raise ConfigError(
                f"the signing key {'in RECALLED_SIGNING_KEY' if config.signing_key else path} ({vkey}) is not the "
                f"one this log's checkpoints are signed with ({current}). Restore the original key; to switch "
                "keys on purpose, start once with `recalled-lite serve --rotate-signing-key`"
            )
        store.install_signing_key_sync(vkey, now_ms())
        if current is not None:
            log.warning("rotated the checkpoint signing key; give witnesses the new verifier key",
                        extra={"fields": {"old": current, "new": vkey}})
    return signer
