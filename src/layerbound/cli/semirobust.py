"""`layerbound semirobust ...`: paper 003's study, one subcommand per workflow step.

    layerbound semirobust run    --configfile config.yaml --study medium --fb-layers 3   (or --job-json JOB)
    layerbound semirobust table  --csv results/semirobust/table1.csv --html ....html RESULT.json...
    layerbound semirobust figure studies --png P --pdf D RESULT.json...      (paper 003 Fig. 1)
    layerbound semirobust figure fb      --png P --pdf D RESULT.json...      (Fig. 2, one study)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import config as configuration
from ..core.errors import ConfigError


def _cmd_run(args: argparse.Namespace) -> None:
    from .. import plan
    from ..semirobust import study as semirobust_study

    if args.job_json:
        job = json.loads(args.job_json)
    else:
        if not (args.study and args.fb_layers):
            raise ConfigError("--study and --fb-layers are required with --configfile")
        cfg = configuration.load(args.configfile)
        job = configuration.semirobust_job(cfg, args.study, args.fb_layers)
        args.results = plan.results_root(args.results, cfg)
    args.results = plan.results_root(args.results, None)
    robust = args.robust or plan.path("checkpoint", args.results, dataset=job["dataset"], model=job["robust"])
    regular = args.regular or plan.path("checkpoint", args.results, dataset=job["dataset"], model=job["regular"])
    out = args.out or plan.path("semirobust", args.results, dataset=job["dataset"], study=job["study"],
                                fb_layers=job["fb_layers"])
    for role, path in (("robust", robust), ("regular", regular)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"the {role} checkpoint {path} does not exist (train {job[role]} first)")
    record = semirobust_study.run(job, robust, regular, out, data_dir=args.data_dir, download=args.download,
                                  device=args.device, progress=not args.no_progress)
    rho = ", ".join(f"{e} " + " ".join(f"{v:.3f}" for v in record["rho_best"][e].values()) for e in record["estimators"])
    print(f"{record['study']} f_b = {' '.join(record['f_b'])}: Acc* {record['acc_star']:.3f}, Acc_sr "
          f"{record['acc_sr']:.3f}, Acc~ {record['best_accuracy']:.3f} (trial {record['best_trial']}), Diff. "
          f"{record['difference']:+.3f}; rho ({rho}); {record['wall_time_s']:.0f} s -> {out}")


def _records(paths) -> list[dict]:
    from ..semirobust import study as semirobust_study

    return [semirobust_study.read(p) for p in paths]


def _cmd_table(args: argparse.Namespace) -> None:
    from ..semirobust import table as semirobust_table
    from ..core.store import write_csv, write_text

    table = semirobust_table.table1(_records(args.results_json))
    write_csv(args.csv, table, "%.6g")
    write_text(args.html, semirobust_table.table1_html(table))
    print(f"Table 1: {len(table)} rows from {len(args.results_json)} results -> {args.csv}, {args.html}")


def _cmd_figure(args: argparse.Namespace) -> None:
    from ..figures import semirobust as figures_semirobust, style as figures_style

    records = _records(args.results_json)
    make = {"studies": figures_semirobust.rho_by_study_figure, "fb": figures_semirobust.rho_by_fb_figure}[args.kind]
    paths = [p for p in (args.png, args.pdf) if p]
    figures_style.save(make(records), *paths)
    print(f"wrote {', '.join(paths)}")


def add_subcommands(subparsers, shared: dict[str, argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser("semirobust", help="paper 003: Algorithm 1 on trained models, Table 1, Figures 1-2")
    sub = group.add_subparsers(dest="step", required=True)

    p = sub.add_parser("run", parents=[shared["results"], shared["device"], shared["data"]],
                       help="Algorithm 1 for one study at one f_b size; writes the study's JSON")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--configfile", help="experiment config (YAML); with --study and --fb-layers")
    source.add_argument("--job-json", help="the resolved study job as JSON (what the workflow passes)")
    p.add_argument("--study", help="a key of semirobust.studies")
    p.add_argument("--fb-layers", type=int, help="k: f_b is the last k weight layers (one of the study's fb_layers)")
    p.add_argument("--robust", help="checkpoint of the robust model (default: its path under --results)")
    p.add_argument("--regular", help="checkpoint of the regular model (default: its path under --results)")
    p.add_argument("--out", help="result JSON (default: results/semirobust/{dataset}/{study}/fb{k}.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("table", help="paper 003's Table 1 (CSV and HTML) from study results")
    p.add_argument("--csv", required=True, help="Table 1 (.csv)")
    p.add_argument("--html", required=True, help="Table 1 as an HTML page")
    p.add_argument("results_json", nargs="+", metavar="RESULT.json", help="study results of `layerbound semirobust run`")
    p.set_defaults(func=_cmd_table)

    p = sub.add_parser("figure", help="rho against depth: every study (Fig. 1) or one study's f_b sizes (Fig. 2)")
    p.add_argument("kind", choices=["studies", "fb"], help="studies: Fig. 1 (every study); fb: Fig. 2 (one study's f_b sizes)")
    p.add_argument("--png", help="PNG output")
    p.add_argument("--pdf", help="PDF output")
    p.add_argument("results_json", nargs="+", metavar="RESULT.json", help="study results of `layerbound semirobust run`")
    p.set_defaults(func=_cmd_figure)
