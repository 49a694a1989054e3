"""Cursor pages that walk themselves.

Sync::

    page = client.events.list(organization="org_acme", limit=100)   # one request
    page.data, page.next_cursor, page.has_more                       # this page only
    for event in page: ...                                           # every event, page after page
    for p in page.iter_pages(): ...                                  # page by page

Async::

    page = await client.events.list(organization="org_acme")         # the first page
    async for event in client.events.list(organization="org_acme"):  # every event
        ...

Both dialects are read: recalled's ``{"data", "nextCursor"}`` and the webhook/key surface's
``{"data", "has_more", "next_cursor"}``. A recalled cursor carries its filters, so later pages
send only ``cursor`` (and ``limit``); a webhook cursor carries a position only, so later pages
repeat the filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Generator, Generic, Iterator, TypeVar

from ._http import Call, data_of

if TYPE_CHECKING:
    from ._http import AsyncTransport, SyncTransport

T = TypeVar("T")

__all__ = ["PageData", "SyncPage", "AsyncPage", "AsyncPaginator"]


@dataclass(frozen=True)
class PageData(Generic[T]):
    data: list[T]
    next_cursor: str | None
    has_more: bool


def page_parser(item: Callable[[Any], T]) -> Callable[[Any], PageData[T]]:
    def parse(payload: Any) -> PageData[T]:
        items = [item(raw) for raw in data_of(payload)]
        cursor = payload.get("nextCursor", payload.get("next_cursor"))
        has_more = bool(payload["has_more"]) if "has_more" in payload else cursor is not None
        return PageData(items, cursor, has_more and cursor is not None)
    return parse


# Given the cursor of the previous page, the call for the next one.
NextCall = Callable[[str], Call[PageData[T]]]


class SyncPage(Generic[T]):
    def __init__(self, transport: "SyncTransport", page: PageData[T], next_call: NextCall[T]) -> None:
        self._transport = transport
        self._page = page
        self._next_call = next_call

    @property
    def data(self) -> list[T]:
        return self._page.data

    @property
    def next_cursor(self) -> str | None:
        return self._page.next_cursor

    @property
    def has_more(self) -> bool:
        return self._page.has_more

    def next_page(self) -> "SyncPage[T] | None":
        if not self.has_more or self.next_cursor is None:
            return None
        page = self._transport.request(self._next_call(self.next_cursor))
        return SyncPage(self._transport, page, self._next_call)

    def iter_pages(self) -> Iterator["SyncPage[T]"]:
        page: SyncPage[T] | None = self
        while page is not None:
            yield page
            page = page.next_page()

    def __iter__(self) -> Iterator[T]:
        for page in self.iter_pages():
            yield from page.data

    def __len__(self) -> int:
        """Items on this page (not in the whole list)."""
        return len(self._page.data)

    def __repr__(self) -> str:
        return f"SyncPage(items={len(self.data)}, next_cursor={self.next_cursor!r})"


class AsyncPage(Generic[T]):
    def __init__(self, transport: "AsyncTransport", page: PageData[T], next_call: NextCall[T]) -> None:
        self._transport = transport
        self._page = page
        self._next_call = next_call

    @property
    def data(self) -> list[T]:
        return self._page.data

    @property
    def next_cursor(self) -> str | None:
        return self._page.next_cursor

    @property
    def has_more(self) -> bool:
        return self._page.has_more

    async def next_page(self) -> "AsyncPage[T] | None":
        if not self.has_more or self.next_cursor is None:
            return None
        page = await self._transport.request(self._next_call(self.next_cursor))
        return AsyncPage(self._transport, page, self._next_call)

    async def iter_pages(self) -> AsyncIterator["AsyncPage[T]"]:
        page: AsyncPage[T] | None = self
        while page is not None:
            yield page
            page = await page.next_page()

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.iter_pages():
            for item in page.data:
                yield item

    def __len__(self) -> int:
        return len(self._page.data)

    def __repr__(self) -> str:
        return f"AsyncPage(items={len(self.data)}, next_cursor={self.next_cursor!r})"


class AsyncPaginator(Generic[T]):
    """``await`` it for the first page, or ``async for`` over every item."""

    def __init__(self, transport: "AsyncTransport", first: Call[PageData[T]], next_call: NextCall[T]) -> None:
        self._transport = transport
        self._first = first
        self._next_call = next_call

    async def _first_page(self) -> AsyncPage[T]:
        page = await self._transport.request(self._first)
        return AsyncPage(self._transport, page, self._next_call)

    def __await__(self) -> Generator[Any, None, AsyncPage[T]]:
        return self._first_page().__await__()

    async def __aiter__(self) -> AsyncIterator[T]:
        page = await self._first_page()
        async for item in page:
            yield item
