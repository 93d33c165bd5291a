#!/usr/bin/env bash
# Snakemake runs this inside the rules' conda environment right after creating it (--sdm conda).
# torchattacks goes in without its dependencies: its wheel pins requests~=2.25.1, which none of
# its modules imports, and every dependency it does import is already in layerbound.yaml.
set -euo pipefail
python -m pip install --no-deps "torchattacks==3.5.1"
# The rules run `python -m layerbound`: this workflow's own package goes in editable (so the jobs
# run the checkout's code, edits included) and without dependencies (layerbound.yaml lists them).
# LAYERBOUND_WORKFLOW_DIR is the Snakefile's folder, set by workflow/rules/common.smk.
python -m pip install --no-deps --no-build-isolation -e "${LAYERBOUND_WORKFLOW_DIR:?set by the workflow}"
