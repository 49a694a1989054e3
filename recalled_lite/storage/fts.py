"""The text each event contributes to the full-text index (backend-neutral: the
five columns any backend indexes, computed once at intake).

SQLite's `events_fts` is contentless, so removing a row (erasure) needs the exact text
that was indexed. That text must therefore be a pure function of the stored
event row: change this module only together with a migration that rebuilds the
index.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import msgspec

_decode_json = msgspec.json.decode


def _metadata_values(value: Any, out: list[str]) -> None:
    # Values only: keys are schema, not content, and would match every event.
    if isinstance(value, dict):
        for item in value.values():
            _metadata_values(item, out)
    elif isinstance(value, list):
        for item in value:
            _metadata_values(item, out)
    elif isinstance(value, str):
        out.append(value)
    elif value is not None and not isinstance(value, bool):
        out.append(str(value))


def fts_columns_from_values(
    action: str,
    actor_id: str | None,
    actor_name: str | None,
    actor_email: str | None,
    organization: str | None,
    targets: list[dict[str, Any]] | None,
    metadata: dict[str, Any] | None,
) -> tuple[str, str, str, str, str]:
    """(action, actor, organization, targets, metadata) as indexed."""
    # List comprehensions, not generator expressions: a third of the cost per event.
    actor = " ".join([v for v in (actor_id, actor_name, actor_email) if v])
    target_words: list[str] = []
    for t in targets or ():
        target_words += [v for v in (t.get("type"), t.get("id"), t.get("name")) if v]
    values: list[str] = []
    if metadata:
        # The flat case inline (one call per event, not one per value); nesting recurses.
        for item in metadata.values():
            kind = type(item)
            if kind is str:
                values.append(item)
            elif kind is int:
                values.append(str(item))
            else:
                _metadata_values(item, values)
    return action, actor, organization or "", " ".join(target_words), " ".join(values)


def fts_columns(
    action: str,
    actor_id: str | None,
    actor_name: str | None,
    actor_email: str | None,
    organization: str | None,
    targets_json: str | None,
    metadata_json: str | None,
) -> tuple[str, str, str, str, str]:
    """The same text, from a stored row (JSON columns): what erasure must delete."""
    return fts_columns_from_values(
        action, actor_id, actor_name, actor_email, organization,
        _decode_json(targets_json) if targets_json else None,
        _decode_json(metadata_json) if metadata_json else None,
    )


# Characters the FTS5 tokenizer (unicode61, tokenchars '_-@') never keeps in a token. A text
# term made only of these would be an empty FTS5 phrase, which matches nothing; such terms
# are ignored instead (they are not indexed). Outside ASCII only categories that unicode61
# treats as separators throughout are listed: for anything else the index decides (at worst:
# an empty phrase, no match). Shared by both backends, so a query ignores the same terms.
_ASCII_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-@")
_SEPARATOR_CATEGORIES = frozenset({"Cc", "Zs", "Zl", "Zp", "Sm", "Pc", "Pi", "Pf"})


def searchable(text: str) -> bool:
    """False for a search term that is ignored (nothing in it could be a token)."""
    for ch in text:
        if ch < "\x80":
            if ch in _ASCII_TOKEN_CHARS:
                return True
        elif unicodedata.category(ch) not in _SEPARATOR_CATEGORIES:
            return True
    return False
