"""What the read routes share: list filters from query params, page cursors, page bodies.

Used by `GET /v1/events`, `GET /v1/events/search`, `GET /v1/exports` and
`GET /v1/embed/events`.

Cursors
-------
A cursor is the position of the last row of a page (recalled_lite/cursors.py)
plus, after a ``.``, the filters of the query that produced it::

    <position>[.<base64url(JSON of the filters)>]

so ``list({cursor})`` alone continues the same filtered walk, as the recalled SDK's
README shows. Filters sent again with a cursor must be the same ones: a filter
that differs from (or is missing in) the cursor's is a 400 (``field: cursor``),
never a silently different result. ``limit`` may change from page to page. The
organization wall of the key (or embed token) is applied on every page, whatever
the cursor says; cursors are not secret and need no signature.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request

from ..cursors import Cursor, CursorError, decode_cursor, decode_tail_cursor, encode_cursor, encode_tail_cursor
from ..errors import ValidationError
from ..schemas import EventOut
from ..search_query import (
    ActionTerm, ActorTerm, OccurredTerm, OrgTerm, QueryError, SearchQuery, TargetTerm, parse_date_bound,
    parse_search_query,
)
from ..storage.base import EventRecord
from ..storage.filters import ListFilters
from ..wire import event_to_wire
from .common import int_param

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_CURSOR_CHARS = 16384

Str128 = Annotated[str, Meta(max_length=128)]
Str255 = Annotated[str, Meta(max_length=255)]
Ms = Annotated[int, Meta(ge=-(2**62), le=2**62)]  # a crafted cursor must not overflow SQLite's int64


class CursorFilters(Struct, omit_defaults=True, forbid_unknown_fields=True):
    """The filters a cursor remembers (short keys: cursors travel in URLs)."""

    o: Str128 | None = None  # organization
    u: Str255 | None = None  # actor_id
    a: Annotated[str, Meta(max_length=256)] | None = None  # action (may end with *)
    tt: Str255 | None = None  # target_type
    ti: Str255 | None = None  # target_id
    df: Ms | None = None  # date_from, ms
    dt: Ms | None = None  # date_to, ms
    q: Annotated[str, Meta(max_length=1024)] | None = None  # search text


_encode_filters = msgspec.json.Encoder().encode
_decode_filters = msgspec.json.Decoder(CursorFilters).decode

# query param -> (CursorFilters field, max length)
_TEXT_FILTERS = {
    "organization": ("o", 128),
    "actor_id": ("u", 255),
    "action": ("a", 256),
    "target_type": ("tt", 255),
    "target_id": ("ti", 255),
}
_PARAM_OF = {**{f: p for p, (f, _) in _TEXT_FILTERS.items()}, "df": "date_from", "dt": "date_to", "q": "q"}


@dataclass(frozen=True, slots=True)
class PageCursor:
    kind: str  # "list" | "search" | "tail"
    position: Cursor | None  # list and search
    after_seq: int | None  # tail
    filters: CursorFilters


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def encode_page_cursor(kind: str, last: EventRecord, filters: CursorFilters) -> str:
    if kind == "tail":
        token = encode_tail_cursor(last.seq)
    else:
        token = encode_cursor(last.occurred_at, last.seq, kind=kind)  # type: ignore[arg-type]
    if filters != CursorFilters():
        token += "." + _b64(_encode_filters(filters))
    return token


def _cursor_error(message: str) -> ValidationError:
    return ValidationError.field("cursor", message)


def decode_page_cursor(token: str, kinds: tuple[str, ...]) -> PageCursor:
    if len(token) > MAX_CURSOR_CHARS:
        raise _cursor_error("cursor is too long")
    position_part, dot, filters_part = token.partition(".")
    filters = CursorFilters()
    if dot:
        try:
            raw = base64.urlsafe_b64decode(filters_part + "=" * (-len(filters_part) % 4))
            if _b64(raw) != filters_part or not filters_part:
                raise ValueError
            filters = _decode_filters(raw)
        except (ValueError, binascii.Error, msgspec.DecodeError, msgspec.ValidationError):
            raise _cursor_error("malformed cursor; pass nextCursor exactly as it was returned") from None
    for kind in kinds:
        try:
            if kind == "tail":
                return PageCursor("tail", None, decode_tail_cursor(position_part), filters)
            return PageCursor(kind, decode_cursor(position_part, kind=kind), None, filters)  # type: ignore[arg-type]
        except CursorError:
            continue
    raise _cursor_error("malformed cursor, or a cursor from another endpoint; pass nextCursor exactly "
                        "as it was returned")


def _text_param(request: Request, name: str, max_chars: int) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_chars:
        raise ValidationError.field(name, f"{name} is longer than {max_chars} characters")
    return value


def _date_param(request: Request, name: str, *, upper: bool) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return parse_date_bound(value, upper=upper)
    except QueryError as exc:
        raise ValidationError.field(name, f"{name}: {exc}") from None


def filters_from_params(request: Request, *, with_q: bool = False) -> CursorFilters:
    """The §4.5 filters (and `q`) given in the query string, validated."""
    values: dict[str, Any] = {}
    for param, (field, max_chars) in _TEXT_FILTERS.items():
        values[field] = _text_param(request, param, max_chars)
    values["df"] = _date_param(request, "date_from", upper=False)
    values["dt"] = _date_param(request, "date_to", upper=True)
    if with_q:
        q = request.query_params.get("q")
        values["q"] = q if q else None
    if values["df"] is not None and values["dt"] is not None and values["dt"] < values["df"]:
        raise ValidationError("date_to is before date_from", {"field": "date_to"})
    return CursorFilters(**values)


def merge_with_cursor(given: CursorFilters, cursor: PageCursor | None) -> CursorFilters:
    """The filters of this page: the cursor's, which any filter sent again must equal."""
    if cursor is None:
        return given
    carried = cursor.filters
    for f in CursorFilters.__struct_fields__:
        mine = getattr(given, f)
        if mine is not None and mine != getattr(carried, f):
            raise ValidationError(
                f"this cursor was issued for a different query: {_PARAM_OF[f]} differs. Send the "
                "cursor alone (it remembers its filters) or with the same filters, or start over "
                "without a cursor", {"field": "cursor", "param": _PARAM_OF[f]},
            )
    return carried


