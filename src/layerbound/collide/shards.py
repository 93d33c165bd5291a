"""Collision shards and merged distance files: the unit of work of the collision stage.

A shard (path pattern core.paths.PATTERNS["shard"]) holds the pairs k in [chunk * chunk_size,
(chunk + 1) * chunk_size) of the S x S grid, for one projection p of one (model, layer, m).
Columns (one row per pair): pair (flat index k = i * S + j), i, j, distance, midpoint_bound
(||x - x'|| / 2, which no distance may exceed), objective, residual, feature_gap, iterations,
converged, and the certificate's record (collide/certify.py: every distance is that of a
collision certified in float64): search_distance and search_residual (the method's own best
candidate, before polishing), polish_steps (Jacobian evaluations) and candidate (0 the method's
best, k its k-th earlier candidate, -1 the midpoint); optionally points/pair, points/x_tilde,
points/x_tilde_prime (the colliding examples of the first `keep_points` pairs of the grid). Attributes: the unit
(dataset, pairset, method = the collision method, model, layer, m, n_j, projected, projection,
projection_seed, chunk, chunk_size, num_pairs, per_class, solver), the provenance
(experiment_seed, revision of the collision method, config_digest of the collision options and
that revision, options_json, checkpoint_sha256, pairs_sha256, torch_version, layerbound_version,
dtype, device, certified_in: "float64", or the dtype and reason where the model cannot run in
float64). A shard does not record how many
projections the configuration asks for, so adding one leaves the existing shards valid.

The merged file (core.paths.PATTERNS["distances"]) holds distances, residuals, objectives, feature_gaps,
search_distances, search_residuals (projections, S, S) float64, midpoint_bounds (S, S), iterations
and polish_steps (int32), candidates (int8) and converged (bool) of the same shape,
projection_seeds (projections,), the points of the shards (points/pair, points/x_tilde and
points/x_tilde_prime of shape (projections, K, C, H, W)), and the shards' common attributes plus
projections, the list of devices and solvers, and the path and sha256 of every shard. Merging
refuses missing pairs, duplicated pairs, non-finite values and shards whose attributes disagree,
naming the file.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import h5py
import numpy as np
import torch

from .. import __version__
from . import certify, closed_form, features, projection
from ..models import checkpoint
from ..data import info as dataset_info
from ..data import pairs as pairsets
from .options import CollisionOptions
from .base import Features, verify_tol_for
from ..core.device import describe as describe_device
from ..core.device import select as select_device
from ..core.errors import ShardError
from ..core.names import INPUT_LAYERS, INPUT_MODEL
from .units import Shard, is_projected
from .shard_checks import COLUMNS, FLOAT_COLUMNS, check_merged, check_structure
from ..core.store import file_digest, plain, write_h5

SHARD_FORMAT = "layerbound-shard-3"
MERGED_FORMAT = "layerbound-distances-3"
# A distance is a max of two norms of a collision no farther than the midpoint's, so it lies in
# [0, ||x - x'|| / 2]; the search computes it in float32, so above the bound is allowed this
# relative slack (float32 rounding), and nothing more.
BOUND_RTOL = 1e-5
# Attributes every shard of one merged file must share (the rest: projection, projection_seed,
# chunk, device, solver).
AGREE = ("format", "dataset", "pairset", "method", "model", "layer", "m", "n_j", "projected",
         "chunk_size", "num_pairs", "per_class", "experiment_seed", "revision", "config_digest", "options_json",
         "checkpoint_sha256", "pairs_sha256", "torch_version", "layerbound_version", "dtype", "certified_in")


# --- computing one shard -----------------------------------------------------------------------

def chunk_pairs(chunk: int, chunk_size: int, num_pairs: int) -> np.ndarray:
    """The flat pair indices k of a chunk: [chunk * chunk_size, (chunk + 1) * chunk_size) of the grid."""
    start = int(chunk) * int(chunk_size)
    if not 0 <= start < num_pairs:
        raise ValueError(f"chunk {chunk} of size {chunk_size} is outside the {num_pairs} pairs")
    return np.arange(start, min(start + int(chunk_size), int(num_pairs)), dtype=np.int64)


def compute(s: Shard, *, pairs_file: str | Path, options: CollisionOptions, experiment_seed: int,
            checkpoint_file: str | Path | None = None, arch: str | None = None, spec: dict[str, Any] | None = None,
            padding: str | None = None, device: str | torch.device = "auto", log: Callable[[str], None] = print,
            timings: dict[str, float] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The columns and attributes of shard `s` (nothing written). `spec`: the model entry of a
    loaded or source-trained model, which rebuilds its network (checkpoint.load). A registry
    checkpoint (`arch` given, no `spec`) must have `padding` (default "same"). `timings`, when
    given, receives the wall seconds of the whole shard ("shard") and of the certification in it
    ("certify")."""
    if s.collision_method != options.method:
        raise ValueError(f"shard method {s.collision_method!r} differs from the options' method {options.method!r}")
    started = time.perf_counter()
    dev = select_device(str(device)) if not isinstance(device, torch.device) else device
    log(describe_device(dev))
    dtype = getattr(torch, options.dtype)
    pairs = pairsets.load(pairs_file)
    if pairs.name != s.pairset or pairs.dataset != s.dataset:
        raise ValueError(f"{pairs_file} holds pair set {pairs.dataset}/{pairs.name}, not {s.dataset}/{s.pairset}")
    k = chunk_pairs(s.chunk, options.chunk_size, pairs.num_pairs)
    x, x_prime = pairs.gather(k)
    keep = k < options.keep_points
    n0 = int(np.prod(pairs.input_shape))

    if s.model == INPUT_MODEL:
        if s.layer not in INPUT_LAYERS:
            raise ValueError(f"model {INPUT_MODEL!r} has layers {INPUT_LAYERS}, not {s.layer!r}")
        net, spare, n_j, checkpoint_sha = None, None, n0, ""
        linear_pieces = True   # the identity: a zero derivative is exact
        f: Features = lambda u: u.flatten(1)  # noqa: E731
    else:
        if checkpoint_file is None:
            raise ValueError(f"model {s.model!r} needs its checkpoint")
        if not Path(checkpoint_file).is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint_file} does not exist: train model {s.model!r} first "
                                    "(`layerbound train`, the workflow's train_model rule)")
        # The network must take the pair set's images and have the dataset's classes, not only the
        # configured architecture: another class count would give a logits tap of another width.
        expect = {"input_shape": pairs.input_shape, "num_classes": dataset_info.info(pairs.dataset).num_classes}
        if arch:
            expect["arch"] = arch
            if spec is None:   # a registry network: its padding decides its layers' widths
                expect["padding"] = padding or "same"
        net = checkpoint.load(checkpoint_file, expect=expect, spec=spec)
        if s.layer not in net.taps + net.pre_activation_taps:
            raise ValueError(f"model {s.model!r} ({net.arch}) has no tap {s.layer!r}; taps: {', '.join(net.taps)}")
        n_j = net.tap_widths()[s.layer]
        linear_pieces = features.piecewise_linear(net)   # a registry network: its zero derivatives are exact
        spare = copy.deepcopy(net) if dtype != torch.float64 else None   # for the float64 certificates
        net = features.prepare_model(net, dtype, dev)
        checkpoint_sha = file_digest(checkpoint_file)
        f = features.feature_map(net, s.layer, dev)

    projected = is_projected(s.model, s.layer, s.m, n_j)
    if s.projection < 0 or (not projected and s.projection != 0):
        raise ValueError(f"{s.model}/{s.layer} at m={s.m} (n_j={n_j}) has no projection {s.projection}"
                         + ("" if projected else ": it is not projected, its only projection is 0"))
    seed = projection.seed(experiment_seed, s.model, s.layer, s.m, s.projection)
    A = projection.matrix(seed, s.m, n_j, dtype=dtype, device=dev) if projected else None
    g: Features = f if A is None else (lambda u: f(u) @ A.T)

    x_d, x_prime_d = x.to(device=dev, dtype=dtype), x_prime.to(device=dev, dtype=dtype)
    verify_tol = verify_tol_for(dtype, getattr(options.method_options, "verify_tol", None))
    # The affine closed forms ignore a box: with one, only the identity keeps its closed form (the
    # midpoint of two points in a box lies in it), and the other affine maps are searched.
    boxed = options.box is not None
    # Every collision, whatever found it, is certified in float64 (collide/certify.py).
    make_float64 = None if spare is None else (lambda: features.float64_map(spare, s.layer, dev))
    exact_map, exact_dtype, certified_in = certify.certification_map(make_float64, A, g, dtype, x_d)
    if certified_in != "float64":
        log(f"{s.model}/{s.layer}: collisions certified in {certified_in}")
    if s.model == INPUT_MODEL and (s.layer == "input" or A is None or not boxed):
        solver = "closed_form_input" if s.layer == "input" else "closed_form_input_rp"
        result = closed_form.collisions(g, None if A is None else A.double().cpu(), x_d, x_prime_d, verify_tol)
    elif not boxed and net is not None and net.pre_activation_taps and s.layer == net.pre_activation_taps[0]:
        # f_j is affine (the first layer before its activation): the closed form of paper 002.
        solver = "closed_form_affine"
        L = closed_form.linear_part(g, pairs.input_shape, dtype=dtype, device=dev)
        result = closed_form.collisions(g, L, x_d, x_prime_d, verify_tol)
    else:
        solver = s.collision_method
        result = options.run(f, A, x_d, x_prime_d, return_points=True)
    searched = time.perf_counter()
    result = certify.certify(exact_map, x_d, x_prime_d, result, options.box, exact_dtype, linear_pieces)
    certified = time.perf_counter()

    i, j = pairs.grid(k)
    midpoint_bound = closed_form.input_distance(x, x_prime).numpy()
    columns = {
        "pair": k, "i": i, "j": j,
        "distance": result.distance.numpy(), "midpoint_bound": midpoint_bound,
        "objective": result.objective.numpy(),
        "residual": result.residual.numpy(), "feature_gap": result.feature_gap.numpy(),
        "iterations": result.iterations.numpy().astype(np.int32), "converged": result.converged.numpy().astype(bool),
        "search_distance": result.search_distance.numpy(), "search_residual": result.search_residual.numpy(),
        "polish_steps": result.polish_steps.numpy().astype(np.int32),
        "candidate": result.candidate.numpy().astype(np.int8),
    }
    if keep.any():
        sel = torch.from_numpy(np.flatnonzero(keep))
        columns["points/pair"] = k[keep]
        columns["points/x_tilde"] = result.x_tilde[sel].float().numpy()
        columns["points/x_tilde_prime"] = result.x_tilde_prime[sel].float().numpy()
    attrs = {
        "format": SHARD_FORMAT, "dataset": s.dataset, "pairset": s.pairset, "method": s.collision_method, "model": s.model,
        "layer": s.layer, "m": int(s.m), "n_j": int(n_j), "projected": int(projected),
        "projection": int(s.projection), "projection_seed": int(seed),
        "chunk": int(s.chunk), "chunk_size": int(options.chunk_size), "num_pairs": int(pairs.num_pairs),
        "per_class": int(pairs.per_class), "solver": solver, "experiment_seed": int(experiment_seed),
        "revision": options.revision(), "config_digest": options.digest(), "options_json": options.to_json(),
        "checkpoint_sha256": checkpoint_sha, "pairs_sha256": file_digest(pairs_file),
        "torch_version": str(torch.__version__), "layerbound_version": __version__,
        "dtype": options.dtype, "device": str(dev), "certified_in": certified_in,
    }
    elapsed = time.perf_counter() - started
    if timings is not None:
        timings.update(shard=elapsed, certify=certified - searched)
    log(f"{s.model}/{s.layer} m={s.m} p={s.projection} chunk={s.chunk}: {len(k)} pairs by {solver} on {dev} "
        f"in {elapsed:.1f} s ({certified - searched:.1f} s certifying); mean distance {columns['distance'].mean():.4f} "
        f"(midpoint bound {(midpoint_bound.mean()):.4f}), "
        f"converged {columns['converged'].mean():.0%}, mean iterations {columns['iterations'].mean():.1f}; "
        f"certified in {str(exact_dtype).removeprefix('torch.')}: {int((columns['candidate'] != 0).sum())} pairs fell back "
        f"({int((columns['candidate'] < 0).sum())} to the midpoint), {int(columns['polish_steps'].sum())} polishing "
        "Jacobians")
    return columns, attrs


