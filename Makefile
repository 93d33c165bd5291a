# Two entry points for a fresh machine (see README): `make workflow` and `make test`.
# Both create the project's virtual environment in .venv first (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: install workflow test test-fast dry-run lint clean-results

# torchattacks (the evaluation attacks) goes in without its dependencies: its wheel pins
# requests~=2.25.1, which none of its modules imports; with them pip would downgrade the requests
# Snakemake uses to a release with published advisories (README, Attacks).
TORCHATTACKS := torchattacks==3.5.1

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[test]'
	$(BIN)/pip install --no-deps '$(TORCHATTACKS)'
	touch $@

install: $(VENV)/.installed

## Train, search collisions, compute losses and draw figures for config.yaml.
workflow: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES)

dry-run: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake -n

lint: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

## The workflow's lint, then the whole test suite, the slow end-to-end workflow test included.
test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

## Everything but the end-to-end workflow run.
test-fast: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -m "not slow"

clean-results:
	rm -rf results/* .snakemake
	touch results/.gitkeep
