"""The storage boundary (issue #15, must-show 1), checked on the imports of the product code.

Outside ``recalled_lite/storage/``, code sees storage only through ``storage/base.py``,
``storage/webhook_base.py`` and the other backend-neutral modules of the storage root, so a
second backend can stand behind the same interfaces. Concretely, parsed with ``ast`` (so
imports inside functions and under ``TYPE_CHECKING`` count too, and relative imports are
resolved):

* no module outside ``storage/`` imports ``recalled_lite.storage.sqlite`` (nor anything in it);
* no module outside ``storage/sqlite/`` imports ``sqlite3``;
* the backend-neutral modules of the storage root import neither, except the one opener that
  picks the backend (``storage/backend.py``);
* ``delivery/`` does not import ``api/`` (the wire form of an event lives in ``wire.py``);
* no module outside ``storage/`` runs SQL itself (``.execute(...)`` on a connection that a
  ``store.read(fn)`` callback would receive): it asks the store for what it needs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "recalled_lite"
SQLITE_BACKEND = "recalled_lite.storage.sqlite"
POSTGRES_BACKEND = "recalled_lite.storage.postgres"
# The one module of the storage root that may name a backend: it picks one for a location.
OPENER = "recalled_lite.storage.backend"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module name `source` (the text of `module`) imports, absolute, including
    ``from X import y`` as both ``X`` and ``X.y`` (y may be a submodule), and string
    arguments of ``importlib.import_module`` / ``__import__``."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__"):
                names.add(node.args[0].value)
    return names


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(module: str, names: set[str]) -> list[str]:
    found: list[str] = []
    flagged: set[str] = set()
    in_storage = _within(module, "recalled_lite.storage")
    in_sqlite_backend = _within(module, SQLITE_BACKEND)
    in_postgres_backend = _within(module, POSTGRES_BACKEND)
    for name in sorted(names):
        if name.rpartition(".")[0] in flagged:
            continue  # `from X import y` reports X once, not X.y again
        before = len(found)
        if _within(name, "sqlite3") and not in_sqlite_backend:
            found.append(f"{module} imports {name} (only storage/sqlite/ may use sqlite3)")
        elif (_within(name, "psycopg") or _within(name, "psycopg_pool")) and not in_postgres_backend:
            found.append(f"{module} imports {name} (only storage/postgres/ may use psycopg)")
        elif _within(name, SQLITE_BACKEND) and not in_sqlite_backend and module != OPENER:
            where = "the storage root is backend-neutral" if in_storage else "outside storage/"
            found.append(f"{module} imports {name} ({where}: use storage/base.py or a neutral module)")
        elif _within(name, POSTGRES_BACKEND) and not in_postgres_backend and module != OPENER:
            where = "the storage root is backend-neutral" if in_storage else "outside storage/"
            found.append(f"{module} imports {name} ({where}: use storage/base.py or a neutral module)")
        elif in_postgres_backend and _within(name, SQLITE_BACKEND):
            found.append(f"{module} imports {name} (one backend never uses the other's modules)")
        elif _within(module, "recalled_lite.delivery") and _within(name, "recalled_lite.api"):
            found.append(f"{module} imports {name} (delivery/ must not depend on the HTTP layer)")
        if len(found) > before:
            flagged.add(name)
    return found


def sql_calls(source: str) -> list[int]:
    """Lines that call ``.execute`` / ``.executemany`` / ``.executescript`` on anything."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("execute", "executemany", "executescript")]


def product_modules() -> list[tuple[str, Path]]:
    return [(module_name(p), p) for p in sorted(PACKAGE.rglob("*.py"))]


def test_product_code_respects_the_storage_boundary() -> None:
    modules = product_modules()
    # The scan must actually see the code it guards (a wrong root would pass vacuously).
    names = {m for m, _ in modules}
    assert {"recalled_lite.cli", "recalled_lite.api.reading", "recalled_lite.delivery.service",
            "recalled_lite.intake", "recalled_lite.storage.sqlite.store"} <= names
    problems = []
    for module, path in modules:
        problems += violations(module, imported_names(path.read_text(), module, path.name == "__init__.py"))
    assert problems == [], "storage boundary broken:\n" + "\n".join(problems)


def test_no_sql_outside_storage() -> None:
    problems = [f"{module} line {line}" for module, path in product_modules()
                if not _within(module, "recalled_lite.storage") for line in sql_calls(path.read_text())]
    assert problems == [], "SQL run outside storage/ (add a Store method instead):\n" + "\n".join(problems)


def protocol_members(path: Path, *classes: str) -> set[str]:
    members: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and node.name in classes:
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
    return members


