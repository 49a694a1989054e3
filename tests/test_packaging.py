"""Installing like a real tool: from a fresh clone, `pip install .` gives a working server, and
the `make serve` install path brings no test tool.

The two install tests need the package registries (marked `network`; offline, deselect them
with `-m "not network"`); CI reaches the registries and runs them. The image cannot be built
here (no Docker engine), so its Dockerfile is checked as text against the lock it must use.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port

TEST_ONLY_PACKAGES = {"pytest", "hypothesis", "playwright", "schemathesis", "standardwebhooks", "svix"}
INSTALL_TIMEOUT = 1200  # seconds: a cold pip cache on a loaded 2-core machine


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECALLED_", "VIRTUAL_ENV", "PYTHONPATH", "MAKE", "MFLAGS"))}
    env.update(extra)
    return env


def fresh_clone(tmp_path: Path) -> Path:
    """What a user gets from `git clone`: the committed HEAD, nothing else of this work tree."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True,
                   capture_output=True, timeout=300)
    return clone


def installed_packages(python: Path) -> set[str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return {re.split(r"[=<> @]", line, maxsplit=1)[0].lower().replace("_", "-")
            for line in out.splitlines() if line.strip()}


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        try:
            return httpx.get(url + "/healthz", timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("serve did not answer /healthz")


@pytest.mark.network
def test_pip_install_from_a_fresh_clone_gives_a_working_server(tmp_path):
    clone = fresh_clone(tmp_path)
    # Files the console adds under templates/ and static/ must be packaged too: probe both.
    probes = [clone / "recalled_lite/console/templates/_packaging_probe.html",
              clone / "recalled_lite/console/static/css/_packaging_probe.css"]
    for probe in probes:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("probe\n")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "."],
                             cwd=clone, capture_output=True, text=True, env=clean_env(), timeout=INSTALL_TIMEOUT)
    assert install.returncode == 0, install.stderr[-3000:]

    outside = tmp_path / "elsewhere"  # nothing of the clone on the import path
    outside.mkdir()
    exe = venv / "bin" / "recalled-lite"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, cwd=outside, timeout=60)
    assert version.returncode == 0, version.stderr
    assert re.match(r"recalled-lite \d+\.\d+\.\d+ \(Python 3\.\d+\.\d+, SQLite \d+\.\d+", version.stdout)
    same = subprocess.run([str(exe), "version"], capture_output=True, text=True, cwd=outside, timeout=60)
    assert same.stdout == version.stdout

    package = Path(subprocess.run(
        [str(python), "-c", "import recalled_lite, os; print(os.path.dirname(recalled_lite.__file__))"],
        capture_output=True, text=True, cwd=outside, check=True, timeout=60).stdout.strip())
    assert not package.is_relative_to(clone), "imported from the clone, not from the installed wheel"
    for backend in ("sqlite", "postgres"):
        shipped = sorted(p.name for p in (package / f"storage/{backend}/migrations").glob("*.sql"))
        assert shipped and shipped == \
            sorted(p.name for p in (clone / f"recalled_lite/storage/{backend}/migrations").glob("*.sql"))
    assert (package / "docs.html").is_file()
    assert (package / "console/templates/_packaging_probe.html").is_file()
    assert (package / "console/static/css/_packaging_probe.css").is_file()

    port = free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([str(exe), "serve", "--db", str(outside / "data" / "r.db"), "--port", str(port)],
                                cwd=outside, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        health = wait_healthy(f"http://127.0.0.1:{port}", proc)
        assert health.status_code == 200 and health.json() == {"data": {"status": "ok"}}
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=5).status_code == 200  # docs.html shipped
    finally:
        proc.terminate()
        proc.wait(60)
    assert "listening" in (tmp_path / "serve.log").read_text()


@pytest.mark.network
def test_the_make_serve_install_path_brings_no_test_package(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    clone = fresh_clone(tmp_path)
    venv = tmp_path / "runtime-venv"
    done = subprocess.run(["make", "install", f"VENV={venv}", f"PYTHON={sys.executable}"], cwd=clone,
                          capture_output=True, text=True, env=clean_env(), timeout=INSTALL_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    packages = installed_packages(venv / "bin" / "python")
    assert {"starlette", "uvicorn", "prometheus-client", "recalled-lite"} <= packages, packages
    assert not packages & TEST_ONLY_PACKAGES, packages & TEST_ONLY_PACKAGES
    version = subprocess.run([str(venv / "bin" / "recalled-lite"), "--version"], capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("recalled-lite ")


def test_dockerfile_installs_the_hashed_lock_then_the_project_without_deps():
    text = (ROOT / "Dockerfile").read_text()
    steps = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip() and not line.startswith("#")]
    installs = [s for s in steps if s.startswith("RUN") and "pip install" in s]
    assert len(installs) == 2, installs
    locked, project = installs
    assert "--require-hashes" in locked and "-r requirements/runtime.txt" in locked
    assert "--no-deps" in project and project.rstrip().split("&&")[0].split()[-1] == "."
    # Every COPY source exists, and the lock is copied before it is installed.
    copies = [s for s in steps if s.startswith("COPY")]
    for copy in copies:
        for source in copy.split()[1:-1]:
            assert (ROOT / source).exists(), source
    assert steps.index(next(c for c in copies if "requirements/runtime.txt" in c)) < steps.index(locked)
    assert any(s.startswith("USER ") and "root" not in s for s in steps)


def test_version_flag_prints_what_the_version_command_prints():
    flag = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "--version"], capture_output=True, text=True,
                          timeout=60)
    command = subprocess.run([sys.executable, "-m", "recalled_lite.cli", "version"], capture_output=True, text=True,
                             timeout=60)
    assert flag.returncode == 0 and command.returncode == 0
    assert flag.stdout == command.stdout and flag.stdout.startswith("recalled-lite ")


def readme_cli_block() -> list[str]:
    """The README's shell block that starts by putting .venv/bin on PATH."""
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```sh\n(.*?)```", readme, re.S):
        lines = [line.split("  #")[0].strip() for line in block.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if lines and lines[0] == 'export PATH="$PWD/.venv/bin:$PATH"':
            return lines
    raise AssertionError("README has no ```sh block starting with export PATH=\"$PWD/.venv/bin:$PATH\"")


def test_readme_cli_commands_work_as_written_after_make_serve(make_server):
    """Run the README's CLI block as written, from the repository, against a running server's
    database (RECALLED_DB, as the README's configuration table documents)."""
    lines = readme_cli_block()
    assert any(line.startswith("recalled-lite keys") for line in lines)
    if not (ROOT / ".venv" / "bin" / "recalled-lite").exists():
        pytest.skip("no .venv in this checkout (make serve / make test create it)")
    srv = make_server("readme-cli")
    script = "\n".join(["set -e", f"cd {ROOT}", *lines])
    env = clean_env(PATH="/usr/bin:/bin", RECALLED_DB=srv.db_location)  # only what the README adds
    if srv.on_postgres:  # a URL database's secret is ./recalled.secret where serve runs, or this
        env["RECALLED_SECRET"] = srv.secret_path.read_text().strip()
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("recalled-lite ")
    if any("keys list" in line for line in lines):
        assert "bootstrap" in done.stdout  # the server's admin key, listed
    if any(line.startswith("recalled-lite verify") for line in lines):
        assert "events verified" in done.stderr