# --- writing, reading, merging -----------------------------------------------------------------

def write(path: str | Path, columns: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Write a shard (or merged file) atomically."""
    write_h5(path, columns, attrs)


def run(s: Shard, out: str | Path, **kwargs: Any) -> Path:
    """Compute shard `s` and write it to `out` (see `compute` for the arguments)."""
    columns, attrs = compute(s, **kwargs)
    write(out, columns, attrs)
    return Path(out)


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A shard's columns (and points, if any) and attributes; ShardError naming the file if it is bad."""
    path = Path(path)
    if not path.exists():
        raise ShardError(f"shard {path} does not exist")
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: plain(v) for k, v in h5.attrs.items()}
            if attrs.get("format") != SHARD_FORMAT:
                raise ShardError(f"{path} is not a layerbound shard of this version (format "
                                 f"{attrs.get('format')!r}, expected {SHARD_FORMAT!r}); delete it and run the "
                                 "workflow again to recompute it")
            missing = [c for c in COLUMNS if c not in h5]
            if missing:
                raise ShardError(f"shard {path} lacks the columns {', '.join(missing)}")
            columns = {c: h5[c][()] for c in COLUMNS}
            if "points" in h5:
                for name in ("pair", "x_tilde", "x_tilde_prime"):
                    columns[f"points/{name}"] = h5["points"][name][()]
    except (OSError, KeyError) as err:
        raise ShardError(f"shard {path} cannot be read ({err}): it is corrupt or was cut short; delete it and run "
                         "the workflow again to recompute it") from None
    check_structure(path, columns, attrs)
    return columns, attrs


