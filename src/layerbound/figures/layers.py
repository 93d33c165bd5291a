"""Figures of the loss tables: data in, matplotlib figures out (paper 001 numbering).

Every function here is pure: it takes loss tables (the keyed tables of :mod:`layerbound.bounds.losses`,
stacked) and metrics sidecars (dicts) and returns a :class:`matplotlib.figure.Figure`. Nothing
reads the workflow's paths; :mod:`layerbound.cli.figures` does that. Figures are built without
pyplot (no global figure manager, no display), so they render headless with the Agg canvas.

    loss_curves_figure      Figures 8-15: optimal cross-entropy and 0-1 loss vs eps, one curve
                            per layer in network order, with the input and input-RP baselines
    m_sweep_figure          Figure 6: the first layer at several projection dimensions m
    methods_figure          training methods compared layer by layer at chosen budgets
    zero_one_figure         optimal 0-1 loss against optimal cross-entropy loss

Figure 3 (colliding examples) is in collisions.py; labels, colours and saving in
style.py; the report's summary table in report.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .style import (BASELINE_STYLE, BASELINES, LOG2, TRAINING_COLORS, SPREAD, layer_curve, threat_model_label, band, projection_count,
                    figure_title, layer_colors, layer_display, save, select_eps, training_label)
from ..core.names import INPUT_MODEL

__all__ = ["loss_curves_figure", "m_sweep_figure", "methods_figure", "zero_one_figure", "collision_methods_figure", "save", "select_eps",
           "training_label", "layer_display", "layer_colors", "BASELINES", "LOG2"]

# --- Figures 8-15: every layer ------------------------------------------------------------------

def _plot_curves(ax, curves: list[tuple[str, pd.DataFrame, dict]], column: str) -> None:
    for label, table, style in curves:
        eps = table["eps"].to_numpy()
        line, = ax.plot(eps, table[f"{column}_mean"].to_numpy(), label=label, **style)
        low, high = band(table, column)
        if (high > low).any():
            ax.fill_between(eps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)


def _loss_axes(ax, column: str, eps_max: float) -> None:
    ceiling = LOG2 if column == "ce" else 0.5
    ax.axhline(ceiling, color="0.6", linewidth=0.8, zorder=0)
    ax.annotate("log 2" if column == "ce" else "1/2", (eps_max, ceiling), xytext=(-2, 3),
                textcoords="offset points", ha="right", va="bottom", fontsize=8, color="0.4")
    ax.set_xlabel(r"adversarial budget $\epsilon$ ($\ell_2$, pixel space)")
    ax.set_ylabel("optimal cross-entropy loss" if column == "ce" else "optimal 0-1 loss")
    ax.set_ylim(-0.02 * ceiling, ceiling * 1.12)
    ax.set_xlim(0, eps_max if eps_max > 0 else 1)
    ax.grid(True, alpha=0.3)


def _train_eps_marker(ax, metrics: Mapping) -> None:
    train = metrics.get("train", {})
    if train.get("method", "benign") != "benign" and train.get("eps"):
        ax.axvline(float(train["eps"]), color="tab:red", linewidth=0.8, linestyle="-.", alpha=0.7,
                   label=rf"training $\epsilon$ = {float(train['eps']):g}")


def _layer_curves(tables: pd.DataFrame, model: str, layer_order: Sequence[str], m: int,
                  widths: Mapping | None, style: Mapping) -> list:
    """(label, table, style) of every layer the tables hold, in network order, on a sequential ramp."""
    found = [(layer, layer_curve(tables, model, layer, m)) for layer in layer_order]
    found = [(layer, table) for layer, table in found if not table.empty]
    if not found:
        raise ValueError(f"the tables hold no layer of model {model!r} at m={m}")
    return [(layer_display(layer, m, widths), table, {"color": color, **style})
            for (layer, table), color in zip(found, layer_colors(len(found)))]


def loss_curves_figure(tables: pd.DataFrame, layer_order: Sequence[str], metrics: Mapping, m: int,
                       widths: Mapping[str, int] | None = None, pairset: str | None = None) -> Figure:
    """Paper 001 Figures 8-15: optimal cross-entropy (left) and 0-1 (right) loss vs eps.

    `tables`: stacked keyed loss tables of one (dataset, pairset, method) holding the model's layers
    at m and the pseudo-model `input` (layers input, input_rp) at m. One curve per layer of
    `layer_order` (a sequential colormap, network order), the baselines in black, a band of the
    min-max over projections.
    """
    model = metrics["model"]
    curves = _layer_curves(tables, model, layer_order, m, widths, {"linewidth": 1.8})
    for layer in BASELINES:
        table = layer_curve(tables, INPUT_MODEL, layer, m)
        if not table.empty:
            curves.append((layer_display(layer, m), table, {**BASELINE_STYLE[layer], "linewidth": 1.4}))
    used = pd.concat([t for _, t, _ in curves])
    return _loss_panels(curves, metrics, r"map $A \circ f_j$ (layer j)",
                        figure_title(metrics, m, projection_count(used), pairset, "optimal loss of every layer",
                               threat_model_label(used)))


def _loss_panels(curves: list, metrics: Mapping, legend_title: str, title: str) -> Figure:
    """Cross-entropy and 0-1 panels of the same curves, one legend, the training budget marked."""
    eps_max = float(pd.concat([t for _, t, _ in curves])["eps"].max())
    fig = Figure(figsize=(13.5, 5.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, column in zip(axes, ("ce", "zero_one")):
        _plot_curves(ax, curves, column)
        _loss_axes(ax, column, eps_max)
        _train_eps_marker(ax, metrics)
    axes[0].set_title("cross-entropy")
    axes[1].set_title("0-1")
    fig.legend(*axes[1].get_legend_handles_labels(), loc="outside right center", fontsize=8,
               title=legend_title, title_fontsize=8)
    fig.suptitle(title + f"\nbands: {SPREAD}", fontsize=10)
    return fig


# --- Figure 6: the first layer at several m -----------------------------------------------------

def m_sweep_figure(tables: pd.DataFrame, layer: str, ms: Sequence[int], metrics: Mapping,
                   width: int | None = None, pairset: str | None = None) -> Figure:
    """Paper 001 Figure 6: one layer's loss curves for several projection dimensions m.

    One curve per m (sequential colours, increasing m), plus the input-space baseline (no
    projection, black dashed). A curve whose m >= n_j is the unprojected layer.
    """
    model = metrics["model"]
    ms = sorted(int(m) for m in ms)
    curves = []
    for m, color in zip(ms, layer_colors(len(ms), "plasma")):
        table = layer_curve(tables, model, layer, m)
        if table.empty:
            continue
        label = f"m = {m}" + (" (>= n_j: no projection)" if width is not None and m >= width else "")
        curves.append((label, table, {"color": color, "linewidth": 1.8}))
    if not curves:
        raise ValueError(f"the tables hold no curve of {model}/{layer} at m in {ms}")
    for m in ms:
        table = layer_curve(tables, INPUT_MODEL, "input", m)
        if not table.empty:
            curves.append((layer_display("input"), table, {**BASELINE_STYLE["input"], "linewidth": 1.4}))
            break
    used = pd.concat([t for _, t, _ in curves])
    return _loss_panels(curves, metrics, f"{layer_display(layer, None, {layer: width} if width else None)}",
                        figure_title(metrics, ms, projection_count(used), pairset, f"layer {layer} for several m",
                               threat_model_label(used)))


# --- training methods compared --------------------------------------------------------------------

def methods_figure(tables: pd.DataFrame, metrics_by_model: Mapping[str, Mapping], layer_order: Sequence[str],
                   eps_values: Sequence[float], m: int, widths: Mapping[str, int] | None = None,
                   pairset: str | None = None) -> Figure:
    """Training methods layer by layer: the loss at chosen budgets, one line per model.

    Columns: one per requested eps (the nearest eps of each curve's grid is used, and named);
    rows: cross-entropy and 0-1. x: the layers in network order; error bars: min-max over
    projections. The input and input-RP baselines at the same eps are black horizontal lines.
    """
    models = list(metrics_by_model)
    eps_values = [float(e) for e in eps_values]
    if not eps_values:
        raise ValueError("no eps to compare the training methods at")
    layers = [layer for layer in layer_order
              if any(not layer_curve(tables, model, layer, m).empty for model in models)]
    if not layers:
        raise ValueError(f"the tables hold no layer of models {models} at m={m}")
    x = np.arange(len(layers))
    fig = Figure(figsize=(max(4.0, 0.6 * len(layers) + 1.2) * len(eps_values) + 0.8, 7.5), layout="constrained")
    axes = fig.subplots(2, len(eps_values), squeeze=False, sharex=True)
    offsets = np.linspace(-0.12, 0.12, len(models)) if len(models) > 1 else [0.0]
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    first = metrics_by_model[models[0]]
    # One colour per training method when each method appears once (benign grey, PGD blue, TRADES
    # orange, the same in every figure); otherwise one colour per model.
    methods = [metrics_by_model[o].get("train", {}).get("method") for o in models]
    unique = len(set(methods)) == len(methods) and all(mt in TRAINING_COLORS for mt in methods)
    colors = {o: TRAINING_COLORS[mt] if unique else f"C{i}" for i, (o, mt) in enumerate(zip(models, methods))}
    for c, eps in enumerate(eps_values):
        used_eps = set()
        for r, column in enumerate(("ce", "zero_one")):
            ax = axes[r, c]
            for index, (model, offset) in enumerate(zip(models, offsets)):
                metrics = metrics_by_model[model]
                values, low, high = [], [], []
                for layer in layers:
                    table = layer_curve(tables, model, layer, m)
                    if table.empty:
                        values.append(np.nan)
                        low.append(np.nan)
                        high.append(np.nan)
                        continue
                    row = select_eps(table, eps)
                    used_eps.add(float(row["eps"]))
                    values.append(row[f"{column}_mean"])
                    row_low, row_high = band(row.to_frame().T, column)
                    low.append(row[f"{column}_mean"] - row_low[0])
                    high.append(row_high[0] - row[f"{column}_mean"])
                ax.plot(x + offset, values, label=f"{training_label(metrics)} ({model})", color=colors[model],
                        marker=markers[index % len(markers)], markersize=5, linewidth=1.5)
                ax.errorbar(x + offset, values, yerr=[low, high], fmt="none", ecolor=colors[model],
                            elinewidth=1.0, capsize=2.5)
            for layer in BASELINES:
                table = layer_curve(tables, INPUT_MODEL, layer, m)
                if not table.empty:
                    row = select_eps(table, eps)
                    ax.axhline(row[f"{column}_mean"], label=layer_display(layer, m), linewidth=1.2,
                               **BASELINE_STYLE[layer])
            ceiling = LOG2 if column == "ce" else 0.5
            ax.axhline(ceiling, color="0.6", linewidth=0.8, zorder=0)
            ax.set_ylim(-0.03 * ceiling, ceiling * 1.1)
            ax.grid(True, alpha=0.3)
            if c == 0:
                ax.set_ylabel("optimal cross-entropy loss" if column == "ce" else "optimal 0-1 loss")
            if r == 1:
                ax.set_xticks(x, [layer_display(layer, m, widths) for layer in layers], rotation=35, ha="right", fontsize=8)
        grid_eps = ", ".join(f"{e:g}" for e in sorted(used_eps))
        axes[0, c].set_title(rf"$\epsilon$ = {eps:g}" + ("" if used_eps == {eps} else f" (nearest on the grid: {grid_eps})"),
                             fontsize=10)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", fontsize=8,
               ncols=min(len(models) + len(BASELINES), 5))
    projections = projection_count(tables.loc[tables["model"].isin(models) & (tables["m"].astype(int) == int(m))])
    dataset, arch = first.get("dataset", "?"), first.get("arch", "?")
    fig.suptitle(f"{dataset} - {arch}: training methods compared layer by layer "
                 f"({', '.join(training_label(metrics_by_model[o]) for o in models)})\n"
                 f"m={m}, {projections} random projections" + (f", pairs {pairset}" if pairset else "")
                 + f"; adversary: {threat_model_label(tables)}\nerror bars: {SPREAD}", fontsize=10)
    return fig


# --- 0-1 vs cross-entropy --------------------------------------------------------------------------

def zero_one_figure(tables: pd.DataFrame, layer_order: Sequence[str], metrics: Mapping, m: int,
                    widths: Mapping[str, int] | None = None, pairset: str | None = None) -> Figure:
    """The optimal 0-1 loss against the optimal cross-entropy loss, one curve per layer (eps grows
    along each curve), with the baselines and the bound 0-1 <= CE / (2 log 2).

    The bound: the optimal soft classifier splits the conflict graph into blocks, each with a
    matching that saturates its smaller side (Konig), so the 0-1 loss is sum_b min(a_b, b_b) / N,
    while the cross-entropy is sum_b (a_b + b_b) H(p_b) / N with p_b = min / (a_b + b_b) <= 1/2 and
    H(p) >= 2 p log 2 there. Equality holds when every block is balanced; points below the line
    mean unbalanced conflict blocks. Both sides average over projections, so the bound holds for
    the means too.
    """
    model = metrics["model"]
    curves = _layer_curves(tables, model, layer_order, m, widths,
                           {"linewidth": 1.5, "marker": "o", "markersize": 2.5})
    for layer in BASELINES:
        table = layer_curve(tables, INPUT_MODEL, layer, m)
        if not table.empty:
            curves.append((layer_display(layer, m), table, {**BASELINE_STYLE[layer], "linewidth": 1.4}))
    fig = Figure(figsize=(7.5, 6.2), layout="constrained")
    ax = fig.subplots()
    ce = np.linspace(0, LOG2, 50)
    ax.plot(ce, ce / (2 * LOG2), color="0.55", linewidth=1.0, linestyle="-", zorder=0,
            label="0-1 = CE / (2 log 2): upper bound,\nreached when conflict blocks are balanced")
    for label, table, style in curves:
        ax.plot(table["ce_mean"].to_numpy(), table["zero_one_mean"].to_numpy(), label=label, **style)
    ax.plot([LOG2], [0.5], marker="*", color="tab:red", markersize=10, linestyle="none",
            label="ceiling (log 2, 1/2)", zorder=5)
    ax.set_xlim(-0.02, LOG2 * 1.06)
    ax.set_ylim(-0.02, 0.56)
    ax.set_xlabel("optimal cross-entropy loss (mean over projections)")
    ax.set_ylabel("optimal 0-1 loss (mean over projections)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    used = pd.concat([t for _, t, _ in curves])
    fig.suptitle(figure_title(metrics, m, projection_count(used), pairset, "0-1 vs cross-entropy loss", threat_model_label(used))
                 + f"\neach curve runs over the eps grid 0..{used['eps'].max():g}", fontsize=9)
    return fig


# --- collision methods compared ----------------------------------------------------------------------

METHOD_STYLES = {"polytope": {"linestyle": "-", "color": "tab:blue"},
                 "jacobian": {"linestyle": "--", "color": "tab:orange"}}
METHOD_LABELS = {"polytope": "polytope descent (paper 002)", "jacobian": "Jacobian search (paper 001)"}


def collision_methods_figure(tables: pd.DataFrame, layer_order: Sequence[str], metrics: Mapping, m: int,
                             widths: Mapping[str, int] | None = None, pairset: str | None = None) -> Figure:
    """The collision methods on the same pairs, layer by layer: one column per layer (network
    order), cross-entropy (top) and 0-1 (bottom) loss against eps, one curve per method with its
    bootstrap band, and the input space (closed form, the same for every method) in black.

    A method whose curve lies left of another's found closer collisions on these pairs: every
    distance is a verified collision, so the leftmost curve is the tightest bound measured.
    """
    model = metrics["model"]
    methods = sorted(set(tables["method"]) & set(METHOD_STYLES)) + sorted(set(tables["method"]) - set(METHOD_STYLES))
    layers = [layer for layer in layer_order if not tables.loc[(tables["model"] == model) & (tables["layer"] == layer)].empty]
    if len(methods) < 2 or not layers:
        raise ValueError(f"need the tables of two or more collision methods for a layer of {model!r}")
    fig = Figure(figsize=(3.2 * len(layers) + 1.5, 6.2), layout="constrained")
    axes = fig.subplots(2, len(layers), squeeze=False, sharey="row")
    eps_max = float(tables["eps"].max())
    for c, layer in enumerate(layers):
        for r, column in enumerate(("ce", "zero_one")):
            ax = axes[r, c]
            for method in methods:
                table = layer_curve(tables.loc[tables["method"] == method], model, layer, m)
                if table.empty:
                    continue
                style = METHOD_STYLES.get(method, {})
                line, = ax.plot(table["eps"], table[f"{column}_mean"], label=METHOD_LABELS.get(method, method),
                                linewidth=1.6, **style)
                low, high = band(table, column)
                if (high > low).any():
                    ax.fill_between(table["eps"], low, high, color=line.get_color(), alpha=0.12, linewidth=0)
            baseline = layer_curve(tables.loc[tables["method"] == methods[0]], INPUT_MODEL, "input", m)
            if not baseline.empty:
                ax.plot(baseline["eps"], baseline[f"{column}_mean"], label=layer_display("input", m),
                        **{**BASELINE_STYLE["input"], "linewidth": 1.2})
            _loss_axes(ax, column, eps_max)
            if c:
                ax.set_ylabel("")
            if r == 0:
                ax.set_title(layer_display(layer, m, widths), fontsize=10)
                ax.set_xlabel("")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", fontsize=8, ncols=len(methods) + 1)
    fig.suptitle(figure_title(metrics, m, projection_count(tables), pairset, "collision methods on the same pairs",
                        threat_model_label(tables)) + f"\nbands: {SPREAD}", fontsize=9.5)
    return fig
