# Every target installs what it needs into .venv first, so a fresh clone needs
# nothing but python3 (and node/npm for the SDK interop tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install serve test bench bench-quick bench-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/recalled-lite serve $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# wrk is the load generator: C, so it is not the bottleneck.
bench-deps: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 || sudo apt-get install -y -qq wrk; }

bench: bench-deps
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: bench-deps
	$(PY) -m bench.run --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
