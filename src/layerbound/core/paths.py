"""The results folder's layout: one path pattern per kind of output, relative to the results
folder, used by the Snakemake rules and the package alike (the one place that says which file
lives where)."""

from __future__ import annotations

import os
from typing import Any

RESULTS = "results"

# One path pattern per kind of output, relative to the results folder. Figures have no suffix:
# each is written as .png and .pdf.
_FIGURES = "figures/{dataset}/{pairset}/{collision_method}"
PATTERNS = {
    "run": "run.json",   # which config file owns the folder (startup.py)
    "checkpoint": "models/{dataset}/{model}.pt",
    "metrics": "models/{dataset}/{model}.json",
    "pairs": "pairs/{dataset}/{pairset}.h5",
    "shard": "shards/{dataset}/{pairset}/{collision_method}/{model}/{layer}/m{m}/p{p}/c{chunk}.h5",
    "distances": "distances/{dataset}/{pairset}/{collision_method}/{model}/{layer}/m{m}.h5",
    "losses": "losses/{dataset}/{pairset}/{collision_method}/{model}/{layer}/m{m}.csv",
    "summary": "summary.csv",
    "figure_layers": _FIGURES + "/layers/{model}/m{m}",
    "figure_zero_one": _FIGURES + "/zero_one/{model}/m{m}",
    "figure_collisions": _FIGURES + "/collisions/{model}/m{m}",
    "figure_m_sweep": _FIGURES + "/m_sweep/{model}",
    "figure_training_methods": _FIGURES + "/training_methods/{arch}/m{m}",
    "figure_collision_methods": "figures/{dataset}/{pairset}/collision_methods/{model}/m{m}",
    "attacks": "attacks/{dataset}/{model}.csv",
    "attacks_summary": "attacks/{dataset}/{model}.json",
    "fab_pairs": "attacks/{dataset}/{pairset}/fab/{model}.csv",
    "fab_curves": "attacks/{dataset}/{pairset}/{collision_method}/fab_vs_collision/{model}/m{m}.csv",
    "figure_fab": _FIGURES + "/fab/{model}/m{m}",
    "report_html": "report/layer_summary.html",
    "report_csv": "report/layer_summary.csv",
    # The papers' findings tested on the run (layerbound.bounds.claims, docs/claims.md).
    "claims_job": "claims_job.json",
    "claims": "claims.csv",
    "claims_html": "report/claims.html",
    # Paper 003: one Algorithm 1 run per (study, f_b size), Table 1, Figures 1-2.
    "semirobust": "semirobust/{dataset}/{study}/fb{fb_layers}.json",
    "semirobust_table_csv": "semirobust/table1.csv",
    "semirobust_table_html": "semirobust/table1.html",
    "figure_rho_studies": "figures/semirobust/rho_by_study",
    "figure_rho_fb": "figures/semirobust/rho_by_fb/{study}",
}


def pattern(kind: str, root: str | os.PathLike = RESULTS, under: str = "", suffix: str | None = None) -> str:
    """The path pattern of an output kind; `under="logs", suffix=".log"` gives its job log's."""
    rel = PATTERNS[kind]
    if suffix is not None:
        rel = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
        rel += suffix
    return "/".join(str(p) for p in (root, under, rel) if p)


def path(kind: str, root: str = RESULTS, **wildcards: Any) -> str:
    return pattern(kind, root).format(**wildcards)


def results_root(given: str | None, config: dict[str, Any] | None) -> str:
    """The results folder of a command: the one given (--results), else the config's, else RESULTS."""
    return os.path.normpath(given or (config["results"] if config else RESULTS))
