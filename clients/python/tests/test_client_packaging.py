"""The distribution stands alone: installable into an empty venv with httpx as its only
dependency, typed, and never importing the server package. The examples are valid code."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[1]
SOURCE = CLIENT / "src" / "recalled"
EXAMPLES = CLIENT / "examples"

CHECK = r"""
import importlib.metadata, importlib.util, pathlib, sys
import recalled, recalled.webhooks, recalled.spool.cli, recalled.spool.sender
from recalled import AsyncRecalled, Recalled, SpoolConfig
assert not [m for m in sys.modules if m.startswith("recalled_lite")], "recalled_lite was imported"
assert importlib.util.find_spec("recalled_lite") is None, "recalled_lite is installed here"
assert importlib.metadata.version("recalled") == "0.1.0" == recalled.__version__
assert importlib.metadata.requires("recalled") == ["httpx>=0.27"], importlib.metadata.requires("recalled")
assert (pathlib.Path(recalled.__file__).parent / "py.typed").is_file()
print("OK", recalled.__file__)
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RECALLED_", "PYTHONPATH", "VIRTUAL_ENV"))}


def test_installs_into_an_empty_venv_with_only_httpx(tmp_path):
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = str(target / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    httpx_install = subprocess.run([*pip, "httpx"], capture_output=True, text=True, env=_env(), timeout=300)
    if httpx_install.returncode != 0:
        if any(word in httpx_install.stderr for word in ("NewConnectionError", "Temporary failure", "No matching")):
            pytest.skip(f"the package index is not reachable: {httpx_install.stderr[-300:]}")
        raise AssertionError(httpx_install.stderr)
    done = subprocess.run([*pip, "--no-deps", str(CLIENT)], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    checked = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, env=_env(), cwd=tmp_path,
                             timeout=120)
    assert checked.returncode == 0, checked.stderr
    assert str(target) in checked.stdout  # the installed copy, not this checkout
    tool = subprocess.run([python, "-m", "recalled", "spool", "status", "--path", str(tmp_path / "none.db")],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=60)
    assert tool.returncode != 0 and "no spool at" in tool.stderr


def test_importing_the_client_here_never_pulls_the_server():
    done = subprocess.run([sys.executable, "-c", CHECK.replace(
        'assert importlib.util.find_spec("recalled_lite") is None, "recalled_lite is installed here"\n', "")],
        capture_output=True, text=True, env=_env(), timeout=60)
    assert done.returncode == 0, done.stderr


def test_no_source_file_imports_the_server_package():
    for path in SOURCE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not any(n.split(".")[0] == "recalled_lite" for n in names), f"{path}: imports {names}"


def test_every_function_is_annotated():
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = [a for a in node.args.args + node.args.kwonlyargs if a.arg not in ("self", "cls")]
                missing = [a.arg for a in args if a.annotation is None]
                assert not missing and (node.returns is not None or node.name == "__init__"), \
                    f"{path.name}:{node.lineno} {node.name} lacks annotations {missing}"


@pytest.mark.parametrize("example,framework", [
    ("django_audit.py", "django"), ("fastapi_app.py", "fastapi"), ("celery_tasks.py", "celery"),
])
def test_examples_are_valid_and_import_where_their_framework_is_installed(example, framework, monkeypatch, tmp_path):
    source = (EXAMPLES / example).read_text()
    compile(source, example, "exec")
    uses = {n.module.split(".")[0] for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.module}
    assert "recalled" in uses
    pytest.importorskip(framework, reason=f"{framework} is not installed here; the example was only compiled")
    monkeypatch.setenv("RECALLED_API_KEY", "rec_live_aaaaaaaa_" + "b" * 32)
    monkeypatch.setenv("RECALLED_SPOOL_PATH", str(tmp_path / "spool.db"))
    if framework == "django":
        import django
        from django.conf import settings

        if not settings.configured:
            settings.configure(INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"])
        django.setup()
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{framework}", EXAMPLES / example)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
