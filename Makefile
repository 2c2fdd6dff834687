# Two commands: `make run` serves Preflight; `make test` runs the tests.
# Both create the virtual environment they need on first use.

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 5000
BIN := $(VENV)/bin
CONSTRAINTS := docs/deploy/constraints.txt
export FLASK_APP := webapp

.PHONY: run test lint bench clean constraints audit

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs are constrained to the pinned versions that were tested and ship in the image.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/flask db upgrade
	$(BIN)/flask checklists sync
	$(BIN)/flask assessments rescore
	$(BIN)/python -m webapp.serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check webapp tests bench

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/probe_sweep.py

# Re-pin the runtime dependencies from a clean environment (after editing pyproject.toml).
constraints:
	rm -rf /tmp/preflight-pin && $(PYTHON) -m venv /tmp/preflight-pin
	/tmp/preflight-pin/bin/pip install --quiet .
	{ sed -n '1,4p' $(CONSTRAINTS); /tmp/preflight-pin/bin/pip freeze --exclude-editable | grep -v '^preflight @'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS) && rm -rf /tmp/preflight-pin

# Known vulnerabilities in the pinned versions. Needs a vulnerability database online
# (PyPI's JSON API or OSV); see docs/operations.md for why it cannot run everywhere.
audit: $(VENV)/.installed-dev
	$(BIN)/pip install --quiet pip-audit
	$(BIN)/pip-audit --strict --no-deps --disable-pip -r $(CONSTRAINTS)

clean:
	rm -rf $(VENV) instance .pytest_cache
