# Two commands: `make demo` (run the quickstart study, write its figure) and
# `make test` (the test suite). Each creates .venv when it is missing.
# `make figures` runs every figure script (QUICK=1: small runs, seconds each)
# into figures/out/ and paper/generated/; `make paper` builds paper/main.pdf.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench figures paper readme clean

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

FIGURE_SCRIPTS := $(sort $(wildcard figures/fig_*.py))
QUICK ?=
FIGURE_FLAGS := $(if $(filter 1 yes true,$(QUICK)),--quick,)

figures: $(STAMP)
	@set -e; for f in $(FIGURE_SCRIPTS); do \
	  echo "$(BIN)/python $$f $(FIGURE_FLAGS)"; $(BIN)/python $$f $(FIGURE_FLAGS); done

# The paper needs LaTeX (Debian/Ubuntu packages below) and the figures' numbers.
TEXLIVE := texlive-latex-base texlive-latex-recommended texlive-latex-extra \
	texlive-fonts-recommended latexmk

paper: figures
	@command -v latexmk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TEXLIVE); \
	  else \
	    echo "make paper needs latexmk and TeX Live; install them with:"; \
	    echo "  sudo apt-get install -y $(TEXLIVE)"; exit 1; \
	  fi; }
	cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error main.tex

# The README's results table and figures (full runs only).
readme: figures
	$(BIN)/python figures/update_readme.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis figures/out paper/generated
	cd paper && latexmk -C main.tex 2>/dev/null || true
