"""Paper 001, Figure 3: the colliding examples x, x~, x~', x' of one pair at every layer."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..collide.options import adversary_label
from .style import NORM_LABEL, NORM_PRIME_LABEL, layer_display, training_label, _accuracy_text

__all__ = ["collision_rows", "collisions_figure"]

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
            "adversary": adversary_label(json.loads(attrs.get("options_json", "{}")).get("box")),
        })
    return rows


def _image(a: np.ndarray) -> tuple[np.ndarray, dict]:
    """(C, H, W) pixels in [0, 1] as an imshow array; values outside [0, 1] (collisions of an unboxed
    adversary) are clipped for display."""
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
             + r"; $d = \max(\|\tilde{x} - x\|, \|\tilde{x}' - x'\|)$"
             + "; adversary: " + " / ".join(sorted({row["adversary"] for row in rows})))
    acc = _accuracy_text(metrics)
    fig.suptitle(title + (f"\n{acc}" if acc else ""), fontsize=9.5)
    return fig
