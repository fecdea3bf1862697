# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
DEV_STAMP := $(VENV)/.stamp-dev

.PHONY: test lint typecheck pytest run clean help

help:
	@echo "make test   - create .venv if missing, install, run ruff, mypy and pytest (what CI runs)"
	@echo "make run    - start the application (grows with the product)"

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found; set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[dev]'
	@touch $@

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

pytest: $(DEV_STAMP)
	$(BIN)/python -m pytest

test: lint typecheck pytest

run: $(DEV_STAMP)
	@echo "braintumor $$($(BIN)/braintumor --version | cut -d' ' -f2): the web application (API on 127.0.0.1:8000,"
	@echo "UI on 127.0.0.1:8501) is not built yet; today the CLI works: $(BIN)/braintumor --help"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
