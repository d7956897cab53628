# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch==2.13.0 lies in /opt/wheels on our machines; elsewhere pip uses the index.
PIP_INSTALL = $(BIN)/python -m pip install --quiet $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
# Playwright drives the system chromium: never download its own browsers.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: demo test install install-dev lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(PIP_INSTALL) -e .

install-dev: $(BIN)/python
	$(PIP_INSTALL) -e ".[dev]"

demo: install
	$(BIN)/xmodal demo

test: install-dev
	@# the browser test drives Debian's chromium; install it quietly where apt can, else it skips
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -q chromium >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1))) || true
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m ruff format --check src tests benchmarks
	$(BIN)/python -m mypy
	@# CI reaches no model hub: tests load packaged models and tiny ones they write themselves
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# ruff (lint and format) over the tree, mypy over src/xmodal (its settings are in pyproject.toml)
lint: install-dev
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m ruff format --check src tests benchmarks
	$(BIN)/python -m mypy

bench: install-dev
	$(BIN)/python benchmarks/quality.py
	$(BIN)/python benchmarks/encode_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
