"""Figures and the report's summary table: data in, matplotlib figures (or tables) out.

Every function here is pure: it takes loss tables (the keyed tables of :mod:`layerbound.losses`,
stacked), metrics sidecars (dicts), arrays of colliding points, and returns a
:class:`matplotlib.figure.Figure` (or a DataFrame / HTML string). Nothing reads the workflow's
paths; :mod:`layerbound.cli_figures` does that. Figures are built without pyplot (no global figure
manager, no display), so they render headless with the Agg canvas.

Figures (paper 001 numbering):

    loss_curves_figure      Figures 8-15: optimal cross-entropy and 0-1 loss vs eps, one curve
                            per layer in network order, with the input and input-RP baselines
    m_sweep_figure          Figure 6: the first layer at several projection dimensions m
    collisions_figure       Figure 3: x, x~, x~', x' of one pair for every layer
    methods_figure          training methods compared layer by layer at chosen budgets
    zero_one_figure         optimal 0-1 loss against optimal cross-entropy loss

Bands and error bars are the min-max over random projections (a layer with m >= n_j, and the
input baseline, are not projected: one "projection", no band).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

__all__ = [
    "BASELINES", "LOG2", "training_label", "layer_display", "network_order", "layer_colors",
    "select_eps", "loss_curves_figure", "m_sweep_figure", "collision_rows", "collisions_figure",
    "methods_figure", "zero_one_figure", "layer_summary", "summary_html", "save",
]

INPUT_MODEL = "input"
BASELINES = ("input", "input_rp")
LOG2 = math.log(2.0)
# Baselines are black: dashed for the input space, dotted for its random projection.
BASELINE_STYLE = {"input": {"color": "black", "linestyle": "--"}, "input_rp": {"color": "black", "linestyle": ":"}}
METHOD_NAMES = {"benign": "benign", "pgd": "PGD", "trades": "TRADES"}
METHOD_COLORS = {"benign": "tab:gray", "pgd": "tab:blue", "trades": "tab:orange"}
SPREAD = "min-max over projections"
NORM_LABEL = r"$\|\tilde{{x}} - x\|$ = {:.3f}"
NORM_PRIME_LABEL = r"$\|\tilde{{x}}' - x'\|$ = {:.3f}"


# --- labels ----------------------------------------------------------------------------------

def training_label(metrics: Mapping) -> str:
    """'benign', 'PGD-2', 'TRADES-0.5' (with the norm when it is not l2), from a metrics sidecar."""
    train = metrics.get("train", {})
    method = train.get("method", "?")
    if method == "benign":
        return "benign"
    label = f"{METHOD_NAMES.get(method, method)}-{float(train.get('eps', 0.0)):g}"
    return label if train.get("norm", "l2") == "l2" else f"{label} ({train['norm']})"


def _accuracy_text(metrics: Mapping) -> str:
    parts = []
    if "clean_test_accuracy" in metrics:
        parts.append(f"clean acc {metrics['clean_test_accuracy']:.3f}")
    if "robust_test_accuracy" in metrics:
        ev = metrics.get("robust_eval", {})
        parts.append(f"PGD-{ev.get('norm', 'l2')} eps={float(ev.get('eps', float('nan'))):g} "
                     f"robust acc {metrics['robust_test_accuracy']:.3f}")
    return ", ".join(parts)


def layer_display(layer: str, m: int | None = None, widths: Mapping[str, int] | None = None) -> str:
    """How a layer is named in legends: baselines spelled out, widths n_j where known."""
    if layer == "input":
        return "input (no projection)"
    if layer == "input_rp":
        return f"input RP (m={m})" if m is not None else "input RP"
    if widths and layer in widths:
        return f"{layer} (n={widths[layer]})"
    return layer


def _title(metrics: Mapping, m: int | Sequence[int], projections: int, pairset: str | None, what: str) -> str:
    name = metrics.get("model", "?")
    arch = metrics.get("arch", "?")
    dataset = metrics.get("dataset", "?")
    ms = f"m={m}" if isinstance(m, (int, np.integer)) else "m=" + ", ".join(str(v) for v in m)
    line1 = f"{dataset} - {name} ({arch}, {training_label(metrics)}): {what}"
    line2 = f"{ms}, {projections} random projection{'s' if projections != 1 else ''}"
    if pairset:
        line2 += f", pairs {pairset}"
    acc = _accuracy_text(metrics)
    return line1 + "\n" + line2 + (f"\n{acc}" if acc else "")


# --- ordering and colours ---------------------------------------------------------------------

def network_order(layers: Iterable[str], taps: Sequence[str]) -> list[str]:
    """`layers` sorted as the network computes them.

    `taps` is the model's ordered tap list (models.build(...).taps). A pre-activation tap
    "<tap>_pre" comes just before its tap. Layers the network does not have keep their given
    order, after the others.
    """
    taps = list(taps)
    layers = list(dict.fromkeys(layers))

    def key(layer: str) -> tuple[int, float]:
        if layer in taps:
            return 0, float(taps.index(layer))
        if layer.endswith("_pre") and layer[:-4] in taps:
            return 0, taps.index(layer[:-4]) - 0.5
        return 1, float(layers.index(layer))

    return sorted(layers, key=key)


def layer_colors(n: int, cmap: str = "viridis") -> list[tuple[float, float, float, float]]:
    """n colours of a sequential colormap, first layer darkest (the light yellow end is cut off)."""
    if n <= 0:
        return []
    positions = np.linspace(0.0, 0.85, n) if n > 1 else np.array([0.0])
    cm = colormaps[cmap]
    return [cm(float(p)) for p in positions]


# --- table access ------------------------------------------------------------------------------

def _curve(tables: pd.DataFrame, model: str, layer: str, m: int | None = None) -> pd.DataFrame:
    sel = (tables["model"] == model) & (tables["layer"] == layer)
    if m is not None:
        sel &= tables["m"].astype(int) == int(m)
    out = tables.loc[sel].sort_values("eps")
    if out.duplicated("eps").any():
        raise ValueError(f"the tables hold more than one curve for {model}/{layer}"
                         + (f" at m={m}" if m is not None else "") + " (mixed pair sets or methods?)")
    return out


def select_eps(table: pd.DataFrame, eps: float) -> pd.Series:
    """The row of one curve's table whose eps is nearest `eps` (ties: the smaller eps)."""
    if table.empty:
        raise ValueError("empty loss table")
    grid = table["eps"].to_numpy(dtype=np.float64)
    index = int(np.argmin(np.abs(grid - float(eps))))
    return table.iloc[index]


