"""The `layerbound` command: one subcommand per workflow step, so each runs outside Snakemake too."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import __version__
from .. import config as configuration
from ..core.errors import ConfigError, LayerboundError


def _model_job(args: argparse.Namespace, resolve) -> dict:
    """A model's job: from --job-json (what the workflow passes), or resolved from --configfile."""
    if args.job_json:
        return json.loads(args.job_json)
    if not args.model:
        raise ConfigError("--model is required with --configfile")
    return resolve(configuration.load(args.configfile), args.model)


def _print_accuracies(name: str, metrics: dict) -> None:
    print(f"{name}: clean test accuracy {metrics['clean_test_accuracy']:.4f}, "
          f"PGD-{metrics['robust_eval']['norm']} eps={metrics['robust_eval']['eps']} robust accuracy "
          f"{metrics['robust_test_accuracy']:.4f}, {metrics['wall_time_s']:.0f} s")


def _cmd_train(args: argparse.Namespace) -> None:
    from ..models.train import train_model

    job = _model_job(args, configuration.training_job)
    seed, spec, evaluation = configuration.job_from_dict(job)
    metrics = train_model(spec, evaluation, seed, args.out, data_dir=args.data_dir, download=args.download,
                          device=args.device, progress=not args.no_progress)
    _print_accuracies(spec.name, metrics)


def _cmd_import_model(args: argparse.Namespace) -> None:
    from ..models.importer import import_model, job_from_dict

    job = _model_job(args, configuration.import_job)
    seed, spec, evaluation = job_from_dict(job)
    metrics = import_model(spec, evaluation, seed, args.out, data_dir=args.data_dir, download=args.download,
                           device=args.device)
    _print_accuracies(spec.name, metrics)


def _cmd_fetch_data(args: argparse.Namespace) -> None:
    from ..data import datasets as data

    for name in args.datasets:
        data.fetch(name, args.data_dir)
        print(f"{name}: ready under {args.data_dir}")


def _cmd_losses(args: argparse.Namespace) -> None:
    from ..bounds import losses
    from ..collide import shards
    from .. import plan

    eps_spec = json.loads(args.eps_json)
    configuration.check_options("losses", "layerbound losses", eps=eps_spec,
                                **({} if args.bootstrap is None else {"bootstrap": args.bootstrap}))
    arrays, attrs = shards.read_merged(args.distances)
    if "candidates" not in arrays:
        raise shards.ShardError(f"{args.distances} has no candidates (which collision each pair reports): it is not a "
                                "complete merged distance file; delete it and run the workflow again")
    eps = plan.eps_grid(eps_spec)
    from ..collide.options import adversary_label

    box = json.loads(attrs["options_json"]).get("box")   # absent before boxes existed: unboxed
    replicates = losses.BOOTSTRAP_REPLICATES if args.bootstrap is None else args.bootstrap
    table = losses.loss_table(arrays["distances"], eps, replicates, adversary_label(box), arrays["candidates"])
    key = tuple(attrs[k] for k in losses.KEY_COLUMNS)
    losses.write_table(losses.summarize({key: table}), args.out)
    top = table.iloc[-1]
    print(f"{'/'.join(map(str, key))}: {len(eps)} budgets, {arrays['distances'].shape[0]} projections; at eps={top.eps:g} "
          f"cross-entropy {top.ce_mean:.4f} (95% bootstrap interval {top.ce_lo:.4f}..{top.ce_hi:.4f}), "
          f"0-1 {top.zero_one_mean:.4f}; adversary {top.adversary}")


def _cmd_summarize(args: argparse.Namespace) -> None:
    from ..bounds import losses

    summary = losses.stack([losses.read_table(p) for p in args.tables])
    losses.write_table(summary, args.out)
    print(f"{len(args.tables)} loss tables, {len(summary)} rows -> {args.out}")


def _cmd_claims(args: argparse.Namespace) -> None:
    import pandas as pd

    from ..bounds import claim_statistics, losses
    from ..plan import claims
    from ..collide import shards
    from .. import plan
    from ..figures import report
    from ..core.store import write_csv, write_text

    if args.job_file:
        with open(args.job_file) as f:
            job = json.load(f)
    elif args.configfile:
        job = claims.job(plan.Plan(configuration.load(args.configfile), root=args.results))
    else:
        raise ConfigError("give --job-file (what the workflow writes) or --configfile")

    def distances(name: str):
        arrays, attrs = shards.read_merged(job["units"][name])
        found = claims.unit_name(tuple(attrs[k] for k in losses.KEY_COLUMNS))
        if found != name:
            raise ValueError(f"{job['units'][name]} holds the distances of {found}, not of {name}")
        return arrays["distances"]

    table = claim_statistics.evaluate(job, distances, pd.read_csv)
    write_csv(args.csv, table, "%.17g")
    if args.html:
        write_text(args.html, report.claims_html(table))
    counts = table["verdict"].value_counts()
    print(f"{len(table)} claim rows ({', '.join(f'{n} {v}' for v, n in counts.items())}) -> {args.csv}")