def store_attributes(source: str) -> set[str]:
    """What is read off a variable or attribute named ``store`` (``store.x``, ``ctx.store.x``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            value = node.value
            if (isinstance(value, ast.Name) and value.id == "store") or \
                    (isinstance(value, ast.Attribute) and value.attr == "store"):
                found.add(node.attr)
    return found


def test_what_code_outside_storage_asks_of_a_store_is_in_the_protocols() -> None:
    """A second backend implements storage/base.py's Store and storage/webhook_base.py's
    WebhookStore; anything used beyond them would be an undeclared SQLite-only promise."""
    declared = (protocol_members(PACKAGE / "storage" / "base.py", "Store")
                | protocol_members(PACKAGE / "storage" / "webhook_base.py", "WebhookStore"))
    assert {"append_events", "list_events", "claim", "apply_results"} <= declared
    undeclared = sorted(f"{module}: store.{name}" for module, path in product_modules()
                        if not _within(module, "recalled_lite.storage")
                        for name in store_attributes(path.read_text()) - declared)
    assert undeclared == [], "used but not declared in Store / WebhookStore:\n" + "\n".join(undeclared)
    assert store_attributes("async def f(ctx):\n    await ctx.store.read(g)\n") == {"read"}


def test_the_sql_scan_sees_a_query_in_a_read_callback() -> None:
    source = "def _count(conn, since):\n    return conn.execute('SELECT 1', (since,)).fetchall()\n"
    assert sql_calls(source) == [2]
    assert sql_calls("async def f(store):\n    return await store.chain_head()\n") == []


@pytest.mark.parametrize(("module", "source"), [
    ("recalled_lite.api.reading", "from ..storage.sqlite.filters import ListFilters"),
    ("recalled_lite.api.reading", "from ..storage.sqlite import filters"),
    ("recalled_lite.api.reading", "from ..storage import sqlite"),
    ("recalled_lite.cli", "def f():\n    from .storage.sqlite.offline import backup_file"),
    ("recalled_lite.cli", "def version():\n    import sqlite3"),
    ("recalled_lite.intake", "import recalled_lite.storage.sqlite.fts as fts"),
    ("recalled_lite.console.events", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                     "    from ..storage.sqlite import store"),
    ("recalled_lite.console.events", "from ..storage.sqlite.store import SqliteStore"),
    ("recalled_lite.limits", "import importlib\nimportlib.import_module('recalled_lite.storage.sqlite.reads')"),
    ("recalled_lite.storage.filters", "from .sqlite.store import SqliteStore"),
    ("recalled_lite.storage.base", "import sqlite3"),
    ("recalled_lite.storage.backend", "import sqlite3"),
    ("recalled_lite.delivery.service", "from ..api.common import event_to_wire"),
    ("recalled_lite.delivery.service", "from .. import api"),
    ("recalled_lite.api.events", "import psycopg"),
    ("recalled_lite.storage.append_plan", "from psycopg import errors"),
    ("recalled_lite.storage.sqlite.store", "import psycopg"),
    ("recalled_lite.commands.serve", "from ..storage.postgres.store import PostgresStore"),
    ("recalled_lite.storage.group_writer", "from .postgres.writer import POSTGRES"),
    ("recalled_lite.storage.postgres.chain", "from ..sqlite.merkle import read_tile"),
])
def test_the_scan_catches_each_way_of_crossing(module: str, source: str) -> None:
    assert violations(module, imported_names(source, module)), source


@pytest.mark.parametrize(("module", "source"), [
    ("recalled_lite.api.reading", "from ..storage.base import EventRecord\nfrom ..storage.filters import ListFilters"),
    ("recalled_lite.storage.sqlite.store", "import sqlite3\nfrom .filters import ListFilters"),
    ("recalled_lite.storage.backend", "def f():\n    from .sqlite.store import SqliteStore"),
    ("recalled_lite.storage.backend", "def f():\n    from .postgres.store import PostgresStore"),
    ("recalled_lite.storage.postgres.store", "import psycopg\nfrom ..group_writer import Writer"),
    ("recalled_lite.delivery.service", "from ..wire import event_to_wire\nfrom ..storage.webhook_base import OpenItem"),
    ("recalled_lite.console.events", "from ..api.reading import list_page"),
])
def test_the_scan_allows_what_the_boundary_permits(module: str, source: str) -> None:
    assert violations(module, imported_names(source, module)) == []


def test_relative_imports_resolve_from_a_package_init() -> None:
    names = imported_names("from .sqlite import store", "recalled_lite.storage", is_package=True)
    assert "recalled_lite.storage.sqlite.store" in names