def _projections(tables: pd.DataFrame) -> int:
    return int(tables["projections"].max()) if len(tables) else 0


# --- Figures 8-15: every layer ------------------------------------------------------------------

def _plot_curves(ax, curves: list[tuple[str, pd.DataFrame, dict]], column: str) -> None:
    for label, table, style in curves:
        eps = table["eps"].to_numpy()
        line, = ax.plot(eps, table[f"{column}_mean"].to_numpy(), label=label, **style)
        if (table[f"{column}_max"] > table[f"{column}_min"]).any():
            ax.fill_between(eps, table[f"{column}_min"].to_numpy(), table[f"{column}_max"].to_numpy(),
                            color=line.get_color(), alpha=0.15, linewidth=0)


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
    found = [(layer, _curve(tables, model, layer, m)) for layer in layer_order]
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
        table = _curve(tables, INPUT_MODEL, layer, m)
        if not table.empty:
            curves.append((layer_display(layer, m), table, {**BASELINE_STYLE[layer], "linewidth": 1.4}))
    used = pd.concat([t for _, t, _ in curves])
    return _loss_panels(curves, metrics, "feature extractor $f_j$",
                        _title(metrics, m, _projections(used), pairset, "optimal loss of every layer"))


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
        table = _curve(tables, model, layer, m)
        if table.empty:
            continue
        label = f"m = {m}" + (" (>= n_j: no projection)" if width is not None and m >= width else "")
        curves.append((label, table, {"color": color, "linewidth": 1.8}))
    if not curves:
        raise ValueError(f"the tables hold no curve of {model}/{layer} at m in {ms}")
    for m in ms:
        table = _curve(tables, INPUT_MODEL, "input", m)
        if not table.empty:
            curves.append((layer_display("input"), table, {**BASELINE_STYLE["input"], "linewidth": 1.4}))
            break
    used = pd.concat([t for _, t, _ in curves])
    return _loss_panels(curves, metrics, f"{layer_display(layer, None, {layer: width} if width else None)}",
                        _title(metrics, ms, _projections(used), pairset, f"layer {layer} for several m"))


