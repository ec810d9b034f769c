# Two commands: `make demo` (run the quickstart study, write its figure) and
# `make test` (the test suite). Each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,fast]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/routesim run examples/quickstart.toml --out results/quickstart

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest routesim tests

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
