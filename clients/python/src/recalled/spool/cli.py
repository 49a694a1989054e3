"""``python -m recalled spool ...``: look into a spool file and act on its dead letters.

    status      what is waiting, in flight and dead, and the latest dead letters' errors
    retry-dead  move dead letters back to the outbox (all, or --id N ...); with --retarget
                they go to the server and key of RECALLED_BASE_URL / RECALLED_API_KEY
                (after a refused key was replaced)
    purge-dead  delete dead letters for good (all, or --id N ...)

It opens the file like a client does (WAL; safe while applications use it) and never
sends anything itself: a running client's sender picks requeued rows up.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from .._settings import default_spool_path, destination_fingerprint, resolve_api_key, resolve_base_url
from ..errors import RecalledError
from .store import SpoolDB


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recalled", description="recalled client tools")
    commands = parser.add_subparsers(dest="group", required=True)
    spool = commands.add_parser("spool", help="inspect and repair the local emit() spool")
    actions = spool.add_subparsers(dest="action", required=True)
    path_help = f"the spool file (default: $RECALLED_SPOOL_PATH or {default_spool_path()})"
    status = actions.add_parser("status", help="counts, and the latest dead letters")
    status.add_argument("--path", help=path_help)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=10, help="dead letters to show (default 10)")
    retry = actions.add_parser("retry-dead", help="send dead letters again")
    retry.add_argument("--path", help=path_help)
    retry.add_argument("--id", type=int, action="append", dest="ids", help="only this dead letter (repeatable)")
    retry.add_argument("--retarget", action="store_true",
                       help="send them with RECALLED_API_KEY to RECALLED_BASE_URL instead of the key "
                            "and server they were refused by")
    purge = actions.add_parser("purge-dead", help="delete dead letters for good")
    purge.add_argument("--path", help=path_help)
    purge.add_argument("--id", type=int, action="append", dest="ids", help="only this dead letter (repeatable)")
    return parser


def _open(path_arg: str | None) -> SpoolDB:
    path = Path(path_arg).expanduser() if path_arg else default_spool_path()
    if not path.exists():
        raise SystemExit(f"no spool at {path} (nothing was ever emitted there). Pass --path or set "
                         f"RECALLED_SPOOL_PATH.")
    return SpoolDB(path)


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def _status(args: argparse.Namespace) -> int:
    db = _open(args.path)
    status = db.status()
    dead = db.dead_letters()[-args.limit:] if args.limit > 0 else []
    if args.json:
        def default(value: Any) -> Any:
            return value.isoformat() if isinstance(value, datetime) else str(value)
        print(json.dumps({"status": asdict(status), "dead_letters": [asdict(d) for d in dead]},
                         default=default, indent=2))
        return 0
    print(f"spool        {status.path}")
    print(f"pending      {status.pending} events ({status.pending_bytes} bytes): "
          f"{status.in_flight} in flight, {status.due} due now")
    print(f"oldest       {_when(status.oldest_pending_at)}")
    print(f"next attempt {_when(status.next_attempt_at)}")
    print(f"dead letters {status.dead} ({status.dead_bytes} bytes)")
    for dest, counts in status.destinations.items():
        print(f"  destination {dest}: {counts.pending} pending, {counts.in_flight} in flight, {counts.dead} dead")
    if dead:
        print(f"latest dead letters (of {status.dead}):")
        for letter in dead:
            action = letter.event.get("action")
            print(f"  #{letter.id} {_when(letter.dead_at)} {action!r}: {letter.code} (HTTP {letter.status}) "
                  f"{letter.message}")
    if status.dead:
        print("fix the cause, then: python -m recalled spool retry-dead" + (f" --path {args.path}" if args.path else ""))
    return 0


def _retry(args: argparse.Namespace) -> int:
    db = _open(args.path)
    retarget = None
    if args.retarget:
        try:
            retarget = destination_fingerprint(resolve_base_url(None), resolve_api_key(None))
        except ValueError as exc:
            raise SystemExit(f"--retarget: {exc}") from None
    moved = db.retry_dead(args.ids, retarget=retarget)
    print(f"requeued {moved} dead letters; a running client sends them (or the next one to start)")
    return 0


def _purge(args: argparse.Namespace) -> int:
    db = _open(args.path)
    removed = db.purge_dead(args.ids)
    print(f"deleted {removed} dead letters")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"status": _status, "retry-dead": _retry, "purge-dead": _purge}[args.action](args)
    except RecalledError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
