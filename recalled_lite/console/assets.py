"""Static files of the console, served from the package with cache headers.

Every file under ``console/static/`` is read once, at first use. Pages link to
``/console/static/<name>?v=<content hash>``: such a URL never changes meaning, so it is
cached for a year (``immutable``); without the right ``v`` it is revalidated (ETag).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response

_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
YEAR = 365 * 24 * 3600


class Asset(NamedTuple):
    body: bytes
    version: str
    media_type: str


_assets: dict[str, Asset] | None = None


def assets() -> dict[str, Asset]:
    global _assets
    if _assets is None:
        found: dict[str, Asset] = {}
        for entry in resources.files(__package__).joinpath("static").iterdir():
            suffix = entry.name[entry.name.rfind("."):]
            if entry.is_file() and suffix in _TYPES:
                body = entry.read_bytes()
                found[entry.name] = Asset(body, hashlib.sha256(body).hexdigest()[:16], _TYPES[suffix])
        _assets = found
    return _assets


def asset_url(name: str) -> str:
    return f"/console/static/{name}?v={assets()[name].version}"


async def static_file(request: Request) -> Response:
    from .render import with_security_headers

    asset = assets().get(request.path_params["name"])
    if asset is None:
        from .routes import not_found_page

        return await not_found_page(request)
    etag = f'"{asset.version}"'
    headers = {"ETag": etag}
    if request.query_params.get("v") == asset.version:
        headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
    else:
        headers["Cache-Control"] = "no-cache"
    if request.headers.get("if-none-match") == etag:
        return with_security_headers(Response(status_code=304, headers=headers), cache=True)
    return with_security_headers(Response(asset.body, media_type=asset.media_type, headers=headers), cache=True)
