"""How a request finds its route: one route per path, 405 with `Allow`, trailing slashes.

Starlette tries routes in order and takes the first that matches path AND method. Two
consequences this module removes:

* A path served by several `Route`s (``GET`` and ``POST /v1/keys``) answers a wrong method
  with the `Allow` of whichever route came first, not with every method of the path.
* A literal path that does not allow the method falls through to a later pattern that
  happens to match it: ``GET /v1/events/batch`` reached ``GET /v1/events/{event_id}`` and
  answered "no event with that id".

So the routes of one path are merged into one `PathRoute`, and a `PathRoute` claims every
request whose path it matches, whatever the method: the first path pattern that matches a
URL owns it, and a method it does not serve is `405 METHOD_NOT_ALLOWED` with all of its
methods in `Allow` (``HEAD`` wherever ``GET`` is, as Starlette serves it).

A trailing slash (``POST /v1/events/``) is served by the route without it, instead of
Starlette's redirect_slashes (a bare 307 to an absolute ``http://`` URL, wrong behind a TLS
proxy, and which a client may not follow with its POST body).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Route, Router

from .errors import MethodNotAllowed, NotFound


class PathRoute(Route):
    """Every method of one path; one ASGI app per method."""

    def __init__(self, path: str, apps: dict[str, Callable], endpoints: dict[str, Callable]) -> None:
        methods = list(apps)
        # Route wants one endpoint; it is only used for introspection (child scope "endpoint").
        super().__init__(path, endpoints[methods[0]], methods=methods)
        self.apps = dict(apps)
        if "GET" in self.apps:
            self.apps.setdefault("HEAD", self.apps["GET"])
        assert self.methods is not None
        self.allow = ", ".join(sorted(self.methods))

    def matches(self, scope: dict) -> tuple[Match, dict]:
        match, child_scope = super().matches(scope)
        if match is Match.PARTIAL:
            # The path is ours even if the method is not: answer 405 rather than let a
            # later pattern take it.
            match = Match.FULL
        return match, child_scope

    async def handle(self, scope: dict, receive: Callable, send: Callable) -> None:
        app = self.apps.get(scope["method"])
        if app is None:
            raise MethodNotAllowed(
                f"{scope['method']} is not allowed on this route; allowed: {self.allow}",
                {"method": scope["method"], "allowed": sorted(self.methods or ())},
                headers={"Allow": self.allow},
            )
        await app(scope, receive, send)


def merge_routes(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """One `PathRoute` per path, at the position of the path's first route.

    Other route kinds (a Mount, for instance) are kept as they are, in place.
    """
    merged: list[BaseRoute] = []
    by_path: dict[str, tuple[int, dict[str, Callable], dict[str, Callable]]] = {}
    for route in routes:
        if type(route) is not Route or not route.methods:
            merged.append(route)
            continue
        slot = by_path.get(route.path)
        if slot is None:
            slot = by_path[route.path] = (len(merged), {}, {})
            merged.append(route)  # placeholder, replaced below
        _, apps, endpoints = slot
        for method in route.methods:
            if method == "HEAD" and "GET" in route.methods:
                continue  # served by the GET app (PathRoute adds it)
            if method in apps:
                raise ValueError(f"two routes for {method} {route.path}")
            apps[method] = route.app
            endpoints[method] = route.endpoint
    for path, (index, apps, endpoints) in by_path.items():
        merged[index] = PathRoute(path, apps, endpoints)
    return merged


def serve_trailing_slash(router: Router) -> None:
    """A path that matches no route is tried once more without its trailing slash(es);
    then it is the JSON 404. Replaces Starlette's redirect_slashes."""
    router.redirect_slashes = False

    async def not_found(scope: dict, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope["path"] = path.rstrip("/") or "/"
            await router.app(scope, receive, send)  # no trailing slash now: no second retry
            return
        raise NotFound("no such route")

    router.default = not_found  # type: ignore[method-assign]


class HotRoutes:
    """The intake routes, answered without Starlette's middleware stack and router.

    `POST /v1/events` and `/v1/events/batch` take nearly all the traffic, and for each of
    them Starlette's layers (ServerErrorMiddleware, ExceptionMiddleware, the router trying
    routes in order, request_response) cost about as much Python as the endpoint's own
    HTTP work (BENCHMARKS.md, "where a single-event request's time goes"). An exact
    (method, path) match skips them; everything else, including the same paths with a
    trailing slash or another method, goes through Starlette as before.

    What the layers do is kept: the scope gets what the router would put in it (`app`,
    `router`, `route`, `endpoint`, `path_params`: the metrics' route label and
    `request.app` read them), an exception of a kind the app has a handler for is answered
    by that handler, and any other is answered by the catch-all handler and then re-raised
    (as ServerErrorMiddleware does) for the outer middleware to log.
    """

    def __init__(self, app: Any, routes: Iterable[Route]) -> None:
        self.app = app  # where every other request goes
        self.starlette = app
        self.router = app.router
        self.table: dict[tuple[str, str], Route] = {}
        for route in routes:
            for method in route.methods or ():
                if method != "HEAD":
                    self.table[(method, route.path)] = route
        handlers = dict(app.exception_handlers)
        self.catch_all = handlers.pop(Exception, None) or handlers.pop(500, None)
        self.handlers = {cls: handler for cls, handler in handlers.items() if isinstance(cls, type)}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        route = self.table.get((scope.get("method"), scope["path"])) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.starlette
        scope["router"] = self.router
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is not None:
                response = await handler(request, exc)
                exc.__traceback__ = None  # a reused exception instance would keep growing it
            elif self.catch_all is not None:
                await (await self.catch_all(request, exc))(scope, receive, send)
                raise
            else:
                raise
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Callable | None:
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None