def _cmd_taps(args: argparse.Namespace) -> None:
    from .. import plan
    from ..models import architectures, sources
    from ..data import info as dataset_info

    if args.configfile:
        cfg = configuration.load(args.configfile)
        if args.arch not in cfg["models"]:
            raise ConfigError(f"{args.arch!r} is not a key of models: in {args.configfile}; models: {', '.join(cfg['models'])}")
        entry = cfg["models"][args.arch]
        default, widths = plan.model_taps(args.arch, entry)
        if sources.is_loaded(entry):
            # Every usable layer name; `*` marks those `collision.layers: all` means for this model.
            for name, width in widths.items():
                print(f"{name}\t{width}" + ("\t*" if name in default else ""))
            return
        for tap, width in widths.items():
            print(f"{tap}\t{width}")
        return
    meta = dataset_info.info(args.dataset)
    for tap, width in architectures.tap_widths(args.arch, meta.input_shape, meta.num_classes, args.padding).items():
        print(f"{tap}\t{width}")


def shared_options() -> dict[str, argparse.ArgumentParser]:
    """Parent parsers of the options several subcommands share (each defined once, here)."""
    shared = {name: argparse.ArgumentParser(add_help=False) for name in ("configfile", "results", "device", "data")}
    shared["configfile"].add_argument("--configfile", help="experiment config (YAML); derives what is not given")
    shared["results"].add_argument("--results", help="results folder, for default paths (default: the config's "
                                                     "`results`, else results)")
    shared["device"].add_argument("--device", default=os.environ.get("LAYERBOUND_DEVICE"),
                                  help="auto (cuda when present), cpu, cuda, ... (default: $LAYERBOUND_DEVICE, else "
                                       "the config's, else auto)")
    shared["device"].add_argument("--threads", type=int,
                                  help="CPU threads for torch (default: the workflow's for this kind of job, "
                                       "layerbound.core.threads; 0: torch's default)")
    shared["data"].add_argument("--data-dir", default=os.environ.get("LAYERBOUND_DATA_DIR", "data"),
                                help="where torchvision datasets live (default: $LAYERBOUND_DATA_DIR, else data)")
    shared["data"].add_argument("--download", action="store_true",
                                default=os.environ.get("LAYERBOUND_DOWNLOAD") == "1",
                                help="allow downloading a missing dataset (default: $LAYERBOUND_DOWNLOAD = 1)")
    return shared