# --- Figure 3: colliding examples across layers --------------------------------------------------

def collision_rows(merged: Mapping[str, tuple[Mapping[str, np.ndarray], Mapping]], layers: Sequence[str],
                   x_a: np.ndarray, x_b: np.ndarray, pair: int, projection: int = 0) -> list[dict]:
    """The colliding examples of flat pair `pair` = i * S + j in every layer, with their norms.

    `merged`: layer -> (arrays, attrs) of its merged distance file (shards.read_merged), holding
    points/pair, points/x_tilde, points/x_tilde_prime of shape (P, K, C, H, W). x = x_a[i],
    x' = x_b[j]. A layer with a single projection (not projected) uses it for any `projection`.
    Layers whose file stores no points for `pair` are skipped.
    """
    S = len(x_a)
    i, j = divmod(int(pair), S)
    x, x_prime = np.asarray(x_a[i], dtype=np.float64), np.asarray(x_b[j], dtype=np.float64)
    rows = []
    for layer in layers:
        if layer not in merged:
            continue
        arrays, attrs = merged[layer]
        if "points/pair" not in arrays:
            continue
        stored = np.asarray(arrays["points/pair"]).tolist()
        if int(pair) not in stored:
            continue
        k = stored.index(int(pair))
        P = arrays["points/x_tilde"].shape[0]
        p = min(int(projection), P - 1)
        x_tilde = np.asarray(arrays["points/x_tilde"][p, k], dtype=np.float64)
        x_tilde_prime = np.asarray(arrays["points/x_tilde_prime"][p, k], dtype=np.float64)
        rows.append({
            "layer": layer, "projection": p, "m": int(attrs.get("m", 0)), "n_j": int(attrs.get("n_j", 0)),
            "projected": bool(attrs.get("projected", P > 1)),
            "x": x, "x_tilde": x_tilde, "x_tilde_prime": x_tilde_prime, "x_prime": x_prime,
            "norm": float(np.linalg.norm((x_tilde - x).ravel())),
            "norm_prime": float(np.linalg.norm((x_tilde_prime - x_prime).ravel())),
            "distance": float(arrays["distances"][p, i, j]),
        })
    return rows