def merge(shard_files: Iterable[str | Path], out: str | Path, projections: int | None = None) -> Path:
    """Merge the shards of one (dataset, pairset, method, model, layer, m) into one file.

    `projections` is the number of projections expected (default: one more than the largest
    index among the shards); every projection must then have all its pairs. The shards do not
    record it, so adding a projection to the configuration leaves the existing shards valid.

    Refuses (ShardError naming the file) shards that disagree on any attribute of AGREE, carry a
    projection seed other than the derived one, hold pairs outside their chunk, non-finite values,
    duplicated pairs, or leave pairs of some projection missing.
    """
    shards = [(Path(p), *read(p)) for p in shard_files]
    if not shards:
        raise ShardError("no shards to merge")
    ref_path, _, ref = shards[0]
    N, S, chunk_size = ref["num_pairs"], ref["per_class"], ref["chunk_size"]
    P = int(projections) if projections else 1 + max(a["projection"] for _, _, a in shards)
    if not ref["projected"] and P != 1:
        raise ShardError(f"{ref['model']}/{ref['layer']} at m={ref['m']} is not projected: it has one projection, not {P}")
    for path, columns, attrs in shards:
        for key in AGREE:
            if attrs.get(key) != ref.get(key):
                raise ShardError(f"shard {path} disagrees with {ref_path} on {key}: {attrs.get(key)!r} vs {ref.get(key)!r}")
        p = attrs["projection"]
        if not 0 <= p < P:
            raise ShardError(f"shard {path} is projection {p}, outside 0..{P - 1}")
        expected_seed = projection.seed(attrs["experiment_seed"], attrs["model"], attrs["layer"], attrs["m"], p)
        if attrs["projection_seed"] != expected_seed:
            raise ShardError(f"shard {path} has projection seed {attrs['projection_seed']}, "
                             f"not the one derived for projection {p} ({expected_seed})")
        allowed = chunk_pairs(attrs["chunk"], chunk_size, N)
        k = columns["pair"]
        outside = k[(k < allowed[0]) | (k > allowed[-1])]
        if len(outside):
            raise ShardError(f"shard {path} (chunk {attrs['chunk']}) holds pairs outside its chunk, e.g. {outside[:5].tolist()}")
        if not (np.array_equal(columns["i"], k // S) and np.array_equal(columns["j"], k % S)):
            raise ShardError(f"shard {path} has (i, j) columns that do not match its pair indices")
        for c in FLOAT_COLUMNS:
            bad = ~np.isfinite(columns[c])
            if bad.any():
                raise ShardError(f"shard {path} has non-finite {c} for pairs {k[bad][:5].tolist()}")
        d, bound = columns["distance"], columns["midpoint_bound"]
        bad = outside_bounds(d, bound)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ShardError(f"shard {path}: pair {k[row]} (i={k[row] // S}, j={k[row] % S}) has distance {float(d[row])!r}, "
                             f"outside [0, {float(bound[row])!r}] (0 to its midpoint bound ||x - x'||/2); delete the "
                             "shard and run the workflow again")

    owner = np.full((P, N), -1, dtype=np.int64)
    merged = {c: np.zeros((P, N), dtype=np.float64) for c in FLOAT_COLUMNS}
    iterations = np.zeros((P, N), dtype=np.int32)
    converged = np.zeros((P, N), dtype=bool)
    polish_steps = np.zeros((P, N), dtype=np.int32)
    candidate = np.zeros((P, N), dtype=np.int8)
    points: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {p: {} for p in range(P)}
    for index, (path, columns, attrs) in enumerate(shards):
        p, k = attrs["projection"], columns["pair"]
        values, counts = np.unique(k, return_counts=True)
        if (counts > 1).any():
            raise ShardError(f"shard {path} holds pair {values[counts > 1][0]} more than once")
        taken = owner[p, k] >= 0
        if taken.any():
            other = shards[owner[p, k[taken][0]]][0]
            raise ShardError(f"pair {k[taken][0]} of projection {p} is in both {other} and {path} (duplicated shard?)")
        owner[p, k] = index
        for c in FLOAT_COLUMNS:
            merged[c][p, k] = columns[c]
        iterations[p, k] = columns["iterations"]
        converged[p, k] = columns["converged"]
        polish_steps[p, k] = columns["polish_steps"]
        candidate[p, k] = columns["candidate"]
        if "points/pair" in columns:
            for row, pair in enumerate(columns["points/pair"]):
                points[p][int(pair)] = (columns["points/x_tilde"][row], columns["points/x_tilde_prime"][row])
    missing = np.argwhere(owner < 0)
    if len(missing):
        p, k = (int(v) for v in missing[0])
        chunk = k // chunk_size
        # Name the file where the workflow's layout (.../m{m}/p{p}/c{chunk}.h5) says it should be.
        in_layout = ref_path.parent.name == f"p{ref['projection']}" and ref_path.name == f"c{ref['chunk']}.h5"
        expected = str(ref_path.parent.parent / f"p{p}" / f"c{chunk}.h5") if in_layout else f"p{p}/c{chunk}"
        raise ShardError(f"projection {p} is missing {int((owner[p] < 0).sum())} of its {N} pairs (first: pair {k}); "
                         f"they belong to shard {expected} (projection {p}, chunk {chunk}), which is not among "
                         f"the inputs or is incomplete")

    shape = (P, S, S)
    out_columns: dict[str, np.ndarray] = {
        "distances": merged["distance"].reshape(shape), "midpoint_bounds": merged["midpoint_bound"][0].reshape(S, S),
        "residuals": merged["residual"].reshape(shape),
        "objectives": merged["objective"].reshape(shape), "feature_gaps": merged["feature_gap"].reshape(shape),
        "iterations": iterations.reshape(shape), "converged": converged.reshape(shape),
        "search_distances": merged["search_distance"].reshape(shape),
        "search_residuals": merged["search_residual"].reshape(shape),
        "polish_steps": polish_steps.reshape(shape), "candidates": candidate.reshape(shape),
        "projection_seeds": np.array([projection.seed(ref["experiment_seed"], ref["model"], ref["layer"], ref["m"], p)
                                      for p in range(P)], dtype=np.int64),
    }
    point_pairs = sorted(points[0])
    if point_pairs:
        if any(sorted(points[p]) != point_pairs for p in range(P)):
            raise ShardError(f"the shards of {out} store colliding points for different pairs in different projections")
        out_columns["points/pair"] = np.array(point_pairs, dtype=np.int64)
        out_columns["points/x_tilde"] = np.stack([np.stack([points[p][k][0] for k in point_pairs]) for p in range(P)])
        out_columns["points/x_tilde_prime"] = np.stack([np.stack([points[p][k][1] for k in point_pairs]) for p in range(P)])
    attrs = {key: ref[key] for key in AGREE}
    attrs.update({
        "projections": P,
        "format": MERGED_FORMAT,
        "devices": json.dumps(sorted({a["device"] for _, _, a in shards})),
        "solvers": json.dumps(sorted({a["solver"] for _, _, a in shards})),
        "shards": json.dumps([str(path) for path, _, _ in shards]),
        "shard_sha256": json.dumps([file_digest(path) for path, _, _ in shards]),
    })
    write(out, out_columns, attrs)
    return Path(out)


def outside_bounds(distances: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Where a distance is negative or above its midpoint bound beyond BOUND_RTOL (or NaN)."""
    return ~((distances >= 0) & (distances <= bounds * (1 + BOUND_RTOL)))


def check_distances(distances: np.ndarray, bounds: np.ndarray, where: str) -> None:
    """Refuse distances that no collision can have: negative, or above the pair's midpoint bound
    ||x - x'|| / 2 (beyond BOUND_RTOL). `distances` is (projections, S, S), `bounds` (S, S); the
    error names `where` and the first such pair."""
    limit = np.broadcast_to(bounds, distances.shape)
    bad = outside_bounds(distances, limit)
    if bad.any():
        p, i, j = (int(v) for v in np.argwhere(bad)[0])
        raise ShardError(f"{where}: pair (i={i}, j={j}) of projection {p} has distance {float(distances[p, i, j])!r}, "
                         f"outside [0, {float(limit[p, i, j])!r}] (0 to its midpoint bound ||x - x'||/2); "
                         "delete the file and run the workflow again")


def read_merged(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and attributes of a merged distance file, its distances checked against their bounds."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: plain(v) for k, v in h5.attrs.items()}
            if attrs.get("format") != MERGED_FORMAT:
                raise ShardError(f"{path} is not a merged distance file of this version (format "
                                 f"{attrs.get('format')!r}, expected {MERGED_FORMAT!r})")
            arrays = {name: h5[name][()] for name in h5 if isinstance(h5[name], h5py.Dataset)}
            if "points" in h5:
                arrays.update({f"points/{name}": h5["points"][name][()] for name in h5["points"]})
    except (OSError, KeyError) as err:
        raise ShardError(f"{path} cannot be read as a merged distance file ({err})") from None
    check_merged(path, arrays, attrs)
    check_distances(arrays["distances"], arrays["midpoint_bounds"], str(path))
    return arrays, attrs