def build_parser() -> argparse.ArgumentParser:
    from . import attacks as cli_attacks, collide as cli_collide, figures as cli_figures, semirobust as cli_semirobust

    parser = argparse.ArgumentParser(prog="layerbound", description=__doc__)
    parser.add_argument("--version", action="version", version=f"layerbound {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    shared = shared_options()

    p = sub.add_parser("train", parents=[shared["device"], shared["data"]],
                       help="train one configured model; writes checkpoint and metrics sidecar")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--configfile", help="experiment config (YAML); with --model")
    source.add_argument("--job-json", help="the resolved training job as JSON (what the workflow passes)")
    p.add_argument("--model", help="model name (a key of `models:` in the config)")
    p.add_argument("--out", required=True, help="checkpoint path (.pt); the .json sidecar goes beside it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("import-model", parents=[shared["device"], shared["data"]],
                       help="load a configured model (source torchvision, python, robustbench), check its weights, "
                            "measure its test accuracy; writes checkpoint and metrics sidecar")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--configfile", help="experiment config (YAML); with --model")
    source.add_argument("--job-json", help="the resolved import job as JSON (what the workflow passes)")
    p.add_argument("--model", help="model name (a key of `models:` in the config)")
    p.add_argument("--out", required=True, help="checkpoint path (.pt); the .json sidecar goes beside it")
    p.set_defaults(func=_cmd_import_model)

    p = sub.add_parser("fetch-data", help="download torchvision datasets into a data folder (needs internet)")
    p.add_argument("datasets", nargs="+", help="dataset names (mnist, mnist5k, cifar10, ...: the config schema's `dataset`)")
    p.add_argument("--data-dir", default="data", help="folder to download into (default: data)")
    p.set_defaults(func=_cmd_fetch_data)

    p = sub.add_parser("losses", help="optimal cross-entropy and 0-1 losses over an eps grid for one merged distance file")
    p.add_argument("--distances", required=True, help="merged distance file (.h5)")
    p.add_argument("--eps-json", required=True, help='eps grid: a JSON list, or {"start": 0, "stop": 4, "num": 41}')
    p.add_argument("--bootstrap", type=int, default=None,
                   help="bootstrap replicates of the 95%% interval (0: none; default: the config schema's losses.bootstrap)")
    p.add_argument("--out", required=True, help="loss table (.csv)")
    p.set_defaults(func=_cmd_losses)

    p = sub.add_parser("summarize", help="stack loss tables into one summary table")
    p.add_argument("--out", required=True, help="summary table (.csv)")
    p.add_argument("tables", nargs="+", help="keyed loss tables (.csv) of `layerbound losses`")
    p.set_defaults(func=_cmd_summarize)

    p = sub.add_parser("claims", parents=[shared["configfile"], shared["results"]],
                       help="the claims table: papers 001 and 002's findings tested on the run's distances, with "
                            "paired bootstrap intervals and verdicts (docs/claims.md)")
    p.add_argument("--job-file", help="the claims job (JSON) the workflow writes; without it, --configfile plans it")
    p.add_argument("--csv", required=True, help="claims table (.csv)")
    p.add_argument("--html", help="the table as a small HTML page")
    p.set_defaults(func=_cmd_claims)

    p = sub.add_parser("taps", help="list an architecture's (or a configured model's) layer taps and their widths n_j")
    p.add_argument("arch", help="a registered architecture, or with --configfile a key of models:")
    p.add_argument("--configfile", help="experiment config: list the taps of its model ARCH (loaded models too)")
    p.add_argument("--dataset", default="mnist5k", help="dataset that fixes the input shape (default: mnist5k)")
    p.add_argument("--padding", default="same", choices=["same", "valid"],
                   help="convolution padding of a registered architecture (default: same)")
    p.set_defaults(func=_cmd_taps)

    cli_collide.add_subcommands(sub, shared)
    cli_attacks.add_subcommands(sub, shared)
    cli_figures.add_subcommands(sub)
    cli_semirobust.add_subcommands(sub, shared)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand's own --help page a description: its summary line from the list of
    subcommands, as a sentence, unless the subcommand was given a longer one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                if not subparser.description and summaries.get(name):
                    subparser.description = summaries[name][0].upper() + summaries[name][1:] + "."
                _describe(subparser)


# The workflow rule of each command that takes --threads: its threads unless --threads is given.
RULE_OF_COMMAND = {"train": "train_model", "import-model": "import_model", "collide-shard": "collide_shard",
                   "attack": "attacks_model", "fab-pairs": "attacks_fab_pairs", "semirobust": "semirobust_run"}


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C: one line and the shell's status for SIGINT. Outputs are written atomically, so none
        # is left half-written (the temporary file is removed on the way out).
        command = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
        print(f"layerbound {command}: interrupted" if command else "layerbound: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _main(argv: list[str] | None) -> None:
    from ..core import threads

    args = build_parser().parse_args(argv)
    try:
        count = getattr(args, "threads", 0)
        if count is None and args.command in RULE_OF_COMMAND:
            count = threads.for_job(RULE_OF_COMMAND[args.command])
        if count and count < 0:
            raise ConfigError(f"--threads must be 0 (torch's default) or more, not {count}")
        if count:
            import torch

            torch.set_num_threads(count)
        args.func(args)
    except (LayerboundError, ValueError, FileNotFoundError) as err:
        # Expected failures (bad config or arguments, missing or foreign files, mismatched
        # checkpoints) get one line; anything else is a bug and keeps its traceback.
        message = str(err).strip().splitlines()
        print(f"layerbound {args.command}: error: {' '.join(line.strip() for line in message)}", file=sys.stderr)
        raise SystemExit(1) from None
    except (KeyError, TypeError) as err:
        if not getattr(args, "job_json", None):
            raise
        # A hand-written --job-json that lacks a key or has one of the wrong type (the workflow's rules
        # write complete ones).
        print(f"layerbound {args.command}: error: --job-json is not a complete job ({type(err).__name__}: {err}); "
              "give --configfile with the model (or study) instead", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
