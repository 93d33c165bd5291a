"""`layerbound figures ...`: the figures and the report summary, one subcommand per figure kind.

Each reads the workflow's files (loss tables, metrics sidecars, merged distance files, the pair
set) and calls a pure function of :mod:`layerbound.figures.layers`:

    layerbound figures layers     --metrics M.json --png P --pdf D TABLE...    (paper 001 Figs 8-15)
    layerbound figures m-sweep    --metrics M.json --layer conv1 --png P --pdf D TABLE...  (Fig 6)
    layerbound figures collisions --metrics M.json --pairs PAIRS.h5 --pair 0 --png P --pdf D MERGED...  (Fig 3)
    layerbound figures training-methods --metrics M1.json M2.json --eps-json '[1, 2]' --png P --pdf D TABLE...
    layerbound figures zero-one   --metrics M.json --png P --pdf D TABLE...
    layerbound figures fab        --metrics M.json --points FAB.csv --table LOGITS.csv --csv C --png P --pdf D  (Fig 5)
    layerbound figures summary    --summary results/summary.csv --metrics M.json... [--attacks A.json...] --html H --csv C

TABLE arguments are keyed loss tables (results/losses/.../m{m}.csv): the model's layers and the
pseudo-model `input` (its baselines); rows of other models are ignored.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _read_sidecar(path) -> dict:
    """A metrics or attack sidecar: a JSON object naming its model; UnreadableFile naming the file."""
    from ..core.errors import UnreadableFile

    try:
        sidecar = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UnreadableFile(f"sidecar {path} cannot be read ({type(err).__name__}): delete it and run again") from None
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("model"), str):
        raise UnreadableFile(f"sidecar {path} is not a layerbound sidecar (a JSON object naming its model): delete it "
                             "and run again")
    return sidecar


def _read_metrics(paths) -> dict[str, dict]:
    out = {}
    for path in paths:
        metrics = _read_sidecar(path)
        out[metrics["model"]] = metrics
    return out


def _one(metrics_paths) -> dict:
    metrics = _read_metrics(metrics_paths)
    if len(metrics) != 1:
        raise ValueError(f"expected the metrics sidecar of one model, got {sorted(metrics)}")
    return next(iter(metrics.values()))


def taps_and_widths(metrics: dict) -> tuple[list[str], dict[str, int]]:
    """A model's taps in network order and their widths n_j, from its metrics sidecar (a loaded
    model's sidecar lists them; a registry model's come from its architecture)."""
    from ..models import architectures
    from ..data import info as dataset_info

    if "tap_order" in metrics:
        return list(metrics["tap_order"]), dict(metrics["tap_widths"])
    meta = dataset_info.info(metrics["dataset"])
    widths = architectures.tap_widths(metrics["arch"], meta.input_shape, meta.num_classes, metrics.get("padding", "same"))
    return architectures.tap_names(metrics["arch"]), widths


def _tables(paths, models: set[str]):
    from ..bounds import losses
    from ..core import names

    stacked = losses.stack([losses.read_table(p) for p in paths])
    stacked = stacked.loc[stacked["model"].isin(models | {names.INPUT_MODEL})]
    for column in ("dataset", "pairset", "method"):
        values = stacked[column].unique()
        if len(values) > 1:
            raise ValueError(f"the tables mix {column}s {sorted(values)}; give the tables of one of them")
    return stacked


def _single_m(tables, model: str) -> int:
    ms = sorted(tables.loc[tables["model"] == model, "m"].astype(int).unique())
    if len(ms) != 1:
        raise ValueError(f"expected the tables of {model!r} at one m, got m in {ms}")
    return ms[0]


def _pairset(tables) -> str | None:
    values = tables["pairset"].unique()
    return str(values[0]) if len(values) else None


def _save(fig, args) -> None:
    from ..figures import style as figures_style

    figures_style.save(fig, *(p for p in (args.png, args.pdf) if p))
    print(f"wrote {', '.join(p for p in (args.png, args.pdf) if p)}")


def _per_layer_figure(args: argparse.Namespace, figure_name: str) -> None:
    """A figure with one curve per layer of one model (loss_curves_figure, zero_one_figure)."""
    from ..models import architectures
    from ..figures import layers as figures

    metrics = _one(args.metrics)
    tables = _tables(args.tables, {metrics["model"]})
    m = _single_m(tables, metrics["model"])
    taps, widths = taps_and_widths(metrics)
    order = architectures.network_order(tables.loc[tables["model"] == metrics["model"], "layer"], taps)
    make_figure = getattr(figures, figure_name)
    _save(make_figure(tables, order, metrics, m, widths, _pairset(tables)), args)


def _cmd_layers(args: argparse.Namespace) -> None:
    _per_layer_figure(args, "loss_curves_figure")


def _cmd_zero_one(args: argparse.Namespace) -> None:
    _per_layer_figure(args, "zero_one_figure")


def _cmd_m_sweep(args: argparse.Namespace) -> None:
    from ..figures import layers as figures

    metrics = _one(args.metrics)
    tables = _tables(args.tables, {metrics["model"]})
    _, widths = taps_and_widths(metrics)
    ms = sorted(tables.loc[(tables["model"] == metrics["model"]) & (tables["layer"] == args.layer), "m"].astype(int).unique())
    fig = figures.m_sweep_figure(tables, args.layer, ms, metrics, widths.get(args.layer), _pairset(tables))
    _save(fig, args)


def _cmd_collision_methods(args: argparse.Namespace) -> None:
    from ..core import names
    from ..models import architectures
    from ..figures import layers as figures
    from ..bounds import losses

    metrics = _one(args.metrics)
    model = metrics["model"]
    tables = losses.stack([losses.read_table(p) for p in args.tables])
    tables = tables.loc[tables["model"].isin({model, names.INPUT_MODEL})]
    for column in ("dataset", "pairset"):
        if tables[column].nunique() > 1:
            raise ValueError(f"the tables mix {column}s {sorted(tables[column].unique())}; give the tables of one of them")
    m = _single_m(tables, model)
    taps, widths = taps_and_widths(metrics)
    order = architectures.network_order(tables.loc[tables["model"] == model, "layer"], taps)
    _save(figures.collision_methods_figure(tables, order, metrics, m, widths, _pairset(tables)), args)


def _cmd_methods(args: argparse.Namespace) -> None:
    from ..models import architectures
    from ..figures import layers as figures

    metrics = _read_metrics(args.metrics)
    tables = _tables(args.tables, set(metrics))
    archs = {(v["dataset"], v["arch"], v.get("padding", "same")) for v in metrics.values()}
    if len(archs) != 1:
        raise ValueError(f"the training-method figure compares models of one dataset and architecture, got {sorted(archs)}")
    ms = sorted(tables.loc[tables["model"].isin(list(metrics)), "m"].astype(int).unique())
    if len(ms) != 1:
        raise ValueError(f"expected the tables at one m, got m in {ms}")
    taps, widths = taps_and_widths(next(iter(metrics.values())))
    order = architectures.network_order(tables.loc[tables["model"].isin(list(metrics)), "layer"], taps)
    eps = json.loads(args.eps_json)
    eps = [eps] if isinstance(eps, (int, float)) else eps
    _save(figures.methods_figure(tables, metrics, order, eps, ms[0], widths, _pairset(tables)), args)


def _cmd_collisions(args: argparse.Namespace) -> None:
    from ..collide import shards
    from ..core import names
    from ..models import architectures
    from ..data import pairs
    from ..figures import collisions as figures_collisions

    metrics = _one(args.metrics)
    merged, ms = {}, set()
    for path in args.merged:
        arrays, attrs = shards.read_merged(path)
        if attrs["model"] not in (metrics["model"], names.INPUT_MODEL):
            raise ValueError(f"{path} holds distances of model {attrs['model']!r}, not {metrics['model']!r}")
        if attrs["layer"] in merged:
            raise ValueError(f"two merged files for layer {attrs['layer']!r} (several m? give one m)")
        merged[attrs["layer"]] = (arrays, attrs)
        ms.add(int(attrs["m"]))
    if len(ms) > 1:
        raise ValueError(f"the merged files are at several m: {sorted(ms)}")
    pair_set = pairs.load(args.pairs)
    taps, _ = taps_and_widths(metrics)
    model_layers = [layer for layer, (_, attrs) in merged.items() if attrs["model"] != names.INPUT_MODEL]
    layers = [b for b in names.INPUT_LAYERS if b in merged] + architectures.network_order(model_layers, taps)
    rows = figures_collisions.collision_rows(merged, layers, pair_set.x_a.numpy(), pair_set.x_b.numpy(), args.pair, args.projection)
    if not rows:
        raise ValueError(f"no merged file stores the colliding points of pair {args.pair} "
                         "(collision.keep_points stores the first pairs of the grid)")
    fig = figures_collisions.collisions_figure(rows, metrics, args.pair, pair_set.classes, pair_set.name)
    _save(fig, args)


def _cmd_fab(args: argparse.Namespace) -> None:
    import pandas as pd

    from ..figures import fab as figures_fab
    from ..bounds import losses
    from ..core.store import write_csv

    metrics = _one(args.metrics)
    points = pd.read_csv(args.points)
    table = losses.read_table(args.table)
    if set(table["model"]) != {metrics["model"]}:
        raise ValueError(f"{args.table} is a loss table of {sorted(set(table['model']))}, not of {metrics['model']!r}")
    comparison = figures_fab.fab_comparison_table(points, table)
    if args.csv:
        write_csv(args.csv, comparison, "%.17g")
    classes = sorted(int(c) for c in points["label"].unique())
    _save(figures_fab.fab_figure(comparison, table, metrics, classes if len(classes) == 2 else None), args)


def _cmd_summary(args: argparse.Namespace) -> None:
    from ..bounds import losses
    from ..figures import report
    from ..core.store import write_text

    summary = losses.read_table(args.summary)
    metrics = _read_metrics(args.metrics)
    taps = {}
    for name, m in metrics.items():
        taps[name], _ = taps_and_widths(m)
    headlines = {}
    for path in args.attacks:
        sidecar = _read_sidecar(path)
        headlines[sidecar["model"]] = sidecar
    table = report.layer_summary(summary, metrics, taps, headlines)
    losses.write_table(table, args.csv)
    eps_max = float(summary["eps"].max()) if len(summary) else None
    write_text(args.html, report.summary_html(table, eps_max))
    print(f"{len(table)} layer rows of {table['model'].nunique()} models -> {args.csv}, {args.html}")


def add_subcommands(subparsers) -> None:
    """Add `figures` (with one subcommand per figure kind) to the `layerbound` command."""
    group = subparsers.add_parser("figures", help="figures (PNG/PDF) and the report summary from loss tables")
    sub = group.add_subparsers(dest="figure", required=True)

    def figure_parser(name: str, help: str, inputs: str, inputs_help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--png", help="PNG output")
        p.add_argument("--pdf", help="PDF output")
        p.add_argument(inputs, nargs="+", help=inputs_help)
        return p

    tables_help = "keyed loss tables (.csv) of the model(s) and of the input baselines"
    p = figure_parser("layers", "optimal CE and 0-1 loss vs eps for every layer of a model (paper 001 Figs 8-15)",
                      "tables", tables_help)
    p.add_argument("--metrics", nargs=1, required=True, help="the model's metrics sidecar (.json)")
    p.set_defaults(func=_cmd_layers)

    p = figure_parser("zero-one", "optimal 0-1 loss against optimal CE loss, one curve per layer", "tables", tables_help)
    p.add_argument("--metrics", nargs=1, required=True, help="the model's metrics sidecar (.json)")
    p.set_defaults(func=_cmd_zero_one)

    p = figure_parser("m-sweep", "one layer at several projection dimensions m (paper 001 Fig 6)", "tables", tables_help)
    p.add_argument("--metrics", nargs=1, required=True, help="the model's metrics sidecar (.json)")
    p.add_argument("--layer", required=True, help="the layer (tap) to show")
    p.set_defaults(func=_cmd_m_sweep)

    p = figure_parser("training-methods", "training methods compared layer by layer at chosen budgets", "tables", tables_help)
    p.add_argument("--metrics", nargs="+", required=True, help="the compared models' metrics sidecars")
    p.add_argument("--eps-json", required=True, help="budgets to compare at: a JSON number or list (nearest grid eps)")
    p.set_defaults(func=_cmd_methods)

    p = figure_parser("collision-methods", "collision methods compared layer by layer on the same pairs", "tables",
                      "keyed loss tables (.csv) of one model's layers and the input baseline, for two or more collision methods")
    p.add_argument("--metrics", nargs=1, required=True, help="the model's metrics sidecar (.json)")
    p.set_defaults(func=_cmd_collision_methods)

    p = figure_parser("collisions", "colliding examples of one pair across layers (paper 001 Fig 3)", "merged",
                      "merged distance files (.h5) of the model's layers (and the input baselines) at one m")
    p.add_argument("--metrics", nargs=1, required=True, help="the model's metrics sidecar (.json)")
    p.add_argument("--pairs", required=True, help="the pair set (.h5)")
    p.add_argument("--pair", type=int, default=0, help="flat pair index k = i * S + j (among the stored points)")
    p.add_argument("--projection", type=int, default=0, help="which projection's collisions")
    p.set_defaults(func=_cmd_collisions)

    p = sub.add_parser("fab", help="FAB loss vs the optimal collision loss at the logits (paper 001 Fig 5)")
    p.add_argument("--png", help="PNG output")
    p.add_argument("--pdf", help="PDF output")
    p.add_argument("--csv", help="both curves per eps (.csv)")
    p.add_argument("--metrics", nargs=1, required=True, help="the model's metrics sidecar (.json)")
    p.add_argument("--points", required=True, help="the model's FAB points on the pair set (layerbound fab-pairs)")
    p.add_argument("--table", required=True, help="the keyed loss table of the model's layer logits (.csv)")
    p.set_defaults(func=_cmd_fab)

    p = sub.add_parser("summary", help="the layer-by-layer summary table of the report (HTML and CSV)")
    p.add_argument("--summary", required=True, help="results/summary.csv")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics sidecars of the models")
    p.add_argument("--attacks", nargs="*", default=[],
                   help="the attack stage's sidecars (results/attacks/{dataset}/{model}.json): the headline robust accuracy")
    p.add_argument("--html", required=True, help="summary table as an HTML page (the report's)")
    p.add_argument("--csv", required=True, help="summary table with accuracies (.csv)")
    p.set_defaults(func=_cmd_summary)
