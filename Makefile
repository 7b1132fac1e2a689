# One source of truth for running, testing and checking the project.
# Every target creates or reuses .venv (Python 3.11) and installs what it needs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run api worker test test-fast lint fmt typecheck bench clean-data venv

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

## make run: embedded Redis + Postgres (unless REDIS_URL / DATABASE_URL are set), the API and the workers
run: $(STAMP)
	$(BIN)/python -m runner run

## make api: the API alone
api: $(STAMP)
	$(BIN)/python -m runner run --no-workers

## make worker: the worker supervisor alone (WORKERS processes)
worker: $(STAMP)
	$(BIN)/python -m runner run --no-api

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check runner jobs api tests
	$(BIN)/ruff format --check runner jobs api tests
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format runner jobs api tests
	$(BIN)/ruff check --fix runner jobs api tests

clean-data:
	rm -rf .data
