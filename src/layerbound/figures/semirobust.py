"""Paper 003's Figures 1-2: rho against depth, counted back from the output layer.

x = 0 is rho_n = I(h_{n-1}; h_n) (h_n the logits), x = 1 the pair one layer earlier, ... up to f_b's
first layer, as in the paper's x-axis f(n - x). Each panel is one estimator; each curve one study
result (the best trial's I_{j,t}).

- `rho_by_study_figure`: every study at its largest f_b (paper 003 Figure 1: several models and
  datasets at a large f_b);
- `rho_by_fb_figure`: one study at each of its f_b sizes (Figure 2: ResNet50 on CIFAR-10 at 4, 8,
  12, 16 f_b layers).
"""

from __future__ import annotations

from typing import Any, Sequence

from matplotlib.figure import Figure

from .style import layer_colors
from ..semirobust.mutual_info import LABELS
from ..semirobust.table import rho_by_offset


def _estimators(records: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(e for r in records for e in r["estimators"]))


def _what(records: Sequence[dict[str, Any]]) -> str:
    attacks = sorted({r["eval_attack"]["label"] for r in records})
    images = sorted({int(r["test_examples"]) for r in records})
    return (f"on {'/'.join(map(str, images))} test images under {'; '.join(attacks)}; "
            "best trial's I(h_(n-x-1); h_(n-x) | y), bits")


def _rho_figure(curves: list[tuple[str, dict[str, Any]]], title: str) -> Figure:
    records = [r for _, r in curves]
    estimators = _estimators(records)
    fig = Figure(figsize=(5.0 * len(estimators), 3.8), layout="constrained")
    axes = fig.subplots(1, len(estimators), squeeze=False)[0]
    colors = layer_colors(len(curves))
    for ax, estimator in zip(axes, estimators):
        for color, (label, record) in zip(colors, curves):
            if estimator not in record["rho_best"]:
                continue
            points = sorted(rho_by_offset(record, estimator).items())
            ax.plot([x for x, _ in points], [v for _, v in points], "o-", color=color, label=label)
        ax.set_xlabel("x: layer f(n - x), counted back from the logits")
        ax.set_ylabel(f"rho ({LABELS.get(estimator, estimator)}), bits")
        ax.set_title(LABELS.get(estimator, estimator), fontsize=9)
        ax.set_ylim(bottom=0)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}\n{_what(records)}", fontsize=9)
    return fig


def rho_by_study_figure(records: Sequence[dict[str, Any]]) -> Figure:
    """Every study at its largest f_b (paper 003 Figure 1)."""
    largest: dict[str, dict[str, Any]] = {}
    for record in records:
        if record["study"] not in largest or record["fb_layers"] > largest[record["study"]]["fb_layers"]:
            largest[record["study"]] = record
    curves = [(f"{r['study']}: {r['arch']} on {r['dataset']}, f_b = last {r['fb_layers']}, eps {r['eval_attack']['eps']:.4g}", r)
              for _, r in sorted(largest.items())]
    return _rho_figure(curves, "Paper 003 Fig. 1: rho of the retrained f_b's layers, each study at its largest f_b")


def rho_by_fb_figure(records: Sequence[dict[str, Any]]) -> Figure:
    """One study at each of its f_b sizes (paper 003 Figure 2)."""
    studies = {r["study"] for r in records}
    if len(studies) != 1:
        raise ValueError(f"the f_b-size figure shows one study, got {sorted(studies)}")
    records = sorted(records, key=lambda r: r["fb_layers"])
    first = records[0]
    curves = [(f"f_b = last {r['fb_layers']} ({r['f_b'][0]}..)", r) for r in records]
    return _rho_figure(curves, f"Paper 003 Fig. 2: rho by f_b size, {first['study']} ({first['arch']} on "
                               f"{first['dataset']}, robust {first['robust']}, f_b from {first['regular']})")
