"""The planner: a config's units of work, their file paths, figure and target lists (no torch, no
matplotlib, so `snakemake -n` parses fast), `startup` (what the Snakefile runs first), `claims`
(where a config can test the papers' findings) and `cluster` (the SLURM profile's hooks).

The names below are the planner's face, `from layerbound import plan`: the Plan, the units and
the path table (defined in core/paths.py, collide/units.py and bounds/eps.py, below the stages
that use them).
"""

from ..bounds.eps import eps_grid
from ..collide.units import Shard, Unit, UnitKey, is_projected, num_chunks, projections_for
from ..core.paths import PATTERNS, RESULTS, path, pattern, results_root
from .plan import TRAINING_ORDER, Plan
from .units import (collision_options, find_unit, model_source, model_taps, network_taps, pairset_name, tap_widths,
                    units)

__all__ = [
    "PATTERNS", "RESULTS", "TRAINING_ORDER", "Plan", "Shard", "Unit", "UnitKey", "collision_options", "eps_grid",
    "find_unit", "is_projected", "model_source", "model_taps", "network_taps", "num_chunks", "pairset_name", "path",
    "pattern", "projections_for", "results_root", "tap_widths", "units",
]
