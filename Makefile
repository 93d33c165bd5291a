# Two entry points for a fresh machine (see README): `make workflow` and `make test`.
# Both create the project's virtual environment in .venv first (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
# The numerically sensitive tests run a second time under a PyTorch CPU capability other than this
# CPU's best (AVX2 where AVX-512 exists, else the portable kernels): their tolerances must follow
# from the arithmetic, not from one CPU's kernels.
OTHER_CAPABILITY ?= $(shell grep -qs avx512f /proc/cpuinfo && echo avx2 || echo default)
NUMERIC_TESTS := tests/test_collide.py tests/test_polytope.py tests/test_loaded.py tests/test_shards.py \
	tests/test_projection.py tests/test_adversary.py tests/test_certify.py tests/test_smoothing.py

.PHONY: install workflow test test-capability test-fast dry-run lint docs clean-results

# torchattacks (the evaluation attacks) goes in without its dependencies: its wheel pins
# requests~=2.25.1, which none of its modules imports; with them pip would downgrade the requests
# Snakemake uses to a release with published advisories (docs/attacks.md).
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

## The workflow's lint, the documentation site's strict build, then the whole test suite, the slow
## end-to-end workflow test included, then the numerically sensitive tests under another CPU capability.
test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint
	$(MAKE) docs
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest
	$(MAKE) test-capability

## The documentation site (docs/, mkdocs.yml) into site/; a broken link or docstring fails it.
docs: install
	$(BIN)/mkdocs build --strict --quiet

## The numerically sensitive tests under ATEN_CPU_CAPABILITY=$(OTHER_CAPABILITY).
test-capability: install
	ATEN_CPU_CAPABILITY=$(OTHER_CAPABILITY) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -m "not slow" $(NUMERIC_TESTS)

## Everything but the end-to-end workflow run.
test-fast: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -m "not slow"

clean-results:
	rm -rf results/* .snakemake
	touch results/.gitkeep
