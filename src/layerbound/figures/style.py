"""What every figure shares: labels, colours, titles, access to the loss tables, and saving.

Bands and error bars are the min-max over random projections (a layer with m >= n_j, and the
input baseline, are not projected: one "projection", no band).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..collide.options import adversary_label
from ..core.names import INPUT_LAYERS

BASELINES = INPUT_LAYERS
LOG2 = math.log(2.0)
# Baselines are black: dashed for the input space, dotted for its random projection.
BASELINE_STYLE = {"input": {"color": "black", "linestyle": "--"}, "input_rp": {"color": "black", "linestyle": ":"}}
TRAINING_NAMES = {"benign": "benign", "pgd": "PGD", "trades": "TRADES"}
TRAINING_COLORS = {"benign": "tab:gray", "pgd": "tab:blue", "trades": "tab:orange"}
SPREAD = ("95% bootstrap interval over the S examples per class and the projections "
          "(min-max over projections where a table has no bootstrap)")
NORM_LABEL = r"$\|\tilde{{x}} - x\|$ = {:.3f}"
NORM_PRIME_LABEL = r"$\|\tilde{{x}}' - x'\|$ = {:.3f}"


# --- labels ----------------------------------------------------------------------------------

def training_label(metrics: Mapping) -> str:
    """'benign', 'PGD-2', 'TRADES-0.5' (with the norm when it is not l2), from a metrics sidecar;
    'loaded' for a model loaded instead of trained (its training is not known)."""
    if "source" in metrics and "train" not in metrics:
        return "loaded"
    train = metrics.get("train", {})
    method = train.get("method", "?")
    if method == "benign":
        return "benign"
    label = f"{TRAINING_NAMES.get(method, method)}-{float(train.get('eps', 0.0)):g}"
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


def figure_title(metrics: Mapping, m: int | Sequence[int], projections: int, pairset: str | None, what: str,
           threat: str | None = None) -> str:
    name = metrics.get("model", "?")
    arch = metrics.get("arch", "?")
    dataset = metrics.get("dataset", "?")
    ms = f"m={m}" if isinstance(m, (int, np.integer)) else "m=" + ", ".join(str(v) for v in m)
    line1 = f"{dataset} - {name} ({arch}, {training_label(metrics)}): {what}"
    line2 = f"{ms}, {projections} random projection{'s' if projections != 1 else ''} (none where m >= n_j)"
    if pairset:
        line2 += f", pairs {pairset}"
    if threat:
        line2 += f"; adversary: {threat}"
    acc = _accuracy_text(metrics)
    return line1 + "\n" + line2 + (f"\n{acc}" if acc else "")


# --- ordering and colours ---------------------------------------------------------------------

def layer_colors(n: int, cmap: str = "viridis") -> list[tuple[float, float, float, float]]:
    """n colours of a sequential colormap, first layer darkest (the light yellow end is cut off)."""
    if n <= 0:
        return []
    positions = np.linspace(0.0, 0.85, n) if n > 1 else np.array([0.0])
    cm = colormaps[cmap]
    return [cm(float(p)) for p in positions]


# --- table access ------------------------------------------------------------------------------

def layer_curve(tables: pd.DataFrame, model: str, layer: str, m: int | None = None) -> pd.DataFrame:
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


def projection_count(tables: pd.DataFrame) -> int:
    return int(tables["projections"].max()) if len(tables) else 0


def threat_model_label(tables: pd.DataFrame) -> str:
    """The threat model of the tables' distances ('l2 in [0, 1]^n'), several joined by ' / '."""
    unboxed = adversary_label(None)   # tables from before boxes existed
    if "adversary" not in tables or not len(tables):
        return unboxed
    return " / ".join(sorted({str(a) for a in tables["adversary"].fillna(unboxed)}))


def band(table: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) band of a loss column: the bootstrap interval, or min-max without one."""
    lo, hi = f"{column}_lo", f"{column}_hi"
    if lo in table and table[lo].notna().all():
        return table[lo].to_numpy(dtype=float), table[hi].to_numpy(dtype=float)
    return table[f"{column}_min"].to_numpy(dtype=float), table[f"{column}_max"].to_numpy(dtype=float)


# --- output -----------------------------------------------------------------------------------------

def save(fig: Figure, *paths: str | Path, dpi: int = 150) -> None:
    """Write the figure to each path, atomically; the format follows the suffix (.png, .pdf, .svg)."""
    from ..core.store import atomic_write

    for path in paths:
        path = Path(path)
        kind = path.suffix.lstrip(".")
        metadata = {"Software": "layerbound"} if kind == "png" else None
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=kind, dpi=dpi, metadata=metadata))
