#!/usr/bin/env bash
# Snakemake runs this inside the rules' conda environment right after creating it (--sdm conda).
# torchattacks goes in without its dependencies: its wheel pins requests~=2.25.1, which none of
# its modules imports, and every dependency it does import is already in layerbound.yaml.
set -euo pipefail
python -m pip install --no-deps "torchattacks==3.5.1"