def to_list_filters(f: CursorFilters, *, limit: int = DEFAULT_LIMIT, cursor: Cursor | None = None,
                    after_seq: int | None = None) -> ListFilters:
    return ListFilters(
        organization=f.o, actor_id=f.u, action=f.a, target_type=f.tt, target_id=f.ti,
        date_from_ms=f.df, date_to_ms=f.dt, limit=limit, cursor=cursor, after_seq=after_seq,
    )


def wall_allows(organization_wall: str | None, f: CursorFilters) -> bool:
    """False when a key (or token) bound to one organization asks for another: an empty result."""
    return organization_wall is None or f.o is None or f.o == organization_wall


def limit_param(request: Request, default: int = DEFAULT_LIMIT) -> int:
    value = int_param(request, "limit", minimum=1, maximum=MAX_LIMIT, default=default)
    assert value is not None
    return value


class EventPage(Struct, rename="camel", omit_defaults=False):
    data: list[EventOut]
    next_cursor: str | None


def page_body(records: list[EventRecord], project_id: str, next_cursor: str | None) -> EventPage:
    return EventPage([event_to_wire(r, project_id) for r in records], next_cursor)


# --- the two page kinds, shared by /v1/events* and /v1/embed/events ------------------


def _empty_page() -> EventPage:
    return EventPage([], None)


def cursor_param(request: Request, kinds: tuple[str, ...]) -> PageCursor | None:
    token = request.query_params.get("cursor")
    return decode_page_cursor(token, kinds) if token else None


async def list_page(request: Request, store: Any, organization_wall: str | None,
                    cursor: PageCursor | None, *, allow_tail: bool = True) -> EventPage:
    """`GET /v1/events` semantics: filters, keyset cursor, `after_seq` tailing."""
    limit = limit_param(request)
    given = filters_from_params(request)
    after_param = int_param(request, "after_seq", minimum=0) if allow_tail else None
    if cursor is not None and cursor.kind == "search":
        raise _cursor_error("this is a search cursor; pass it with the same q")
    if cursor is not None and after_param is not None:
        raise ValidationError(
            "after_seq cannot be combined with cursor: a tailing page's nextCursor already "
            "continues after its last event", {"field": "after_seq"},
        )
    f = merge_with_cursor(given, cursor)
    tail = after_param is not None or (cursor is not None and cursor.kind == "tail")
    if not wall_allows(organization_wall, f):
        return _empty_page()
    filters = to_list_filters(
        f, limit=limit,
        cursor=cursor.position if cursor is not None and cursor.kind == "list" else None,
        after_seq=(after_param if after_param is not None else cursor.after_seq) if tail else None,  # type: ignore[union-attr]
    )
    records, more = await store.list_events(filters, organization_wall)
    next_cursor = encode_page_cursor("tail" if tail else "list", records[-1], f) if more else None
    return page_body(records, store.project_id, next_cursor)


def _filter_terms(f: CursorFilters) -> tuple:
    """The §4.5 list filters, given to search, as the qualifiers that mean the same."""
    terms: list = []
    if f.o is not None:
        terms.append(OrgTerm(f.o))
    if f.u is not None:
        terms.append(ActorTerm(f.u))
    if f.a is not None:
        prefix = f.a.endswith("*")
        terms.append(ActionTerm(f.a[:-1] if prefix else f.a, prefix=prefix))
    if f.tt is not None or f.ti is not None:
        terms.append(TargetTerm(f.tt, f.ti))  # type: ignore[arg-type]  (id only: any type)
    if f.df is not None or f.dt is not None:
        terms.append(OccurredTerm(f.df, f.dt))
    return tuple(terms)


async def search_page(request: Request, store: Any, organization_wall: str | None,
                      cursor: PageCursor | None) -> EventPage:
    """`GET /v1/events/search` semantics: the query language of search_query.py."""
    limit = limit_param(request)
    given = filters_from_params(request, with_q=True)
    if cursor is not None and cursor.kind != "search":
        raise _cursor_error("this is a list cursor; pass it to the list endpoint, or drop it")
    try:
        parse_search_query(given.q or "")  # validates q before it goes into a cursor
        f = merge_with_cursor(given, cursor)
        query = parse_search_query(f.q or "")
    except QueryError as exc:
        raise ValidationError(f"invalid search query: {exc}", {"field": "q"}) from None
    if not wall_allows(organization_wall, f):
        return _empty_page()
    query = SearchQuery(query.terms + _filter_terms(f))
    try:
        records, more = await store.search_events(
            query, organization_wall, limit, cursor.position if cursor is not None else None)
    except QueryError as exc:
        raise ValidationError(f"invalid search query: {exc}", {"field": "q"}) from None
    next_cursor = encode_page_cursor("search", records[-1], f) if more else None
    return page_body(records, store.project_id, next_cursor)