def _image(a: np.ndarray) -> tuple[np.ndarray, dict]:
    """(C, H, W) pixels in [0, 1] as an imshow array; values outside [0, 1] are clipped for display."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] == 1:
        return np.clip(a[0], 0, 1), {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    if a.ndim == 3:
        return np.clip(np.transpose(a, (1, 2, 0)), 0, 1), {}
    return np.clip(a, 0, 1), {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}


def collisions_figure(rows: Sequence[Mapping], metrics: Mapping, pair: int, classes: Sequence[int] | None = None,
                      pairset: str | None = None) -> Figure:
    """Paper 001 Figure 3: rows = layers (network order), columns x, x~, x~', x', then the two
    perturbations x~ - x and x~' - x' (red: brighter, blue: darker; one symmetric scale per row).

    A f(x~) = A f(x~'): the middle two images collide in the layer's projected features. Their
    l2 perturbation norms ||x~ - x|| and ||x~' - x'|| label the images; the row label gives the
    stored distance d = max of the two.
    """
    if not rows:
        raise ValueError("no colliding points to show (keep_points = 0, or the pair is not stored)")
    n = len(rows)
    width = 10.4
    image = (width - 1.9) / 6          # inches per image; the row labels take the left ~1.9 in
    fig = Figure(figsize=(width, n * (image + 0.3) + 1.2), layout="constrained")
    axes = fig.subplots(n, 6, squeeze=False)
    ca, cb = (f" (class {classes[0]})", f" (class {classes[1]})") if classes else ("", "")
    heads = ["$x$" + ca, r"$\tilde{x}$", r"$\tilde{x}'$", "$x'$" + cb,
             r"$\tilde{x} - x$", r"$\tilde{x}' - x'$"]
    for r, row in enumerate(rows):
        delta = np.asarray(row["x_tilde"]) - np.asarray(row["x"])
        delta_prime = np.asarray(row["x_tilde_prime"]) - np.asarray(row["x_prime"])
        scale = float(max(np.abs(delta).max(), np.abs(delta_prime).max())) or 1.0
        for c, key in enumerate(("x", "x_tilde", "x_tilde_prime", "x_prime", "delta", "delta_prime")):
            ax = axes[r, c]
            if key.startswith("delta"):
                d = delta if key == "delta" else delta_prime
                d = d.mean(axis=0) if d.ndim == 3 else d     # channels averaged for colour images
                ax.imshow(d, interpolation="nearest", cmap="RdBu_r", vmin=-scale, vmax=scale)
                ax.set_xlabel(f"scale $\\pm${scale:.2f}", fontsize=8)
            else:
                img, kw = _image(row[key])
                ax.imshow(img, interpolation="nearest", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[c], fontsize=10)
            if key == "x_tilde":
                ax.set_xlabel(NORM_LABEL.format(row["norm"]), fontsize=8.5)
            elif key == "x_tilde_prime":
                ax.set_xlabel(NORM_PRIME_LABEL.format(row["norm_prime"]), fontsize=8.5)
        name = layer_display(row["layer"], row["m"])
        if row["layer"] == "input":
            proj = ""
        elif row["projected"]:
            proj = f"\nprojection {row['projection']}"
        else:
            proj = "\nno projection (m >= n_j)"
        axes[r, 0].set_ylabel(f"{name}{proj}\nd = {row['distance']:.3f}", fontsize=8.5, rotation=0,
                              ha="right", va="center", labelpad=8)
    name, arch, dataset = metrics.get("model", "?"), metrics.get("arch", "?"), metrics.get("dataset", "?")
    m = next((row["m"] for row in rows if row["projected"]), rows[0]["m"])
    title = (f"{dataset} - {name} ({arch}, {training_label(metrics)}): colliding examples of pair {pair}\n"
             + r"collisions $A f_j(\tilde{x}) = A f_j(\tilde{x}')$" + f", m={m}" + (f", pairs {pairset}" if pairset else "")
             + r"; $d = \max(\|\tilde{x} - x\|, \|\tilde{x}' - x'\|)$")
    acc = _accuracy_text(metrics)
    fig.suptitle(title + (f"\n{acc}" if acc else ""), fontsize=9.5)
    return fig


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
              if any(not _curve(tables, model, layer, m).empty for model in models)]
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
    unique = len(set(methods)) == len(methods) and all(mt in METHOD_COLORS for mt in methods)
    colors = {o: METHOD_COLORS[mt] if unique else f"C{i}" for i, (o, mt) in enumerate(zip(models, methods))}
    for c, eps in enumerate(eps_values):
        used_eps = set()
        for r, column in enumerate(("ce", "zero_one")):
            ax = axes[r, c]
            for index, (model, offset) in enumerate(zip(models, offsets)):
                metrics = metrics_by_model[model]
                values, low, high = [], [], []
                for layer in layers:
                    table = _curve(tables, model, layer, m)
                    if table.empty:
                        values.append(np.nan)
                        low.append(np.nan)
                        high.append(np.nan)
                        continue
                    row = select_eps(table, eps)
                    used_eps.add(float(row["eps"]))
                    values.append(row[f"{column}_mean"])
                    low.append(row[f"{column}_mean"] - row[f"{column}_min"])
                    high.append(row[f"{column}_max"] - row[f"{column}_mean"])
                ax.plot(x + offset, values, label=f"{training_label(metrics)} ({model})", color=colors[model],
                        marker=markers[index % len(markers)], markersize=5, linewidth=1.5)
                ax.errorbar(x + offset, values, yerr=[low, high], fmt="none", ecolor=colors[model],
                            elinewidth=1.0, capsize=2.5)
            for layer in BASELINES:
                table = _curve(tables, INPUT_MODEL, layer, m)
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
    projections = _projections(tables.loc[tables["model"].isin(models) & (tables["m"].astype(int) == int(m))])
    dataset, arch = first.get("dataset", "?"), first.get("arch", "?")
    fig.suptitle(f"{dataset} - {arch}: training methods compared layer by layer "
                 f"({', '.join(training_label(metrics_by_model[o]) for o in models)})\n"
                 f"m={m}, {projections} random projections" + (f", pairs {pairset}" if pairset else "")
                 + f"; error bars: {SPREAD}", fontsize=10)
    return fig


# --- 0-1 vs cross-entropy --------------------------------------------------------------------------

def zero_one_figure(tables: pd.DataFrame, layer_order: Sequence[str], metrics: Mapping, m: int,
                    widths: Mapping[str, int] | None = None, pairset: str | None = None) -> Figure:
    """The optimal 0-1 loss against the optimal cross-entropy loss, one curve per layer (eps grows
    along each curve), with the baselines and the bound 0-1 <= CE / (2 log 2).

    The bound: the optimal soft classifier splits the conflict graph into blocks, each with a
    matching that saturates its smaller side (SPEC 6), so the 0-1 loss is sum_b min(a_b, b_b) / N,
    while the cross-entropy is sum_b (a_b + b_b) H(p_b) / N with p_b = min / (a_b + b_b) <= 1/2 and
    H(p) >= 2 p log 2 there. Equality holds when every block is balanced; points below the line
    mean unbalanced conflict blocks. Both sides average over projections, so the bound holds for
    the means too.
    """
    model = metrics["model"]
    curves = _layer_curves(tables, model, layer_order, m, widths,
                           {"linewidth": 1.5, "marker": "o", "markersize": 2.5})
    for layer in BASELINES:
        table = _curve(tables, INPUT_MODEL, layer, m)
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
    fig.suptitle(_title(metrics, m, _projections(used), pairset, "0-1 vs cross-entropy loss")
                 + f"\neach curve runs over the eps grid 0..{used['eps'].max():g}", fontsize=9)
    return fig


# --- the report's layer-by-layer summary --------------------------------------------------------------

SUMMARY_COLUMNS = ["dataset", "pairset", "method", "model", "training", "m", "layer", "projections",
                   "eps_ce_half_log2", "eval_eps", "grid_eps", "ce_at_eval_eps", "zero_one_at_eval_eps",
                   "ce_at_max_eps", "clean_acc", "robust_acc"]


def layer_summary(tables: pd.DataFrame, metrics_by_model: Mapping[str, Mapping],
                  taps_by_model: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """One row per (model, m, layer), in network order, with the baselines first in each block.

    eps_ce_half_log2: the first grid eps at which the mean optimal cross-entropy reaches
    log(2)/2 (NaN when it never does on the grid). ce/zero_one_at_eval_eps: the losses at the
    grid eps nearest the model's robust-evaluation budget (the training budget of adversarially
    trained models, the config's evaluation eps for benign ones).
    """
    rows = []
    group_cols = ["dataset", "pairset", "method", "m"]
    for (dataset, pairset, method, m), block in tables.groupby(group_cols, sort=False):
        models = [o for o in dict.fromkeys(block["model"]) if o != INPUT_MODEL]
        for model in models:
            metrics = metrics_by_model.get(model, {"model": model})
            taps = (taps_by_model or {}).get(model, [])
            layers = network_order(block.loc[block["model"] == model, "layer"], taps)
            eval_eps = float(metrics.get("robust_eval", {}).get("eps", float("nan")))
            entries = [(INPUT_MODEL, layer) for layer in BASELINES if layer in set(block.loc[block["model"] == INPUT_MODEL, "layer"])]
            entries += [(model, layer) for layer in layers]
            for owner, layer in entries:
                curve = _curve(block, owner, layer)
                reached = curve.loc[curve["ce_mean"] >= LOG2 / 2 - 1e-12, "eps"]
                row = select_eps(curve, eval_eps) if math.isfinite(eval_eps) else None
                rows.append({
                    "dataset": dataset, "pairset": pairset, "method": method, "model": model,
                    "training": training_label(metrics) if "train" in metrics else "?", "m": int(m),
                    "layer": layer, "projections": int(curve["projections"].max()),
                    "eps_ce_half_log2": float(reached.min()) if len(reached) else float("nan"),
                    "eval_eps": eval_eps,
                    "grid_eps": float(row["eps"]) if row is not None else float("nan"),
                    "ce_at_eval_eps": float(row["ce_mean"]) if row is not None else float("nan"),
                    "zero_one_at_eval_eps": float(row["zero_one_mean"]) if row is not None else float("nan"),
                    "ce_at_max_eps": float(curve["ce_mean"].iloc[-1]),
                    "clean_acc": float(metrics.get("clean_test_accuracy", float("nan"))),
                    "robust_acc": float(metrics.get("robust_test_accuracy", float("nan"))),
                })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summary_html(summary: pd.DataFrame, eps_max: float | None = None) -> str:
    """A small self-contained HTML page: one table per (model, m), layers in network order."""
    def fmt(v, digits=3):
        return "&ndash;" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"

    never = f"&gt; {eps_max:g}" if eps_max is not None else "never"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>layerbound: layer-by-layer summary</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:60em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f0f0f0}"
        "td:first-child,th:first-child{text-align:left}tr.baseline td{color:#555;font-style:italic}</style></head><body>",
        "<h1>Layer-by-layer summary</h1>",
        "<p>For each model and projection dimension m, layers in network order (the input-space baselines first, in "
        "italics). <b>eps at CE = log(2)/2</b>: the first budget of the eps grid at which the optimal cross-entropy "
        "loss (mean over projections) reaches half its ceiling log 2; larger means a more robust feature extractor. "
        "<b>CE / 0-1 at eval eps</b>: the optimal losses at the grid budget nearest the model's robust-evaluation "
        "budget (its training eps for PGD and TRADES models). Lower losses mean more robust features.</p>",
    ]
    for (dataset, pairset, method, model, m), block in summary.groupby(["dataset", "pairset", "method", "model", "m"], sort=False):
        first = block.iloc[0]
        parts.append(f"<h2>{html.escape(str(dataset))} / {html.escape(str(model))} ({html.escape(str(first['training']))}), "
                     f"m = {int(m)}</h2>")
        parts.append(f"<p>pairs {html.escape(str(pairset))}, collision method {html.escape(str(method))}; "
                     f"clean test accuracy {fmt(first['clean_acc'])}, robust test accuracy {fmt(first['robust_acc'])} "
                     f"(PGD, eps = {fmt(first['eval_eps'], 2)}).</p>")
        layers = block.loc[~block["layer"].isin(BASELINES)]
        if len(layers):
            late = layers["eps_ce_half_log2"].fillna(np.inf)
            ce = layers["ce_at_eval_eps"].fillna(np.inf)
            best = ", ".join(html.escape(str(v)) for v in layers.loc[late == late.max(), "layer"])
            lowest = ", ".join(html.escape(str(v)) for v in layers.loc[ce == ce.min(), "layer"])
            reach = never if not math.isfinite(late.max()) else f"eps = {late.max():g}"
            parts.append(f"<p>Latest to reach log(2)/2 (most robust): <b>{best}</b> ({reach}); lowest cross-entropy "
                         f"at eps = {fmt(first['grid_eps'], 2)}: <b>{lowest}</b> ({fmt(ce.min())}).</p>")
        parts.append("<table><tr><th>layer</th><th>projections</th><th>eps at CE = log(2)/2</th>"
                     f"<th>CE at eps = {fmt(first['grid_eps'], 2)}</th><th>0-1 at eps = {fmt(first['grid_eps'], 2)}</th>"
                     "<th>CE at largest eps</th></tr>")
        for _, row in block.iterrows():
            cls = " class='baseline'" if row["layer"] in BASELINES else ""
            half = never if not math.isfinite(row["eps_ce_half_log2"]) else f"{row['eps_ce_half_log2']:g}"
            parts.append(f"<tr{cls}><td>{html.escape(layer_display(row['layer'], int(m)))}</td><td>{int(row['projections'])}</td>"
                         f"<td>{half}</td><td>{fmt(row['ce_at_eval_eps'])}</td><td>{fmt(row['zero_one_at_eval_eps'])}</td>"
                         f"<td>{fmt(row['ce_at_max_eps'])}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --- output -----------------------------------------------------------------------------------------

def save(fig: Figure, *paths: str | Path, dpi: int = 150) -> None:
    """Write the figure to each path; the format follows the suffix (.png, .pdf, .svg)."""
    for path in paths:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, metadata=None if path.suffix != ".png" else {"Software": "layerbound"})
