"""Paper 001, Section 6.1 and Figure 5: the loss FAB reaches on the pair set against the optimal
collision loss at the logit layer.

The FAB points come from `attacks.fab_pairs` (FAB-l2, minimum norm, on the full model, for each
of the pair set's 2S training examples), the collision loss from the loss table of layer `logits`.
Both are averages over the same 2S examples and both use two classes: the FAB curve is the
cross-entropy of the model's two-class classifier (the logits of the pair set's two classes,
softmax over those two) at the FAB point where its norm is at most eps, else at the clean point.

Neither curve bounds the other. Both are at most the model's own two-class adversarial
cross-entropy on these points: the collision loss because the model's two-class classifier is one
classifier on the logits (where the logits are not projected, m >= 10), the FAB loss because it
is the loss at one feasible point per example, found by minimizing the norm of a misclassifying
(10-class) perturbation, not by maximizing the loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..bounds.fab_curve import fab_loss_curve
from .style import LOG2, projection_count, figure_title, threat_model_label, band

__all__ = ["fab_comparison_table", "fab_figure", "COMPARISON_COLUMNS"]

COMPARISON_COLUMNS = ["dataset", "pairset", "method", "model", "layer", "m", "eps", "fab_ce", "fab_ce_all_classes",
                      "fab_within_eps", "fab_to_pair_class", "collision_ce", "collision_ce_lo", "collision_ce_hi",
                      "fab_minus_collision", "examples"]


def fab_comparison_table(points: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Both curves on the loss table's eps grid (COMPARISON_COLUMNS), from the FAB points and the
    keyed loss table of layer logits."""
    table = table.sort_values("eps")
    if set(table["layer"]) != {"logits"} or table[["model", "m"]].drop_duplicates().shape[0] != 1:
        raise ValueError("the FAB comparison needs the loss table of layer logits of one model at one m")
    eps = table["eps"].to_numpy(dtype=np.float64)
    low, high = band(table, "ce")
    fab = fab_loss_curve(points, eps)
    reached = points["norm"].to_numpy(dtype=np.float64)[None, :] <= eps[:, None]
    # FAB is untargeted: its point may cross into a third class, where the two-class classifier
    # still prefers the true class. Which examples it moved into the pair set's other class:
    labels = points["label"].to_numpy()
    other = np.where(labels == labels.min(), labels.max(), labels.min())
    to_pair = points["found"].to_numpy(dtype=bool) & (points["prediction_fab"].to_numpy() == other)
    first = table.iloc[0]
    return pd.DataFrame({
        "dataset": first["dataset"], "pairset": first["pairset"], "method": first["method"], "model": first["model"],
        "layer": "logits", "m": int(first["m"]), "eps": eps, "fab_ce": fab,
        "fab_ce_all_classes": fab_loss_curve(points, eps, "ce_all"), "fab_within_eps": reached.mean(axis=1),
        "fab_to_pair_class": (reached & to_pair[None, :]).mean(axis=1),
        "collision_ce": table["ce_mean"].to_numpy(dtype=np.float64), "collision_ce_lo": low, "collision_ce_hi": high,
        "fab_minus_collision": fab - table["ce_mean"].to_numpy(dtype=np.float64), "examples": len(points),
    }, columns=COMPARISON_COLUMNS)


def fab_figure(comparison: pd.DataFrame, table: pd.DataFrame, metrics: Mapping, classes: Sequence[int] | None = None) -> Figure:
    """Figure 5: the FAB loss and the optimal collision loss at the logits against eps."""
    first = comparison.iloc[0]
    eps = comparison["eps"].to_numpy()
    fig = Figure(figsize=(9.0, 6.2), layout="constrained")
    ax = fig.subplots()
    pair = f"classes {classes[0]} and {classes[1]}" if classes is not None else "the pair set's two classes"
    ax.plot(eps, comparison["fab_ce"], color="tab:red", linewidth=1.8, marker="o", markersize=2.5,
            label="FAB-l2 (minimum norm, full model): two-class CE at the FAB point if within eps, else clean")
    ax.plot(eps, comparison["fab_ce_all_classes"], color="tab:red", linewidth=1.2, linestyle="--",
            label="the same FAB points, cross-entropy over all classes (for reference)")
    line, = ax.plot(eps, comparison["collision_ce"], color="tab:blue", linewidth=1.8,
                    label=f"optimal collision loss, layer logits (m={int(first['m'])})")
    low, high = comparison["collision_ce_lo"].to_numpy(), comparison["collision_ce_hi"].to_numpy()
    if (high > low).any():
        ax.fill_between(eps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.axhline(LOG2, color="0.6", linewidth=0.8, zorder=0)
    ax.annotate("log 2", (eps.max(), LOG2), xytext=(-2, 3), textcoords="offset points", ha="right", va="bottom",
                fontsize=8, color="0.4")
    train = metrics.get("train", {})
    if train.get("method", "benign") != "benign" and train.get("eps"):
        ax.axvline(float(train["eps"]), color="tab:red", linewidth=0.8, linestyle="-.", alpha=0.7,
                   label=rf"training $\epsilon$ = {float(train['eps']):g}")
    ax.set_xlabel(r"adversarial budget $\epsilon$ ($\ell_2$, pixel space)")
    ax.set_ylabel(f"cross-entropy (mean over the {int(first['examples'])} examples of {pair})")
    top = max(float(np.nanmax(comparison[["fab_ce", "fab_ce_all_classes", "collision_ce_hi"]].to_numpy())), LOG2)
    ax.set_ylim(-0.02 * top, top * 1.12)
    ax.set_xlim(0, eps.max() if eps.max() > 0 else 1)
    ax.grid(True, alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=7.5, ncols=2)
    fig.suptitle(figure_title(metrics, int(first["m"]), projection_count(table), str(first["pairset"]),
                     "FAB loss vs optimal collision loss at the logits (paper 001, Fig. 5)", threat_model_label(table))
                 + "\nband: 95% bootstrap interval of the collision loss over the S examples per class", fontsize=9)
    return fig
