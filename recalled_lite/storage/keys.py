"""Filter keys: what each event contributes to `events_keys` (migration 007).

The list filters (organization, actor, action, target) used to be answered by b-tree
indexes keyed by those values. Each event landed on a random leaf of each of them, so the
cost of an append grew with the log (BENCHMARKS.md). Instead every event now adds one
document to `events_keys`, an FTS5 table with detail=none whose tokens are exact-value keys:
an inverted index is log-structured, so an append costs about the same at 5M events as at 0.

A key is a kind (two letters that are not hex digits) followed by the values in hex,
separated by `x`: any value (spaces, punctuation, any script) becomes exactly one token of
the `ascii` tokenizer, and different (kind, values) never give the same key. Hex costs ~3 µs
per event where a hash (blake2b) cost ~11. The queries still re-check the real columns
(filters.py): the keys only narrow.

The text must stay a pure function of (organization, action, actor_id, targets): erasure
rewrites a row's keys (the actor id becomes '[deleted]'), and retention deletes rows by rowid.
"""

from __future__ import annotations

from typing import Any, Iterable

# Events per block of the `event_blocks` summary (seq >> BLOCK_SHIFT). A page walks the
# keys newest seq first and stops once a block's bound proves that nothing older can sort
# before the page's last row; the bound is per block, so a smaller block stops sooner but
# makes a longer summary to read.
BLOCK_SHIFT = 10

# An event dated more than this after it was received is "ahead" (migration 009): it is left
# out of the blocks' bound and merged into each page on its own, so that one client with a
# clock running fast cannot make every page of a filter read every match for the next hour.
# An event up to this much ahead stays in the bound, which then reads at most this much more
# of the log. The writer (sqlite/store.py) and migration 009 (sqlite/migrate.py) both use it.
AHEAD_MS = 60_000


_KINDS = {"o": "zo", "oa": "zp", "of": "zq", "a": "zr", "t": "zs", "ti": "zt", "i": "zu"}


def _hex(value: str) -> str:
    return value.encode("utf-8", "surrogatepass").hex()


def key(kind: str, *values: str) -> str:
    return _KINDS[kind] + "x".join([_hex(v) for v in values])


def action_family(action: str) -> str:
    """`invoice` for `invoice.paid`: what a prefix filter such as `invoice.*` narrows by."""
    return action.partition(".")[0]


def event_keys(organization: str | None, action: str, actor_id: str | None,
               targets: Iterable[dict[str, Any]] | None) -> str:
    """The document an event adds to events_keys (space-separated keys); the same keys as
    `key`, written out inline because this runs once per event."""
    out = []
    if organization is not None:
        org = _hex(organization)
        out += ["zo" + org, "zp" + org + "x" + _hex(action), "zq" + org + "x" + _hex(action_family(action))]
    if actor_id is not None:
        out.append("zr" + _hex(actor_id))
    for t in targets or ():
        t_type, t_id = _hex(t["type"]), _hex(t["id"])
        out += ["zs" + t_type, "zt" + t_type + "x" + t_id, "zu" + t_id]
    # Order and repeats do not matter to a detail=none index; dropping repeats keeps it small.
    return " ".join(dict.fromkeys(out))


def filter_keys(*, organization: str | None = None, actor_id: str | None = None,
                action: str | None = None, action_prefix: str | None = None,
                target_type: str | None = None, target_id: str | None = None) -> list[str]:
    """The keys an event must carry to pass these (positive, exact) filters.

    Empty when none of them narrows through a key: the caller then walks the time index.
    `action` (exact) and `action_prefix` narrow only together with an organization; a prefix
    only when it names a whole family (`invoice.` or longer), since `inv*` also matches
    `invoices.sync`.
    """
    out = []
    if organization is not None:
        if action is not None:
            out.append(key("oa", organization, action))
        elif action_prefix is not None and "." in action_prefix:
            out.append(key("of", organization, action_family(action_prefix)))
        else:
            out.append(key("o", organization))
    if actor_id is not None:
        out.append(key("a", actor_id))
    if target_type is not None and target_id is not None:
        out.append(key("ti", target_type, target_id))
    elif target_type is not None:
        out.append(key("t", target_type))
    elif target_id is not None:
        out.append(key("i", target_id))
    return out
