# The two commands of the README: `make run` starts the system, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two installs: what running needs (`make run`), and that with the test tools (`make test`).
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
# `make run AGENT_PORT=8766 CENTRAL_PORT=8781`: the demo's ports.
AGENT_PORT ?= 8765
CENTRAL_PORT ?= 8780

.PHONY: run test lint typecheck unit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/python scripts/run_local.py --agent-port $(AGENT_PORT) --central-port $(CENTRAL_PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) var
