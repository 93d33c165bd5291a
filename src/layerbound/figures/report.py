"""The report's layer-by-layer summary: a table (CSV) and a small self-contained HTML page."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..models.architectures import network_order
from .style import BASELINES, LOG2, layer_curve, threat_model_label, band, layer_display, select_eps, training_label
from ..core.names import INPUT_MODEL

__all__ = ["SUMMARY_COLUMNS", "layer_summary", "summary_html", "claims_html"]

SUMMARY_COLUMNS = ["dataset", "pairset", "method", "adversary", "model", "training", "m", "layer", "projections",
                   "eps_ce_half_log2", "eps_ce_half_log2_lo", "eps_ce_half_log2_hi", "eval_eps", "grid_eps",
                   "ce_at_eval_eps", "ce_at_eval_eps_lo", "ce_at_eval_eps_hi", "zero_one_at_eval_eps",
                   "ce_at_max_eps", "clean_acc", "robust_acc", "headline_attack", "headline_norm", "headline_eps",
                   "headline_examples", "headline_robust_acc", "fell_back", "fell_back_midpoint"]


def layer_summary(tables: pd.DataFrame, metrics_by_model: Mapping[str, Mapping],
                  taps_by_model: Mapping[str, Sequence[str]] | None = None,
                  attacks_by_model: Mapping[str, Mapping] | None = None) -> pd.DataFrame:
    """One row per (model, m, layer), in network order, with the baselines first in each block.

    eps_ce_half_log2: the first grid eps at which the mean optimal cross-entropy reaches
    log(2)/2 (NaN when it never does on the grid); its _lo / _hi: the first eps at which the
    upper / lower end of the 95% bootstrap interval reaches it (the range the sampling noise
    allows). ce/zero_one_at_eval_eps: the losses at the grid eps nearest the model's
    robust-evaluation budget (the training budget of adversarially trained models, the config's
    evaluation eps for benign ones), the cross-entropy with its bootstrap interval.
    robust_acc: the training sidecar's PGD robust accuracy; headline_*: the attack stage's
    headline (AutoAttack at the training budget on the first `headline_examples` test images)
    from `attacks_by_model` (the sidecars results/attacks/{dataset}/{model}.json), NaN without one.
    fell_back / fell_back_midpoint: how many of the layer's collisions (pairs times projections)
    report an earlier candidate or the midpoint / the midpoint, because the search's best
    collision could not be certified (collide/certify.py).
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
            head = (attacks_by_model or {}).get(model, {}).get("headline", {})
            headline = {"headline_attack": head.get("label", ""), "headline_norm": head.get("norm", ""),
                        "headline_eps": float(head.get("eps", float("nan"))),
                        "headline_examples": float((attacks_by_model or {}).get(model, {}).get("examples", float("nan"))),
                        "headline_robust_acc": float(head.get("robust_accuracy", float("nan")))}
            entries = [(INPUT_MODEL, layer) for layer in BASELINES if layer in set(block.loc[block["model"] == INPUT_MODEL, "layer"])]
            entries += [(model, layer) for layer in layers]
            for owner, layer in entries:
                curve = layer_curve(block, owner, layer)
                low, high = band(curve, "ce")
                row = select_eps(curve, eval_eps) if math.isfinite(eval_eps) else None
                row_low, row_high = band(row.to_frame().T, "ce") if row is not None else ([np.nan], [np.nan])
                rows.append({
                    "dataset": dataset, "pairset": pairset, "method": method, "adversary": threat_model_label(curve),
                    "model": model,
                    "training": training_label(metrics) if "train" in metrics or "source" in metrics else "?", "m": int(m),
                    "layer": layer, "projections": int(curve["projections"].max()),
                    "eps_ce_half_log2": _first_reaching(curve["eps"], curve["ce_mean"].to_numpy()),
                    "eps_ce_half_log2_lo": _first_reaching(curve["eps"], high),
                    "eps_ce_half_log2_hi": _first_reaching(curve["eps"], low),
                    "eval_eps": eval_eps,
                    "grid_eps": float(row["eps"]) if row is not None else float("nan"),
                    "ce_at_eval_eps": float(row["ce_mean"]) if row is not None else float("nan"),
                    "ce_at_eval_eps_lo": float(row_low[0]), "ce_at_eval_eps_hi": float(row_high[0]),
                    "zero_one_at_eval_eps": float(row["zero_one_mean"]) if row is not None else float("nan"),
                    "ce_at_max_eps": float(curve["ce_mean"].iloc[-1]),
                    "clean_acc": float(metrics.get("clean_test_accuracy", float("nan"))),
                    "robust_acc": float(metrics.get("robust_test_accuracy", float("nan"))),
                    **headline,
                    "fell_back": int(curve["fell_back"].max()),
                    "fell_back_midpoint": int(curve["fell_back_midpoint"].max()),
                })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _robust_text(row: pd.Series, fmt) -> str:
    """The model's robust test accuracy: the attack stage's headline (AutoAttack at the training
    budget) where there is one, then the training sidecar's PGD."""
    pgd = (f"PGD robust test accuracy {fmt(row['robust_acc'])} (training sidecar, eps = {fmt(row['eval_eps'], 2)}, "
           "images kept in the pixel box)")
    if not math.isfinite(float(row.get("headline_robust_acc", float("nan")))):
        return pgd + "."
    return (f"<b>robust test accuracy {fmt(row['headline_robust_acc'])}</b> under "
            f"{html.escape(str(row['headline_attack']))} at eps = {fmt(row['headline_eps'], 2)} "
            f"({html.escape(str(row['headline_norm']))}, the first {int(row['headline_examples'])} test images, "
            f"in the pixel box; torchattacks); {pgd}.")


