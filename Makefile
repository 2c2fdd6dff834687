# Two commands: `make run` serves Preflight; `make test` runs the tests.
# Both create the virtual environment they need on first use.

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 5000
BIN := $(VENV)/bin
export FLASK_APP := webapp

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
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

clean:
	rm -rf $(VENV) instance .pytest_cache
