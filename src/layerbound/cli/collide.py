"""`layerbound` subcommands of the collision stage: sample-pairs, collide-shard, merge, collide-plan.

Each runs one unit of the workflow outside Snakemake (for debugging and cluster users):

    layerbound sample-pairs --configfile config.yaml --dataset mnist5k
    layerbound collide-shard --configfile config.yaml --model medium_pgd2 --layer conv2 --m 10 --projection 0 --chunk 0
    layerbound merge --out results/distances/.../m10.h5 results/shards/.../m10/p*/c*.h5
    layerbound collide-plan --configfile config.yaml      # every shard and merged file the config asks for

With --configfile the paths follow the workflow's layout under --results; without it the rules
pass everything explicitly (pairs file, checkpoint, options JSON, seed, output).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import config as configuration
from ..core.errors import ConfigError


def _cmd_sample_pairs(args: argparse.Namespace) -> None:
    from .. import plan
    from ..data import pairs
    from ..data.info import pairset_id

    cfg = configuration.load(args.configfile) if args.configfile else None
    args.results = plan.results_root(args.results, cfg)
    if cfg:
        classes, per_class, seed = cfg["pairs"]["classes"], cfg["pairs"]["per_class"], cfg["seed"]
        data_dir, download = cfg["data_dir"], cfg["download"] or args.download
    else:
        classes, per_class, seed = args.classes, args.per_class, args.seed
        data_dir, download = args.data_dir, args.download
    for option, value in (("classes", classes), ("per_class", per_class), ("seed", seed)):
        if value is None:
            raise ConfigError(f"--{option.replace('_', '-')} is required without --configfile")
    name = pairset_id(classes, per_class, seed)
    out = Path(args.out) if args.out else Path(plan.path("pairs", args.results, dataset=args.dataset, pairset=name))
    if out.stem != name:
        raise ConfigError(f"the pair set is named {name!r}; the output {out} must be {name}.h5")
    pair_set = pairs.sample(args.dataset, tuple(classes), per_class, seed, data_dir=data_dir, download=download)
    pairs.save(out, pair_set)
    print(f"{args.dataset}/{name}: {per_class} examples of classes {classes[0]} and {classes[1]} "
          f"({pair_set.num_pairs} pairs) -> {out}")


def _cmd_collide_shard(args: argparse.Namespace) -> None:
    from ..collide import shards
    from ..core.names import INPUT_MODEL
    from .. import plan
    from ..collide import CollisionOptions

    configuration.check_options("collision", "layerbound collide-shard", m=args.m)
    if args.configfile:
        cfg = configuration.load(args.configfile)
        args.results = plan.results_root(args.results, cfg)
        method = args.collision_method or cfg["collision"]["methods"][0]
        unit = next((u for u in plan.units(cfg) if (u.model, u.layer, u.m, u.collision_method)
                     == (args.model, args.layer, args.m, method)), None)
        if unit is None:
            raise ConfigError(f"the config asks for no distances of model {args.model!r}, layer {args.layer!r}, "
                              f"m={args.m}, collision method {method!r}")
        for option, value, count in (("projection", args.projection, unit.projections), ("chunk", args.chunk, unit.chunks)):
            if not 0 <= value < count:
                raise ConfigError(f"--{option} {value} is out of range: {args.model}/{args.layer} at m={args.m} has "
                                  f"{option}s 0..{count - 1} in this config")
        shard = plan.Shard(*unit.key, args.projection, args.chunk)
        pairs_file = args.pairs or plan.path("pairs", args.results, dataset=unit.dataset, pairset=unit.pairset)
        checkpoint_file = args.checkpoint or (None if args.model == INPUT_MODEL else
                                              plan.path("checkpoint", args.results, dataset=unit.dataset, model=args.model))
        options = plan.collision_options(cfg, method)
        seed, arch, device = cfg["seed"], unit.arch, args.device or cfg["device"]
        specs = configuration.model_specs(cfg)
        spec = plan.model_source(specs, args.model)
        padding = getattr(specs.get(args.model), "padding", None)
        out = Path(args.out) if args.out else Path(shard.path(args.results))
    else:
        missing = [o for o in ("pairs", "seed", "out") if getattr(args, o) is None]
        if missing:
            raise ConfigError("without --configfile these are required: " + ", ".join(f"--{o}" for o in missing))
        from ..data import pairs as pairsets

        pair_set = pairsets.load(args.pairs)
        options = CollisionOptions.from_dict(json.loads(args.options_json) if args.options_json else {})
        method = args.collision_method or options.method
        shard = plan.Shard(pair_set.dataset, pair_set.name, method, args.model, args.layer, args.m, args.projection,
                           args.chunk)
        pairs_file, checkpoint_file, arch, padding = args.pairs, args.checkpoint, args.arch, args.padding
        seed, device, out = args.seed, args.device or "auto", Path(args.out)
        spec = json.loads(args.source_json) if args.source_json else None
    shards.run(shard, out, pairs_file=pairs_file, options=options, experiment_seed=seed,
               checkpoint_file=checkpoint_file, arch=arch, spec=spec, padding=padding, device=device)
    print(f"-> {out}")


def _cmd_merge(args: argparse.Namespace) -> None:
    from ..collide import shards

    out = shards.merge(args.shards, args.out, projections=args.projections)
    arrays, attrs = shards.read_merged(out)
    d = arrays["distances"]
    print(f"{attrs['model']}/{attrs['layer']} m={attrs['m']}: {len(args.shards)} shards, distances {d.shape}, "
          f"mean {d.mean():.4f}, converged {arrays['converged'].mean():.0%} -> {out}")


def _cmd_collide_plan(args: argparse.Namespace) -> None:
    from .. import plan

    cfg = configuration.load(args.configfile)
    args.results = plan.results_root(args.results, cfg)
    for unit in plan.units(cfg):
        if args.shards:
            for path in unit.shard_paths(args.results):
                print(path)
        else:
            print(f"{unit.merged_path(args.results)}\tn_j={unit.n_j}\tprojections={unit.projections}\tchunks={unit.chunks}")


def add_subcommands(sub: argparse._SubParsersAction, shared: dict[str, argparse.ArgumentParser]) -> None:
    """Add the collision stage's subcommands; `shared` holds the parent parsers of common options (cli/__init__.py)."""
    p = sub.add_parser("sample-pairs", parents=[shared["configfile"], shared["data"], shared["results"]],
                       help="sample a pair set (S examples of two classes) and save it")
    p.add_argument("--dataset", required=True, help="dataset to sample from (a config schema `dataset`)")
    p.add_argument("--classes", type=int, nargs=2, metavar=("A", "B"), help="the two classes of the pairs")
    p.add_argument("--per-class", type=int, help="S, examples per class")
    p.add_argument("--seed", type=int, help="experiment seed")
    p.add_argument("--out", help="output .h5 (default: RESULTS/pairs/DATASET/NAME.h5)")
    p.set_defaults(func=_cmd_sample_pairs)

    p = sub.add_parser("collide-shard", parents=[shared["configfile"], shared["device"], shared["results"]],
                       help="collision distances of one shard (projection x pair chunk)",
                       description="Search colliding pairs for one shard: the features of one model's layer, "
                                   "composed with projection p to m dimensions, for one chunk of the pair set; "
                                   "writes each pair's collision distance (.h5). Paths and options not given come "
                                   "from --configfile, as the workflow plans them.")
    p.add_argument("--model", required=True, help="model name (a key of models:), or 'input'")
    p.add_argument("--layer", required=True, help="layer tap (input, input_rp for model input)")
    p.add_argument("--m", type=int, required=True, help="projection dimension")
    p.add_argument("--projection", type=int, default=0, help="projection index p")
    p.add_argument("--chunk", type=int, default=0, help="pair chunk index")
    p.add_argument("--collision-method", help="collision method (default: the options' / config's first)")
    p.add_argument("--pairs", help="pair set .h5")
    p.add_argument("--checkpoint", help="model checkpoint .pt (not for model input)")
    p.add_argument("--arch", help="expected architecture of the checkpoint")
    p.add_argument("--padding", choices=["same", "valid"],
                   help="expected padding of a registry checkpoint given with --arch (default: same)")
    p.add_argument("--source-json", help="the model entry of a loaded or source-trained model as JSON (sources.spec), "
                                         "which rebuilds its network: a checkpoint never chooses code")
    p.add_argument("--seed", type=int, help="experiment seed (projection seeds derive from it)")
    p.add_argument("--options-json", help="collision options as JSON (collide.CollisionOptions.to_json)")
    p.add_argument("--out", help="output shard .h5 (default: the workflow's path under --results)")
    p.set_defaults(func=_cmd_collide_shard)

    p = sub.add_parser("merge", help="merge the shards of one (model, layer, m) into a distance file")
    p.add_argument("--out", required=True, help="merged distance file (.h5)")
    p.add_argument("--projections", type=int, help="projections expected (default: 1 + the largest index)")
    p.add_argument("shards", nargs="+", help="shard files (.h5) of `layerbound collide-shard`")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("collide-plan", parents=[shared["results"]],
                       help="list the merged files (or shards) a config asks for")
    p.add_argument("--configfile", required=True, help="experiment config (YAML) to plan")
    p.add_argument("--shards", action="store_true", help="list every shard instead")
    p.set_defaults(func=_cmd_collide_plan)
