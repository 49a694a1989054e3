"""GET /openapi.json describes every route of the app; GET /docs renders it with no external asset."""

from __future__ import annotations

import re

from recalled_lite.app import create_app
from recalled_lite.config import Config
from recalled_lite.openapi import ERRORS, build_document


def app_routes() -> set[tuple[str, str]]:
    app = create_app(Config(), store=None)
    while not hasattr(app, "routes"):
        app = app.app
    # The console's HTML pages (/ and /console/*, session-authenticated) are not part of the
    # JSON API; tests/test_console_auth_matrix.py covers them.
    return {(method, route.path.replace(":path}", "}")) for route in app.routes
            for method in route.methods or () if method != "HEAD"
            and route.path != "/" and not route.path.startswith("/console")}


def test_every_route_is_described_with_every_error():
    document = build_document()
    described = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert described == app_routes()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status in ERRORS:
                assert status in operation["responses"], (method, path, status)
            assert operation["operationId"]
    assert document["openapi"].startswith("3.1")
    # the body schemas are the msgspec types the server decodes
    event_in = document["components"]["schemas"]["EventIn"]
    assert event_in["properties"]["targets"]["anyOf"][0]["maxItems"] == 50
    assert document["components"]["schemas"]["Error"]["required"] == ["error"]


def test_served_document_and_offline_docs_page(server):
    with server.client(key=None) as c:
        served = c.get("/openapi.json")
        assert served.status_code == 200 and served.headers["content-type"] == "application/json"
        assert served.json() == build_document()
        page = c.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
    assert 'fetch("openapi.json")' in html
    # no CDN: nothing is loaded from another origin
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html
    assert "default-src 'none'" in page.headers["content-security-policy"]
