# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck unit install-run install-test

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

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-test
	$(BIN)/mypy

unit: install-test
	$(BIN)/python -m pytest

# Installs what the tests need, then runs linters, type checks and the whole suite.
test: lint typecheck unit
