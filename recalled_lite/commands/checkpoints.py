"""`recalled-lite checkpoint key` and `witness`: the signed checkpoints, from both sides."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .common import _load


def cmd_checkpoint_key(args: argparse.Namespace) -> int:
    from ..signing_key import read_signing_key

    config = _load(args)
    signer = read_signing_key(config)
    if signer is not None:
        print(signer.verifier.vkey)
        return 0
    raise ConfigError(f"no signing key at {config.signing_key_path} (nor RECALLED_SIGNING_KEY); `recalled-lite serve` "
                      "creates it at first start, and a running server lists its keys at GET /v1/checkpoint/key")


def cmd_witness(args: argparse.Namespace) -> int:
    from ..integrity.note import NoteError, parse_verifier
    from ..witness import run

    try:
        verifier = parse_verifier(args.key.strip())
    except NoteError as exc:
        raise ConfigError(f"--key: {exc}; expected <name>+<8 hex>+<base64>") from None
    if args.interval is not None and args.interval <= 0:
        raise ConfigError("--interval must be a positive number of seconds")
    return run(args.url, verifier, Path(args.state), args.interval)
