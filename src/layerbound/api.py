"""The Python API: the layer-by-layer analysis of any PyTorch model, without the workflow.

    from layerbound import api
    model = api.load_model({"source": "torchvision", "arch": "resnet18", "weights": "r18.pt",
                            "small_inputs": True}, dataset="mnist5k")
    api.taps(model)                                    # {layer name: n_j}, in network order
    pairs = api.sample_pairs("mnist5k", classes=(3, 7), per_class=4)
    found = api.collisions(model, "layer1", pairs, m=10, projections=2)
    curve = api.loss_curve(found, eps=[0, 0.5, 1, 2])  # optimal losses of A o f_j per eps
    fig = api.plot_loss_curves({"layer1": curve, "input": api.loss_curve(api.input_distances(pairs), [0, 0.5, 1, 2])})

Each step is the workflow's own code: `load_model` builds what a config entry describes (or
rebuilds a checkpoint, or wraps a module you already have), `collisions` runs paper 001's
Algorithm 1 on f_j composed with seeded Gaussian projections A (m x n_j; none when m >= n_j)
and keeps, per pair, the distance of a collision certified in float64 (collide/certify.py; at
most the midpoint bound ||x - x'|| / 2),
`loss_curve` computes the optimal cross-entropy and 0-1 losses of the conflict graphs over the
budgets (paper 001, Algorithm 2), with bootstrap intervals, and `plot_loss_curves` draws them
as the workflow's layer figure. The bound is for every classifier h(A f_j(x)) on the sampled
points against an l2 adversary of budget eps whose images stay in `box` ([0, 1]^n by default).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .collide import features, projection
from .models import checkpoint, loaded, sources
from .data import info as dataset_info
from . import config as configuration
from .data import pairs as pairsets
from .core import threads as threads_module
from .collide import CollisionOptions, certify, closed_form
from .collide.options import SearchOptions, adversary_label, check_smooth_iters
from .core.errors import ConfigError

__all__ = ["LayerDistances", "load_model", "wrap", "taps", "sample_pairs", "make_pairs", "collisions",
           "input_distances", "loss_curve", "plot_loss_curves"]


def load_model(source: Mapping[str, Any] | str | Path, dataset: str | None = None,
               entry: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """A model with taps by name, in eval mode.

    `source` is either a config entry's keys without `dataset` (`{"source": "torchvision",
    "arch": "resnet18", "weights": "r18.pt", "small_inputs": True, "normalization": {"mean": [...],
    "std": [...]}}`, or source python / robustbench; docs/models_and_api.md) with the
    `dataset` whose inputs and classes it takes, or the path of a layerbound checkpoint
    (results/models/...pt: a trained registry model or an imported one). Weights come from local
    files only; a file that does not match the architecture fails naming the file and the keys.

    A checkpoint never chooses the code that runs: one made from a python factory loads only with
    `entry`, the entry (with `dataset`) that names the factory, and any checkpoint given an entry
    must have been made from it (its weights file aside: the checkpoint holds the weights).
    """
    if isinstance(source, (str, Path)):
        return checkpoint.load(source, spec=None if entry is None else _entry_spec(entry, dataset, files=False))
    spec = _entry_spec(source, dataset)
    meta = dataset_info.info(spec["dataset"])
    return loaded.build(spec, meta.input_shape, meta.num_classes)


def _entry_spec(source: Mapping[str, Any], dataset: str | None, files: bool = True) -> dict[str, Any]:
    """The spec (sources.spec) of a model entry, validated as the config validates its entries."""
    entry = {**dict(source), **({"dataset": dataset} if dataset is not None else {})}
    if "dataset" not in entry:
        raise ConfigError("load_model: give the dataset whose inputs and classes the model takes")
    if "source" not in entry:
        raise ConfigError("load_model: the entry needs `source` (torchvision, python or robustbench)")
    configuration.fill_loaded_defaults(entry)
    configuration.check_loaded("load_model", entry, files=files)
    return sources.spec(entry)


def wrap(module: torch.nn.Module, input_shape: Sequence[int], num_classes: int,
         normalization: Mapping[str, Sequence[float]] | None = None) -> torch.nn.Module:
    """A module you already have, with taps by name (and an optional normalization inside it).
    The module is put in eval mode and its in-place activations (ReLU(inplace=True)) turned off,
    in place: taps read intermediate outputs, which in-place operations would overwrite."""
    spec = {"source": "module", "arch": type(module).__name__, "normalization": normalization}
    loaded.check_traceable(module, f"wrap: {type(module).__name__}")
    loaded.disable_inplace(module)
    return loaded.LoadedNet(module, spec, tuple(input_shape), num_classes).eval()


def taps(model: torch.nn.Module) -> dict[str, int]:
    """Every layer name of the model with its width n_j, in network order."""
    return model.tap_widths()


def sample_pairs(dataset: str, classes: tuple[int, int] = (3, 7), per_class: int = 8, seed: int = 0,
                 data_dir: str | Path = "data") -> pairsets.PairSet:
    """S = per_class training examples of each of two classes (all S x S pairs), seeded as the workflow does."""
    return pairsets.sample(dataset, classes, per_class, seed, data_dir=data_dir)


def make_pairs(x_a, x_b, classes: tuple[int, int] = (0, 1)) -> pairsets.PairSet:
    """A pair set of your own inputs: x_a, S examples of class classes[0], and x_b, S of
    classes[1], each a tensor or array (S, *input_shape) of finite floats (images (S, C, H, W) in
    the model's input range, before the normalization a loaded model holds); all S x S pairs are
    analyzed."""
    return pairsets.from_tensors(x_a, x_b, classes)


def _check_pairs(pairs, where: str) -> None:
    """A pair set (api.sample_pairs, api.make_pairs, or any object with its fields): S = per_class
    finite floating-point images in each of x_a and x_b, all of one shape."""
    missing = [name for name in ("x_a", "x_b", "per_class", "num_pairs", "input_shape", "gather")
               if not hasattr(pairs, name)]
    if missing:
        raise TypeError(f"{where}: pairs must be a pair set (api.sample_pairs or api.make_pairs); "
                        f"{type(pairs).__name__} has no {', '.join(missing)}")
    if not (isinstance(pairs.x_a, torch.Tensor) and isinstance(pairs.x_b, torch.Tensor)):
        raise TypeError(f"{where}: the pair set's x_a and x_b must be torch tensors (api.make_pairs converts arrays)")
    problem = pairsets.inputs_problem(pairs.x_a, pairs.x_b, pairs.per_class)
    if problem:
        raise ValueError(f"{where}: the pair set {problem}")


def _check_model(model, pairs: pairsets.PairSet, where: str) -> None:
    if not (hasattr(model, "tap_widths") and hasattr(model, "input_shape")):
        raise TypeError(f"{where}: the model has no taps; pass api.load_model(...) or api.wrap(module, input_shape, "
                        "num_classes)")
    if tuple(model.input_shape) != tuple(pairs.input_shape):
        raise ValueError(f"{where}: the pairs' images have shape {tuple(pairs.input_shape)}, the model takes "
                         f"{tuple(model.input_shape)}")


@dataclass
class LayerDistances:
    """The collision distances of one layer: `distances` (projections, S, S), the pairs' midpoint
    bounds ||x - x'|| / 2 (S, S), whether each search converged, what they are for, and how each
    collision was certified."""

    layer: str
    m: int
    n_j: int
    projected: bool
    distances: np.ndarray
    midpoint_bounds: np.ndarray
    converged: np.ndarray
    adversary: str
    candidates: np.ndarray | None = None  # per collision: 0 the method's best, k its k-th earlier candidate,
    certified_in: str = "float64"         # -1 the midpoint (collide/certify.py); the certificates' dtype


def collisions(model: torch.nn.Module, layer: str, pairs: pairsets.PairSet, m: int = 10, projections: int = 1,
               seed: int = 0, box: tuple[float, float] | None = (0.0, 1.0), step: str = "auto",
               max_iter: int | None = None, batch_size: int = 64, name: str = "model",
               device: str | torch.device = "cpu", threads: int | None = None, smooth_iters: int = 0) -> LayerDistances:
    """Collision distances of every pair under A o f_j, for `projections` Gaussian projections A
    (m x n_j, seeded from seed, name, layer, m and the projection index as in the workflow; none
    when m >= n_j), by paper 001's Algorithm 1 with the given step control ("merit", "decay", or
    "auto": merit on maps of at most 50 features, decay on wider ones) and at most `max_iter` Jacobian evaluations per
    pair (None: 15 with merit, 40 with decay); with `smooth_iters` > 0 merit's first evaluations
    search the map with softplus for its ReLU modules (collision.search.smooth_iters, docs/search.md;
    below max_iter). `box` keeps the colliding
    images in [lo, hi]^n (None: unboxed). The model is not changed: a copy in eval mode on
    `device` is searched, and a float64 copy certifies every collision (collide/certify.py); the
    features must be finite at every image of the pairs. `candidates` says per
    collision whether the search's best was certified (0), an earlier candidate (k > 0) or the
    midpoint (-1) was used instead. m, projections and batch_size must be what a config may hold
    (collision.m, .projections, .batch_size). The search runs on `threads` CPU threads (None: a
    collision shard's, layerbound.core.threads: 1), torch's setting restored after.
    """
    configuration.check_options("collision", "collisions", m=m, projections=projections, batch_size=batch_size)
    _check_pairs(pairs, "collisions")
    _check_model(model, pairs, "collisions")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"collisions: seed must be an integer in [0, 2^63), not {seed!r}")
    if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer))
                                 or max_iter < 1):
        raise ValueError(f"collisions: max_iter must be None or an integer of at least 1, not {max_iter!r}")
    try:
        check_smooth_iters(smooth_iters, step, max_iter)
    except ValueError as err:
        raise ValueError(f"collisions: {err}") from None
    threads_module.check(threads, "collisions")
    with threads_module.limited(threads or threads_module.for_job("collide_shard")):
        return _collisions(model, layer, pairs, m, projections, seed, box,
                           SearchOptions(step=step, max_iter=max_iter, smooth_iters=smooth_iters), batch_size, name,
                           device)


def _collisions(model, layer, pairs, m, projections, seed, box, search, batch_size, name, device):
    dev = torch.device(device)
    options = CollisionOptions(method="jacobian", box=box, batch_size=batch_size, method_options=search)
    dtype = getattr(torch, options.dtype)
    net = features.prepare_model(copy.deepcopy(model), dtype, dev)   # the caller's model stays as it was
    f = features.feature_map(net, layer, dev)
    k = np.arange(pairs.num_pairs)
    x, x_prime = (t.to(device=dev, dtype=dtype) for t in pairs.gather(k))
    with torch.no_grad():
        images = torch.cat([pairs.x_a, pairs.x_b])
        finite, n_j = [], 0
        for i in range(0, len(images), batch_size):
            at = f(images[i:i + batch_size].to(device=dev, dtype=dtype))
            finite.append(torch.isfinite(at.flatten(1)).all(1).cpu())
            n_j = int(at.shape[1])
        bad = int((~torch.cat(finite)).sum())
    if bad:
        raise ValueError(f"collisions: the features at {layer!r} are not finite at {bad} of the pairs' "
                         f"{len(images)} images (non-finite weights, or a division by zero in the model?)")
    projected = not projection.is_identity(m, n_j)
    # The float64 copy that certifies the collisions (collide/certify.py), made only when needed.
    make_float64 = functools.cache(lambda: features.float64_map(copy.deepcopy(model), layer, dev))
    distances, converged, candidates = [], [], []
    for p in range(projections if projected else 1):
        A = projection.draw(seed, name, layer, m, p, n_j, dtype=dtype, device=dev) if projected else None
        g = f if A is None else (lambda u, A=A: f(u) @ A.T)
        exact_map, exact_dtype, certified_in = certify.certification_map(make_float64, A, g, dtype, x)
        result = certify.certify(exact_map, x, x_prime, options.run(f, A, x, x_prime, return_points=True),
                                 box, exact_dtype, features.piecewise_linear(model))
        distances.append(result.distance.numpy())
        converged.append(result.converged.numpy())
        candidates.append(result.candidate.numpy())
    S = pairs.per_class
    bounds = closed_form.input_distance(*pairs.gather(k)).numpy().reshape(S, S)
    return LayerDistances(layer, int(m), n_j, projected, np.stack(distances).reshape(-1, S, S), bounds,
                          np.stack(converged).reshape(-1, S, S), adversary_label(box),
                          np.stack(candidates).reshape(-1, S, S), certified_in)


def input_distances(pairs: pairsets.PairSet, box: tuple[float, float] | None = (0.0, 1.0)) -> LayerDistances:
    """The input-space baseline: d = ||x - x'|| / 2 for every pair (the midpoint collides; in the box too)."""
    _check_pairs(pairs, "input_distances")
    k = np.arange(pairs.num_pairs)
    d = closed_form.input_distance(*pairs.gather(k)).numpy().reshape(1, pairs.per_class, pairs.per_class)
    n0 = int(np.prod(pairs.input_shape))
    return LayerDistances("input", n0, n0, False, d, d[0], np.ones_like(d, dtype=bool), adversary_label(box))


def loss_curve(found: LayerDistances, eps: Sequence[float], bootstrap: int | None = None) -> pd.DataFrame:
    """Optimal cross-entropy and 0-1 losses per budget eps (one row each; losses.TABLE_COLUMNS):
    the mean over projections, its spread and a 95% bootstrap interval (`bootstrap` replicates,
    the schema's losses.bootstrap by default; 0 for none). eps and bootstrap must be what a config
    may hold (losses.eps as a list, losses.bootstrap)."""
    from .bounds import losses

    configuration.check_options("losses", "loss_curve", eps=list(np.atleast_1d(eps)),
                                **({} if bootstrap is None else {"bootstrap": bootstrap}))
    replicates = configuration.defaults("losses")["bootstrap"] if bootstrap is None else bootstrap
    return losses.loss_table(found.distances, np.asarray(eps, dtype=float), replicates, found.adversary,
                             found.candidates)


def plot_loss_curves(curves: Mapping[str, pd.DataFrame], model: str = "model", dataset: str = "?", m: int = 0,
                     arch: str = "?", path: str | Path | None = None):
    """The workflow's layer figure (cross-entropy and 0-1 loss against eps, one curve per layer in
    the given order; the key "input" is drawn as the input-space baseline). Saved as PNG and PDF
    when `path` (without suffix) is given; returns the matplotlib figure."""
    from .figures import layers as figures, style as figures_style
    from .bounds import losses
    from .core.names import INPUT_MODEL

    keyed = {(dataset, "api", "jacobian", INPUT_MODEL if layer == "input" else model, layer, m): table
             for layer, table in curves.items()}
    order = [layer for layer in curves if layer != "input"]
    metrics = {"model": model, "dataset": dataset, "arch": arch, "source": "api"}
    fig = figures.loss_curves_figure(losses.summarize(keyed), order, metrics, m)
    if path is not None:
        figures_style.save(fig, f"{path}.png", f"{path}.pdf")
    return fig
