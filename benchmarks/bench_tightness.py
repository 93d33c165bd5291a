"""Tightness and cost of the collision search (issues 11, 28); prints ratios measured in one run.

For each trained model of the default config and the held-out model (benchmarks/heldout_model.py)
and each of their taps (at the config's first m, the first projection, the first pairs of the
default pair set), every step control's collisions are certified the way the shards certify them
(collide/certify.py, in float64), and the table gives per tap the median and the maximum over
pairs of

    certified distance found by a step control / best known distance of the pair

and the Jacobian evaluations per pair (mean over pairs; the search's own, the midpoint's included,
plus the certificate's polishing ones; each is one forward and m backward passes), with the CPU
time of search and certification. The best known distance of a pair is the smallest certified
distance of three long float64 runs: paper 001's Algorithm 1 with gamma = 0.95 and 300 iterations
(its tolerance stop included), a 100-iteration merit search of search revision 2, and the same
with its first 5 evaluations smoothed (smooth_iters 5); a ratio of 1.01 means 1% looser than that,
below 1 the step control found a closer collision than all three long runs. The step controls
compared are the paper's decaying schedule (`decay`: gamma 0.7, 40 iterations, the default until
issue 11), the config's own search options, and issue 28's candidate, the same with smoothing
(collision.search.smooth_iters = 5) at the config's budget (with --budgets, also at others;
--default-budgets runs the config's own search at other budgets too; --curvature and
--curvature-budgets run the earlier candidate, the curvature fraction, merit.CURVATURE_FRACTION),
all in float32 as the shards run them, with the config's box.
The best known distances depend only on the checkpoints, the pairs and the reference runs:
`--cache FILE` keeps them between runs (the references take most of a first run's time).

With --relative no reference is run: the pairs can be any (--skip K takes the pair set's pairs
K, K + 1, ... instead of the first), and each step control's columns are, per tap, its median
distance over the config's own search's median distance ("median"), and the largest per-pair ratio
of the two ("max"), so a new pair set checks a candidate against the default in minutes.
--schedule B,G runs the smoothing candidate's columns with sharpness B, B G, B G^2, ... instead of
the package's (collide/options.py); the smoothed reference keeps the package's.
--either adds the per-pair smaller distance of the config's search and the smoothing candidate:
the most any rule choosing one of the two per pair could give (at the cost of both). --checkpoints
runs other checkpoints (with --relative) on the config's pair set.

    python benchmarks/bench_tightness.py [--models medium_pgd2] [--pairs 16] [--layers conv1,fc6] [--threads 1]
                                         [--budgets 11] [--default-budgets 20,25] [--no-candidate] [--either]
                                         [--curvature] [--curvature-budgets 11]
                                         [--cache results/bench/tightness_best.pt]
    python benchmarks/bench_tightness.py --relative --skip 16 --pairs 48 [--schedule 2.5,2]
    python benchmarks/bench_tightness.py --relative --checkpoints results/paper002_fcnn/models/mnist5k/fcnn_benign.pt

Needs the trained checkpoints (`snakemake --cores 2 results/models/mnist5k/{medium_benign,medium_pgd2,medium_trades2}.pt`);
the held-out one is trained here when missing (about a minute; --no-heldout skips it).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from layerbound import config
from layerbound.collide import features, projection
from layerbound import plan
from layerbound.models import checkpoint
from layerbound.data import pairs as pairsets
from layerbound.collide import certify, jacobian, merit
from layerbound.core.store import atomic_write_buffered
from layerbound.collide.options import SMOOTH_BETA, SMOOTH_GROWTH, CollisionOptions, adversary_label

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import heldout_model  # noqa: E402

DECAY = dict(step="decay", alpha=1.0, gamma=0.7, max_iter=40)
# The long merit reference runs without the curvature fraction (search revision 2, the default),
# so that the best known distances do not move with that candidate.
REFERENCES = {"decay": dict(step="decay", alpha=1.0, gamma=0.95, max_iter=300),
              "merit": dict(step="merit", alpha=1.0, max_iter=100, revision=2)}
SMOOTH_ITERS = 5   # the smoothing candidate's smoothed evaluations (collision.search.smooth_iters)
# A third long run, smoothed like the smoothing candidate: it finds closer collisions than both
# above on the TRADES and PGD models, and a best known distance must be the best we know. It is
# the candidate's own method run long, so a ratio near 1 for the candidate partly says that it
# agrees with its own long run (the default search's ratios against it say the closer collisions
# exist). Cached under its own key, with the sharpness schedule, so the two above are not recomputed.
SMOOTHED_REFERENCE = dict(step="merit", alpha=1.0, max_iter=100, revision=2, smooth_iters=SMOOTH_ITERS)


@contextlib.contextmanager
def search_revision(step: dict):
    """merit.CURVATURE_FRACTION and the smoothing schedule as `step` asks while active (its
    "revision": 2 off, 3 on, none: the module's default; its "schedule": (beta, growth), none: the
    package's); yields the step's options for jacobian.search."""
    options = dict(step)
    revision = options.pop("revision", None)
    schedule = options.pop("schedule", None)
    current = merit.CURVATURE_FRACTION, merit.SMOOTH_BETA, merit.SMOOTH_GROWTH
    merit.CURVATURE_FRACTION = current[0] if revision is None else revision >= 3
    if schedule is not None:
        merit.SMOOTH_BETA, merit.SMOOTH_GROWTH = schedule
    try:
        yield options
    finally:
        merit.CURVATURE_FRACTION, merit.SMOOTH_BETA, merit.SMOOTH_GROWTH = current


def jacobian_evaluations(found, step: dict) -> torch.Tensor:
    """Per pair, the Jacobian evaluations of the search and of its certificate. Merit's iterations
    count them (the midpoint's included); decay's iteration i stops after its Jacobian unless i is
    its last (max_iter), which takes a forward pass only."""
    searched = found.iterations
    if step["step"] == "decay":
        searched = torch.where(searched < step["max_iter"], searched + 1, searched)
    return (searched + found.polish_steps).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--models", default=None, help="comma-separated (default: every model of the config "
                                                        f"and {heldout_model.NAME})")
    parser.add_argument("--no-heldout", action="store_true", help=f"leave out {heldout_model.NAME}")
    parser.add_argument("--layers", default=None, help="comma-separated taps (default: every tap)")
    parser.add_argument("--pairs", type=int, default=16, help="first pairs of the pair set (the references are slow)")
    parser.add_argument("--skip", type=int, default=0, help="with --relative: start at this pair of the pair set")
    parser.add_argument("--relative", action="store_true", help="no references: ratios to the config's own search")
    parser.add_argument("--schedule", default=None, help="B,G: the smoothing candidate's sharpness B, B G, B G^2, ...")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the workflow's shard jobs use 1)")
    parser.add_argument("--cache", type=Path, default=None, help="file keeping the best known distances between runs")
    parser.add_argument("--budgets", default="", help="comma-separated max_iter: also run the candidate at these")
    parser.add_argument("--default-budgets", default="", help="comma-separated max_iter: also run the config's own "
                                                              "search at these (what a larger budget buys)")
    parser.add_argument("--either", action="store_true", help="also the per-pair smaller of the config's search and "
                        "the smoothing candidate: what a perfect per-pair choice between the two would give (it "
                        "costs both searches; its jac/pair column is the sum)")
    parser.add_argument("--checkpoints", default="", help="comma-separated checkpoint files (.pt) to run instead "
                        "of the config's models, with --relative; each is named by its file's stem (the name "
                        "its projections are drawn for)")
    parser.add_argument("--no-candidate", action="store_true", help="leave out the candidate at the config's budget")
    parser.add_argument("--curvature", action="store_true", help="also run the curvature fraction (issue 28's "
                                                                 "first candidate, off) at the config's budget")
    parser.add_argument("--curvature-budgets", default="", help="comma-separated max_iter: also run the curvature "
                                                                "fraction at these")
    args = parser.parse_args()
    if args.skip and not args.relative:
        parser.error("--skip needs --relative (the best known distances are cached for the first pairs)")
    if args.skip < 0 or args.pairs < 1:
        parser.error("--skip must be at least 0 and --pairs at least 1")
    if args.either and args.no_candidate:
        parser.error("--either compares the config's search with the smoothing candidate: leave out --no-candidate")
    if args.checkpoints and not args.relative:
        parser.error("--checkpoints runs models with no cached best known distances: add --relative")
    smoothed_columns = not args.no_candidate or bool(args.budgets)
    if args.relative and not (smoothed_columns or args.default_budgets or args.curvature or args.curvature_budgets):
        parser.error("--relative compares with the config's own search: ask for another column too")
    torch.set_num_threads(args.threads)
    smoothing, label = {"smooth_iters": SMOOTH_ITERS}, f"+ smoothing {SMOOTH_ITERS}"
    if args.schedule:
        try:
            schedule = tuple(float(v) for v in args.schedule.split(","))
        except ValueError:
            schedule = ()
        if len(schedule) != 2 or not schedule[0] > 0 or not schedule[1] >= 1:
            parser.error(f"--schedule takes B,G with sharpness B > 0 and growth G >= 1, not {args.schedule!r}")
        if not smoothed_columns:
            parser.error("--schedule sets the smoothing candidate's schedule, and no smoothing column is run")
        smoothing["schedule"] = schedule
        label += f" ({schedule[0]:g}x{schedule[1]:g})"
    cfg = config.load(args.config)
    options = CollisionOptions.from_config(cfg["collision"], "jacobian")
    box = options.box
    configured = asdict(options.method_options)
    budget = configured["max_iter"] or "default"
    config_column = f"config: {configured['step']}, {budget} it."
    step_controls = {config_column: configured}
    if not args.relative:   # with --relative the config's own search comes first: the others' reference
        step_controls = {"decay 0.7, 40 it.": DECAY, **step_controls}
    candidate_column = f"{label}, {budget} it."
    if not args.no_candidate:
        step_controls[candidate_column] = dict(configured, **smoothing)
    for extra in filter(None, args.default_budgets.split(",")):
        step_controls[f"config: {configured['step']}, {int(extra)} it."] = dict(configured, max_iter=int(extra))
    for extra in filter(None, args.budgets.split(",")):
        step_controls[f"{label}, {int(extra)} it."] = dict(configured, max_iter=int(extra), **smoothing)
    if args.curvature:
        step_controls[f"+ curvature fraction, {budget} it."] = dict(configured, revision=3)
    for extra in filter(None, args.curvature_budgets.split(",")):
        step_controls[f"+ curvature fraction, {int(extra)} it."] = dict(configured, max_iter=int(extra), revision=3)
    m = int(cfg["collision"]["m"][0])
    classes, per_class = cfg["pairs"]["classes"], cfg["pairs"]["per_class"]
    specs = {name: (spec["dataset"], ROOT / plan.path("checkpoint", dataset=spec["dataset"], model=name))
             for name, spec in cfg["models"].items()}
    if not args.no_heldout:
        specs[heldout_model.NAME] = (heldout_model.DATASET, heldout_model.PATH)
    if args.checkpoints:   # on the pair set of the config's first model's dataset
        dataset = next(iter(specs.values()))[0]
        files = [Path(p) for p in args.checkpoints.split(",")]
        stems = [f.stem for f in files]
        if len(set(stems)) < len(stems):
            parser.error(f"--checkpoints: two files share a name ({', '.join(stems)}); each is named by its stem")
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            parser.error(f"--checkpoints: no such file: {', '.join(missing)}")
        specs = {f.stem: (dataset, f) for f in files}
    models = args.models.split(",") if args.models else list(specs)
    unknown = [m for m in models if m not in specs]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(specs)}")
    cache = torch.load(args.cache) if args.cache and args.cache.is_file() else {}
    schedule = smoothing.get("schedule", (SMOOTH_BETA, SMOOTH_GROWTH))
    # One pair set per dataset (every model of the default config shares one), sampled once.
    pair_sets = {specs[model][0]: None for model in models}
    for dataset in pair_sets:
        pair_sets[dataset] = pairsets.sample(dataset, classes, per_class, cfg["seed"], data_dir=ROOT / cfg["data_dir"])
    num_pairs = min(pair_set.num_pairs for pair_set in pair_sets.values())
    if args.skip >= num_pairs:
        parser.error(f"--skip {args.skip}: the pair set has {num_pairs} pairs")
    last = min(args.skip + args.pairs, num_pairs) - 1
    against = ("the config's own search at its budget (median: ratio of the medians; max: the largest per-pair ratio)"
               if args.relative else f"best known: the smallest certified distance of {REFERENCES['decay']}, "
               f"{REFERENCES['merit']} and {SMOOTHED_REFERENCE} in float64")
    print(f"adversary {adversary_label(box)}, m = {m}, pairs {args.skip}-{last} of classes "
          f"{classes} (S = {per_class}), projection 0, {args.threads} thread(s); smoothing sharpness "
          f"{schedule[0]:g} x {schedule[1]:g} per evaluation; {against}")
    either_column = "per pair: config or candidate"
    columns = list(step_controls) + ([either_column] if args.either else [])
    print(f"{'model':<16}{'layer':<8}" + "".join(f"{name:>34}" for name in columns))
    print(" " * 24 + "".join(f"{'median    max  jac/pair  cpu s':>34}" for _ in columns))
    totals = {name: [] for name in columns}
    costs = {name: [] for name in columns}
    for model in models:
        dataset, path = specs[model]
        if model == heldout_model.NAME:
            heldout_model.ensure(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        x, x_prime = pair_sets[dataset].gather(range(args.skip, last + 1))
        net = checkpoint.load(path)
        if tuple(net.input_shape) != tuple(x.shape[1:]):
            sys.exit(f"{path}: the network takes inputs {tuple(net.input_shape)}, the {dataset} pair set's are "
                     f"{tuple(x.shape[1:])}")
        taps = args.layers.split(",") if args.layers else net.taps
        for tap in taps:
            width = net.tap_widths()[tap]
            A64 = None if projection.is_identity(m, width) else \
                projection.draw(cfg["seed"], model, tap, m, 0, width, dtype=torch.float64)
            f64 = features.float64_map(copy.deepcopy(net), tap, torch.device("cpu"))
            g64 = f64 if A64 is None else (lambda u, f64=f64, A64=A64: f64(u) @ A64.T)

            def certified(f, A, dtype, step):
                with search_revision(step) as options:
                    found = jacobian.search(f, A, x.to(dtype), x_prime.to(dtype), dtype=dtype, box=box,
                                            return_points=True, **options)
                return certify.certify(g64, x.double(), x_prime.double(), found, box)

            key = (digest, tap, m, args.pairs, box, cfg["seed"], tuple(sorted(REFERENCES["merit"].items())),
                   tuple(sorted(REFERENCES["decay"].items())))
            smoothed_key = key[:6] + (tuple(sorted(SMOOTHED_REFERENCE.items())),
                                      ("beta", SMOOTH_BETA, "growth", SMOOTH_GROWTH))
            missing = [] if args.relative else [k for k in (key, smoothed_key) if k not in cache]
            if key in missing:
                cache[key] = torch.minimum(*(certified(f64, A64, torch.float64, step).distance
                                             for step in REFERENCES.values()))
            if smoothed_key in missing:
                cache[smoothed_key] = certified(f64, A64, torch.float64, SMOOTHED_REFERENCE).distance
            if args.cache and missing:
                atomic_write_buffered(args.cache, lambda out: torch.save(cache, out))
            best = None if args.relative else torch.minimum(cache[key], cache[smoothed_key])
            f = features.feature_map(features.prepare_model(copy.deepcopy(net), torch.float32, torch.device("cpu")),
                                     tap, torch.device("cpu"))
            A = None if A64 is None else A64.float()
            row = f"{model:<16}{tap:<8}"
            measured = {}   # column -> (distances, evaluations, cpu s)
            for name, step in step_controls.items():
                started = time.process_time()
                found = certified(f, A, torch.float32, step)
                measured[name] = found.distance, jacobian_evaluations(found, step), time.process_time() - started
            if args.either:
                (d, e, t), (d_, e_, t_) = measured[config_column], measured[candidate_column]
                measured[either_column] = torch.minimum(d, d_), e + e_, t + t_
            for name, (distance, evaluations, elapsed) in measured.items():
                if best is None:   # --relative: against the config's own search, the first column
                    best = distance
                ratio = distance / best
                median = distance.median() / best.median() if args.relative else ratio.median()
                totals[name].append(ratio)
                costs[name].append(evaluations)
                row += f"{median:>12.4f}{ratio.max():>7.3f}{evaluations.mean():>8.1f}{elapsed:>7.1f}"
            print(row, flush=True)
    label = "per-pair ratio to the config" if args.relative else "ratio"
    print(f"all taps: median {label} " + ", ".join(f"{name} {torch.cat(r).median():.4f}" for name, r in totals.items()))
    print("all taps: Jacobian evaluations per pair " + ", ".join(f"{name} {torch.cat(c).mean():.2f}"
                                                                 for name, c in costs.items()))


if __name__ == "__main__":
    main()
