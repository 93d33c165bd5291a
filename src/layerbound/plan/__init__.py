"""The planner: `plan` (a config's units of work, their file paths, figure and target lists; no
torch, no matplotlib, so `snakemake -n` parses fast), `startup` (what the Snakefile runs first) and
`cluster` (the SLURM profile's hooks)."""
