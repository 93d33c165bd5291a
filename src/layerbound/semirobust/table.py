"""Paper 003's Table 1 from the study's results: a CSV and a self-contained HTML table.

One row per (study, f_b size, estimator): the architecture and dataset, the evaluation attack and
its budget (`eval_eps`: paper 003 runs one study per budget, 8, 16 and 32 / 255), the robust and regular
models, f_b's layers, Acc* (the robust network's adversarial test accuracy), Acc_sr (f_a* with the
regular f_b), Acc~ (the best trial's), the best trial, Diff. = Acc~ - Acc*, whether a trial came
within the tolerance k of Acc*, and rho of every f_b layer counted back from the output:
`rho_n` = I(h_{n-1}; h_n) (the logits), `rho_n-1` = I(h_{n-2}; h_{n-1}), ..., as in the paper's
columns rho_n, rho_{n-3}, ... Those rho are the best trial's I_{j,t} (the trial the paper reports);
the study's JSON also holds every trial's and their minimum (Algorithm 1's rho_j).
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable

import pandas as pd

LEADING_COLUMNS = ["study", "model", "dataset", "robust", "regular", "fb_layers", "f_b", "acc_star", "acc_sr",
                   "acc_best", "best_trial", "difference", "reached", "tolerance", "trials", "epochs_run",
                   "estimator", "eval_attack", "eval_eps", "train_attack", "train_examples", "test_examples"]


def rho_column(offset: int) -> str:
    """rho_n, rho_n-1, ...: the layer `offset` layers before the output."""
    return "rho_n" if offset == 0 else f"rho_n-{offset}"


def rho_by_offset(record: dict[str, Any], estimator: str, which: str = "rho_best") -> dict[int, float]:
    """{x: rho of the layer f(n - x)} for x = 0 (the logits) .. fb_layers - 1 (f_b's first layer)."""
    values = record[which][estimator]
    taps = [nxt for _, nxt in record["layer_pairs"]]
    return {len(taps) - 1 - i: float(values[tap]) for i, tap in enumerate(taps)}


def table1(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    records = sorted(records, key=lambda r: (r["study"], int(r["fb_layers"])))
    for record in records:
        for estimator in record["estimators"]:
            row = {"study": record["study"], "model": record["arch"], "dataset": record["dataset"],
                   "robust": record["robust"], "regular": record["regular"], "fb_layers": int(record["fb_layers"]),
                   "f_b": " ".join(record["f_b"]), "acc_star": record["acc_star"], "acc_sr": record["acc_sr"],
                   "acc_best": record["best_accuracy"], "best_trial": int(record["best_trial"]),
                   "difference": record["difference"], "reached": bool(record["reached"]),
                   "tolerance": record["tolerance"], "trials": len(record["trials"]),
                   "epochs_run": sum(len(t["accuracies"]) for t in record["trials"]), "estimator": estimator,
                   "eval_attack": record["eval_attack"]["label"], "eval_eps": float(record["eval_attack"]["eps"]),
                   "train_attack": record["train_attack"]["label"],
                   "train_examples": int(record["train_examples"]), "test_examples": int(record["test_examples"])}
            row.update({rho_column(x): v for x, v in rho_by_offset(record, estimator).items()})
            rows.append(row)
    depth = max((int(r["fb_layers"]) for r in records), default=0)
    return pd.DataFrame(rows, columns=LEADING_COLUMNS + [rho_column(x) for x in range(depth)])


def table1_html(table: pd.DataFrame) -> str:
    """Table 1 as a small HTML page that says what every column measures."""
    def fmt(v, digits=3):
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "&ndash;"
        return f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))

    rho_cols = [c for c in table.columns if c.startswith("rho_n")]
    attacks = sorted(set(table["eval_attack"])) if len(table) else []
    train_attacks = sorted(set(table["train_attack"])) if len(table) else []
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>layerbound: paper 003 Table 1</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
        "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f0f0f0}"
        "td:nth-child(-n+4),th:nth-child(-n+4){text-align:left}</style></head><body>",
        "<h1>Subnetwork robustness (paper 003, Table 1)</h1>",
        "<p>Each row is one run of Algorithm 1: the robust network (f_a*, f_b*) is the adversarially trained model "
        "<i>robust</i>, f_b is its last <i>f_b layers</i> weight layers (listed), f_a* the layers before it, kept frozen "
        "(weights and BatchNorm statistics unchanged). <b>Acc*</b>: adversarial test accuracy of the robust network; "
        "<b>Acc_sr</b>: that of f_a* followed by the f_b of the benign model <i>regular</i>; <b>Acc~</b>: the best "
        "trial's, after T trials (<i>trials</i>) of adversarially retraining f_b from the regular weights for at most E "
        "epochs each, a trial stopping at the first epoch with Acc* - Acc &le; k; <b>Diff.</b> = Acc~ - Acc*; "
        "<b>reached</b>: some trial came within k. Every accuracy is measured under the evaluation attack on the first "
        "<i>test images</i> of the dataset's test split (true labels), as fractions. "
        "<b>rho_n-x</b>: the best trial's class-conditional mutual information "
        "sum_y pi(y) I(h_{n-x-1}; h_{n-x} | y) in bits between the outputs of consecutive layers (h_n the logits, "
        "h_{n-x} the layer x before them), on the evaluation attack's perturbed test images, each class's term "
        "estimated from that class's images alone with the row's <i>estimator</i> (edge_paper003: the modified EDGE "
        "paper 003's code runs; edge: EDGE as its authors' release 4.3.1 runs it; ksg: Kraskov et al., k = 3). "
        "Paper 003's EDGE returns several bits for independent data in many dimensions (1.5 at 10 and 2.9 at 50 "
        "Gaussian coordinates with 1,000 samples, more with more of either; docs/mutual_info.md); KSG is "
        "reported beside it.</p>",
        f"<p>Evaluation attack: {'; '.join(html.escape(a) for a in attacks) or '&ndash;'}. Training attack of f_b: "
        f"{'; '.join(html.escape(a) for a in train_attacks) or '&ndash;'}. Pixels in [0, 1], no normalization outside "
        "the model; the attacks keep the images in the pixel box.</p>",
        "<table><tr><th>study</th><th>model</th><th>dataset</th><th>f_b layers</th><th>estimator</th><th>eval eps</th><th>Acc*</th>"
        "<th>Acc_sr</th><th>Acc~</th><th>best trial</th><th>Diff.</th><th>reached</th><th>k</th><th>trials</th>"
        "<th>train / test images</th>" + "".join(f"<th>{c.replace('rho_n', '&rho;<sub>n')}</sub></th>" for c in rho_cols)
        + "</tr>",
    ]
    for _, row in table.iterrows():
        text = [html.escape(str(v)) for v in (row["study"], row["model"], row["dataset"],
                                               f"{int(row['fb_layers'])} ({row['f_b']})", row["estimator"])]
        numbers = [f"{row['eval_eps']:.4g}", fmt(row["acc_star"]), fmt(row["acc_sr"]), fmt(row["acc_best"]), str(int(row["best_trial"])),
                   f"{row['difference']:+.3f}", "yes" if row["reached"] else "no", fmt(row["tolerance"]),
                   str(int(row["trials"])), f"{int(row['train_examples'])} / {int(row['test_examples'])}"]
        rhos = ["&ndash;" if pd.isna(row[c]) else fmt(float(row[c])) for c in rho_cols]
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in text + numbers + rhos) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"
