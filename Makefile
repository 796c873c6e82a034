# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck unit install-run install-test postgres-server bench-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install-run: $(BIN)/python
	$(BIN)/python -m pip install --quiet .

# Installs everything, then starts the service on its embedded defaults (or ./lightspeed-stack.yaml).
run: install-run
	$(BIN)/lightspeed serve

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet $(foreach p,$(STORAGE_PLUGINS),-e '$(p)[test]')

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The package and tests/ (pyproject's [tool.mypy]); the plugins' sources; each plugin's tests on their
# own (every plugin has a tests/test_conformance.py, one module name per mypy run).
typecheck: install-test
	$(BIN)/mypy
	$(BIN)/mypy --strict --ignore-missing-imports $(addsuffix /src,$(STORAGE_PLUGINS))
	set -e; for p in $(STORAGE_PLUGINS); do $(BIN)/mypy --strict --ignore-missing-imports $$p/tests; done

unit: install-test postgres-server
	$(BIN)/python -m pytest
	set -e; for p in $(STORAGE_PLUGINS); do (cd $$p && $(abspath $(BIN))/python -m pytest); done

# The storage plugins and the plugin skeleton: installed editable, each runs its own tests.
STORAGE_PLUGINS := plugins/lightspeed-storage-sqlite plugins/lightspeed-storage-postgres examples/storage_plugin_skeleton

# The postgres plugin's tests start a throwaway PostgreSQL server: install one when missing,
# and stop here, loudly, when there is still none (the tests must never skip for lack of it).
# Root installs directly; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

postgres-server:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || \
		{ echo "PostgreSQL server not found: apt-get install -y postgresql"; \
		  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || \
		{ echo "ERROR: pg_ctl still not found after installing postgresql; the postgres plugin tests cannot run" >&2; exit 1; }

# Installs what the tests need, then runs linters, type checks and the whole suite.
test: lint typecheck unit

# What the benchmarks need beyond the test dependencies (wrk, from Debian's packages).
bench-deps: install-test
	sh benchmarks/install-wrk.sh
