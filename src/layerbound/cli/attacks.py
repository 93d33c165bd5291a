"""`layerbound` subcommands of the attack stage: attack (robust-accuracy table) and fab-pairs.

    layerbound attack --configfile config.yaml --model medium_pgd2        # paths follow the workflow's layout
    layerbound attack --checkpoint M.pt --job-json '{...}' --out T.csv --summary T.json
    layerbound fab-pairs --configfile config.yaml --model medium_pgd2
    layerbound fab-pairs --checkpoint M.pt --pairs P.h5 --job-json '{...}' --out F.csv

The job (what `config.attack_job` / `config.fab_pairs_job` resolve from a config) says which
attacks run at which budgets with which settings; the workflow passes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .. import config as configuration
from ..config import ModelSpec, model_specs
from ..core.errors import ConfigError


def _job(args: argparse.Namespace, resolve) -> tuple[dict, dict | None]:
    """The job from --job-json, or resolved from --configfile and --model (with the config)."""
    if args.job_json:
        return json.loads(args.job_json), None
    if not (args.configfile and args.model):
        raise ConfigError("give --job-json, or --configfile with --model")
    cfg = configuration.load(args.configfile)
    if args.model not in cfg["models"]:
        raise ConfigError(f"model {args.model!r} is not in the config; models: {', '.join(cfg['models'])}")
    return resolve(cfg, args.model), cfg


def _model(args: argparse.Namespace, cfg: dict | None, job: dict, results: str, dataset: str | None = None):
    """The attacked model: its checkpoint, rebuilt from the job's model entry when it has a source,
    checked against `dataset`'s input shape and classes (default: the job's dataset)."""
    from .. import plan
    from ..models import checkpoint
    from ..data import info as dataset_info
    from ..attacks import evaluate as attacks
    from ..core.device import describe, select

    name = job["model"]
    attacks.library()   # fails in one line, before anything is loaded, when torchattacks is missing
    device = select(args.device or (cfg["device"] if cfg else None))
    print(describe(device), file=sys.stderr, flush=True)
    # The dataset fixes the input shape and classes; with --job-json the job names no architecture.
    spec = model_specs(cfg)[name] if cfg is not None else None
    dataset = spec.dataset if spec is not None else dataset or job.get("dataset")
    meta = dataset_info.info(dataset) if dataset else None
    expect = None if meta is None else {"input_shape": meta.input_shape, "num_classes": meta.num_classes}
    if spec is not None:
        expect = {"arch": spec.arch, **expect}
        if isinstance(spec, ModelSpec):   # a loaded model's checkpoint records no padding
            expect["padding"] = spec.padding
    if not args.checkpoint and cfg is None:
        raise ConfigError("--checkpoint is required with --job-json")
    path = args.checkpoint or plan.path("checkpoint", results, dataset=cfg["models"][name]["dataset"], model=name)
    return checkpoint.load(path, expect=expect, spec=job.get("source")).to(device), device


def _write_csv(table, path) -> None:
    from ..core.store import write_csv

    write_csv(path, table, "%.12g")


def _cmd_attack(args: argparse.Namespace) -> None:
    from ..core.provenance import compute, versions
    from .. import plan
    from ..data import datasets as data
    from ..attacks import evaluate as attacks

    job, cfg = _job(args, configuration.attack_job)
    args.results = plan.results_root(args.results, cfg)
    started = time.perf_counter()
    model, device = _model(args, cfg, job, args.results)
    x, y = data.load(job["dataset"], "test", data_dir=args.data_dir, download=args.download)
    n = min(int(job["examples"]), len(x))
    x, y = x[:n].to(device), y[:n].to(device)
    table = attacks.robust_accuracy_table(model, x, y, job, model.num_classes, progress=not args.no_progress)
    out = Path(args.out or plan.path("attacks", args.results, dataset=job["dataset"], model=job["model"]))
    summary_path = Path(args.summary or plan.path("attacks_summary", args.results, dataset=job["dataset"], model=job["model"]))
    _write_csv(table, out)
    head = job["headline"]
    row = table.loc[(table["attack"] == head["attack"]) & (table["eps"] == float(head["eps"]))].iloc[0]
    summary = {
        "model": job["model"], "dataset": job["dataset"], "examples": n, "clean_accuracy": float(row["clean_accuracy"]),
        "headline": {"attack": head["attack"], "label": row["label"], "norm": head["norm"], "eps": float(head["eps"]),
                     "robust_accuracy": float(row["robust_accuracy"]), "settings": row["settings"]},
        "any": {f"{r.norm}@{r.eps:g}": float(r.robust_accuracy) for r in table.itertuples() if r.attack == "any"},
        "library": row["library"], "job": job, "table": str(out),
        "wall_time_s": time.perf_counter() - started, "device": str(device),
        "versions": versions(),
        "compute": compute(),
    }
    from ..core.store import write_text

    text = json.dumps(summary, indent=2, sort_keys=True)
    write_text(summary_path, text + "\n")
    print(f"{job['model']}: clean accuracy {summary['clean_accuracy']:.4f} on {n} test images; headline "
          f"{row['label']} eps={float(head['eps']):g}: robust accuracy {row['robust_accuracy']:.4f}; "
          f"{summary['wall_time_s']:.0f} s -> {out}, {summary_path}")


def _cmd_fab_pairs(args: argparse.Namespace) -> None:
    from .. import plan
    from ..data import pairs
    from ..attacks import evaluate as attacks

    job, cfg = _job(args, configuration.fab_pairs_job)
    args.results = plan.results_root(args.results, cfg)
    model_name = job["model"]
    if args.pairs:
        pairs_file = args.pairs
    elif cfg is not None:
        pairs_file = plan.path("pairs", args.results, dataset=cfg["models"][model_name]["dataset"],
                               pairset=plan.pairset_name(cfg))
    else:
        raise ConfigError("--pairs is required with --job-json")
    pair_set = pairs.load(pairs_file)   # before the model: a bad pair set fails at once
    model, device = _model(args, cfg, job, args.results, dataset=pair_set.dataset)
    started = time.perf_counter()
    points = attacks.fab_pairs(model, pair_set, job["fab"], model.num_classes, int(job["seed"]), int(job["batch_size"]))
    out = Path(args.out or plan.path("fab_pairs", args.results, dataset=pair_set.dataset, pairset=pair_set.name,
                                     model=model_name))
    _write_csv(points, out)
    found = points["found"].to_numpy()
    norms = points.loc[found, "norm"]
    print(f"{job['model']} on {pair_set.name}: FAB found a misclassified point for {int(found.sum())} of {len(points)} "
          f"examples (median l2 norm {norms.median() if len(norms) else float('nan'):.3f}); "
          f"{time.perf_counter() - started:.0f} s -> {out}")


def add_subcommands(sub, shared: dict[str, argparse.ArgumentParser]) -> None:
    model = argparse.ArgumentParser(add_help=False)   # the model both subcommands attack
    model.add_argument("--model", help="model name (with --configfile)")
    model.add_argument("--checkpoint", help="checkpoint (.pt); default: the workflow's path under --results")
    parents = [shared["configfile"], shared["results"], shared["device"], shared["data"], model]
    p = sub.add_parser("attack", parents=parents,
                       help="robust test accuracy of one model under the configured attacks and budgets (torchattacks)")
    p.add_argument("--job-json", help="the resolved attack job as JSON (what the workflow passes)")
    p.add_argument("--out", help="robust-accuracy table (.csv)")
    p.add_argument("--summary", help="headline sidecar (.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_attack)

    p = sub.add_parser("fab-pairs", parents=parents,
                       help="FAB-l2 minimum-norm points of one model on the pair set (paper 001, Section 6.1)")
    p.add_argument("--pairs", help="the pair set (.h5); default: the config's under --results")
    p.add_argument("--job-json", help="the resolved FAB job as JSON (what the workflow passes)")
    p.add_argument("--out", help="per-example FAB table (.csv)")
    p.set_defaults(func=_cmd_fab_pairs)