def _first_reaching(eps: pd.Series, values: np.ndarray) -> float:
    """The first eps at which values reach log(2)/2 (NaN when they never do on the grid)."""
    reached = np.asarray(eps, dtype=float)[np.asarray(values, dtype=float) >= LOG2 / 2 - 1e-12]
    return float(reached.min()) if len(reached) else float("nan")


def within_noise(values: pd.Series, lows: pd.Series, highs: pd.Series, best: str) -> pd.Series:
    """Which entries the sampling noise does not separate from the best one ('max' or 'min' of
    values): their 95% bootstrap intervals [low, high] overlap the best entry's."""
    pick = values.fillna(np.inf)   # a layer that never reaches log(2)/2 is the latest
    i = pick.idxmax() if best == "max" else pick.idxmin()
    lo, hi = lows.fillna(np.inf), highs.fillna(np.inf)
    return (lo <= hi[i]) & (hi >= lo[i])


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
        "italics). Every number is a lower bound on the loss that any classifier built on the map A&#8728;f_j "
        "(f_j itself where a layer is not projected) must pay on the 2S sampled training points against the stated "
        "l2 adversary; it is not a bound for classifiers on f_j when A is a projection, nor on other points. "
        "<b>eps at CE = log(2)/2</b>: the first budget of the eps grid at which the optimal cross-entropy loss "
        "(mean over projections) reaches half its ceiling log 2; a larger value means the two classes' sampled points "
        "collide only at larger budgets under that map. <b>CE / 0-1 at eval eps</b>: the optimal losses at the grid "
        "budget nearest the model's robust-evaluation budget (its training eps for PGD and TRADES models). "
        "Brackets are 95% bootstrap intervals over the S examples per class and the projections; layers marked "
        "&#8776; are not separated from the extreme layer by that noise (their intervals overlap). Every collision "
        "behind these numbers is certified: re-evaluated in float64 and polished until its residual is at float64 "
        "round-off of the features; <b>fell back</b> counts the collisions (pairs times projections) for which the "
        "search's best could not be certified and an earlier candidate or, in parentheses, the midpoint was used.</p>",
    ]
    for (dataset, pairset, method, model, m), block in summary.groupby(["dataset", "pairset", "method", "model", "m"], sort=False):
        first = block.iloc[0]
        parts.append(f"<h2>{html.escape(str(dataset))} / {html.escape(str(model))} ({html.escape(str(first['training']))}), "
                     f"m = {int(m)}</h2>")
        parts.append(f"<p>pairs {html.escape(str(pairset))}, collision method {html.escape(str(method))}, adversary "
                     f"{html.escape(str(first['adversary']))}; clean test accuracy {fmt(first['clean_acc'])}; "
                     + _robust_text(first, fmt) + "</p>")
        layers = block.loc[~block["layer"].isin(BASELINES)]
        late_near = ce_near = pd.Series(False, index=block.index)
        if len(layers):
            late = layers["eps_ce_half_log2"].fillna(np.inf)
            ce = layers["ce_at_eval_eps"].fillna(np.inf)
            late_near = within_noise(late, layers["eps_ce_half_log2_lo"], layers["eps_ce_half_log2_hi"], "max")
            ce_near = within_noise(ce, layers["ce_at_eval_eps_lo"], layers["ce_at_eval_eps_hi"], "min")
            best = ", ".join(html.escape(str(v)) for v in layers.loc[late == late.max(), "layer"])
            lowest = ", ".join(html.escape(str(v)) for v in layers.loc[ce == ce.min(), "layer"])
            late_others = [html.escape(str(v)) for v in layers.loc[late_near & (late != late.max()), "layer"]]
            ce_others = [html.escape(str(v)) for v in layers.loc[ce_near & (ce != ce.min()), "layer"]]
            reach = never if not math.isfinite(late.max()) else f"eps = {late.max():g}"
            parts.append(f"<p>Latest to reach log(2)/2: <b>{best}</b> ({reach}); within the sampling noise of it: "
                         f"{', '.join(late_others) or 'no other layer'}. Lowest cross-entropy at eps = "
                         f"{fmt(first['grid_eps'], 2)}: <b>{lowest}</b> ({fmt(ce.min())}); within the sampling noise of "
                         f"it: {', '.join(ce_others) or 'no other layer'}.</p>")
        parts.append("<table><tr><th>layer</th><th>projections</th><th>eps at CE = log(2)/2 [95%]</th>"
                     f"<th>CE at eps = {fmt(first['grid_eps'], 2)} [95%]</th><th>0-1 at eps = {fmt(first['grid_eps'], 2)}</th>"
                     "<th>CE at largest eps</th><th>fell back (midpoint)</th></tr>")
        for index, row in block.iterrows():
            cls = " class='baseline'" if row["layer"] in BASELINES else ""

            def eps_text(v):
                return never if not math.isfinite(v) else f"{v:g}"
            half = (f"{eps_text(row['eps_ce_half_log2'])} [{eps_text(row['eps_ce_half_log2_lo'])}, "
                    f"{eps_text(row['eps_ce_half_log2_hi'])}]{' &#8776;' if late_near.get(index, False) else ''}")
            ce_text = (f"{fmt(row['ce_at_eval_eps'])} [{fmt(row['ce_at_eval_eps_lo'])}, {fmt(row['ce_at_eval_eps_hi'])}]"
                       f"{' &#8776;' if ce_near.get(index, False) else ''}")
            parts.append(f"<tr{cls}><td>{html.escape(layer_display(row['layer'], int(m)))}</td><td>{int(row['projections'])}</td>"
                         f"<td>{half}</td><td>{ce_text}</td><td>{fmt(row['zero_one_at_eval_eps'])}</td>"
                         f"<td>{fmt(row['ce_at_max_eps'])}</td>"
                         f"<td>{int(row['fell_back'])} ({int(row['fell_back_midpoint'])})</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


VERDICT_COLORS = {"holds": "#d9f2d9", "contradicted": "#f8d7d7", "undecided": "#fff3cd", "not tested": "#eeeeee"}


def claims_html(claims: pd.DataFrame) -> str:
    """A small self-contained HTML page of the claims table (layerbound.bounds.claim_statistics), one
    section per claim: the paper's statement, the statistic, and a row per tested instance."""
    def num(v) -> str:
        v = float(v)
        return "&ndash;" if math.isnan(v) else (f"{v:+.4f}" if math.isfinite(v) else ("+inf" if v > 0 else "-inf"))

    counts = claims["verdict"].value_counts()
    tally = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in VERDICT_COLORS)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>layerbound: claims</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:70em}table{border-collapse:collapse;margin-bottom:1em}"
        "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f0f0f0}"
        "td.n{text-align:right;font-variant-numeric:tabular-nums}</style></head><body>",
        "<h1>The papers' findings on this run</h1>",
        "<p>Each finding of papers 001 and 002 that the run's data can test, as a statistic the paper predicts to be "
        "positive (or, for a statement of equivalence, near zero), with our value and a 95% bootstrap interval "
        "over the sampled examples (the same resamples in every compared layer and model) and the projections. "
        "<b>holds</b>: the interval lies above 0; <b>contradicted</b>: below 0; <b>undecided</b>: it contains 0. "
        "The statistics were chosen before any was computed on real results (docs/claims.md). A: the optimal "
        "cross-entropy averaged over the eps grid; E: the budget at which it reaches log(2)/2; D: the mean "
        f"collision distance. Rows: {html.escape(tally)}.</p>",
    ]
    for claim_id, block in claims.groupby("claim", sort=False):
        first = block.iloc[0]
        parts.append(f"<h2>{html.escape(str(claim_id))}</h2><p>Paper {html.escape(str(first['paper']))}, "
                     f"{html.escape(str(first['where']))}: &ldquo;{html.escape(str(first['statement']))}&rdquo;. "
                     f"Statistic: {html.escape(str(first['statistic']))}.</p>")
        parts.append("<table><tr><th>models</th><th>layers</th><th>method</th><th>m</th><th>value</th>"
                     "<th>95% interval</th><th>verdict</th><th>note</th></tr>")
        for _, row in block.iterrows():
            color = VERDICT_COLORS.get(row["verdict"], "#ffffff")
            cells = [row["models"], row["layers"], row["collision_method"], row["m"]]
            text = ["" if isinstance(c, float) and math.isnan(c) else html.escape(str(c)) for c in cells]
            tested = row["verdict"] != "not tested"
            parts.append("<tr>" + "".join(f"<td>{t}</td>" for t in text)
                         + f"<td class='n'>{num(row['value']) if tested else ''}</td>"
                         + f"<td class='n'>{f'[{num(row.lo)}, {num(row.hi)}]' if tested else ''}</td>"
                         + f"<td style='background:{color}'>{html.escape(str(row['verdict']))}</td>"
                         + f"<td>{'' if pd.isna(row['note']) else html.escape(str(row['note']))}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
