"""The numbers docs/claims.md and docs/reproducing.md quote from a finished run: the claims table's
verdicts, each layer's first eps where the optimal cross-entropy reaches half of log 2, and the CPU
time of every job (Snakemake's benchmark files), as Markdown.

    python benchmarks/repro_numbers.py results/repro_mnist5k
    python benchmarks/repro_numbers.py results/paper002_fcnn

Reads only the run's outputs; computes nothing new.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def _interval(value: float, lo: float, hi: float, digits: int = 3) -> str:
    if pd.isna(value):
        return ""
    if pd.isna(lo) or pd.isna(hi):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def claims_table(results: Path) -> str:
    table = pd.read_csv(results / "claims.csv", dtype={"m": str})
    lines = ["| claim | method | models | layers | m | value [95% interval] | verdict | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in table.itertuples():
        if row.verdict == "not tested":
            continue
        note = "" if pd.isna(row.note) else str(row.note)
        lines.append(f"| `{row.claim}` | {row.collision_method} | {row.models} | {row.layers} | {row.m} | {_interval(row.value, row.lo, row.hi)} "
                     f"| {row.verdict} | {note} |")
    counts = table["verdict"].value_counts()
    summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("holds", "contradicted", "undecided", "not tested"))
    return "\n".join(lines) + f"\n\n{len(table)} rows: {summary}.\n"


def layer_table(results: Path) -> str:
    summary = pd.read_csv(results / "report" / "layer_summary.csv")
    lines = ["| model | method | m | layer | eps where CE reaches log(2)/2 [range] | CE at eps = eval eps [range] |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in summary.itertuples():
        lines.append(f"| {row.model} | {row.method} | {row.m} | {row.layer} | "
                     f"{_interval(row.eps_ce_half_log2, row.eps_ce_half_log2_lo, row.eps_ce_half_log2_hi, 2)} | "
                     f"{_interval(row.ce_at_eval_eps, row.ce_at_eval_eps_lo, row.ce_at_eval_eps_hi)} (eps {row.grid_eps:g}) |")
    return "\n".join(lines) + "\n"


def cpu_time(results: Path) -> str:
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        bench = pd.read_csv(tsv, sep="\t")
        stage = Path(tsv.relative_to(results / "benchmarks").parts[0]).stem
        rows.append((stage, float(bench["s"].iloc[-1]), float(bench["cpu_time"].iloc[-1])))
    frame = pd.DataFrame(rows, columns=["stage", "wall_s", "cpu_s"])
    per = frame.groupby("stage").agg(jobs=("cpu_s", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"))
    lines = ["| stage | jobs | summed job wall time (s) | summed CPU time (s) |", "| --- | --- | --- | --- |"]
    for stage, row in per.iterrows():
        lines.append(f"| {stage} | {int(row.jobs)} | {row.wall_s:.0f} | {row.cpu_s:.0f} |")
    lines.append(f"| all | {int(per.jobs.sum())} | {per.wall_s.sum():.0f} | {per.cpu_s.sum():.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a finished run's results folder")
    args = parser.parse_args()
    print("## Claims\n\n" + claims_table(args.results))
    print("## Layers\n\n" + layer_table(args.results))
    print("## Jobs' time (Snakemake benchmark files)\n\n" + cpu_time(args.results))


if __name__ == "__main__":
    main()
