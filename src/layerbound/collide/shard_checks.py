"""The checks a shard or merged distance file passes when read: the types and ranges of its
attributes and columns, so that a crafted, foreign or damaged file fails in one line naming it
(ShardError) before any number is computed from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ShardError

# The columns of a shard, and which hold floats (the rest: integers, and `converged`).
COLUMNS = ("pair", "i", "j", "distance", "midpoint_bound", "objective", "residual", "feature_gap", "iterations",
           "converged", "search_distance", "search_residual", "polish_steps", "candidate")
FLOAT_COLUMNS = ("distance", "midpoint_bound", "objective", "residual", "feature_gap", "search_distance",
                 "search_residual")

# A shard's integer attributes and what they must be (a crafted or foreign file fails in one line).
_INT_ATTRS = {"projection": 0, "chunk": 0, "chunk_size": 1, "num_pairs": 1, "per_class": 1, "m": 1, "n_j": 1,
              "experiment_seed": 0, "projection_seed": 0}


def check_structure(path: Path, columns: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Types and ranges of a shard's attributes and columns, before merge computes with them."""
    def bad(what: str) -> ShardError:
        return ShardError(f"shard {path} is malformed ({what}); delete it and run the workflow again to recompute it")

    for key, low in _INT_ATTRS.items():
        value = attrs.get(key)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise bad(f"attribute {key} = {value!r}, not an integer >= {low}")
    if attrs["num_pairs"] != attrs["per_class"] ** 2 or attrs["num_pairs"] > 10 ** 9:
        raise bad(f"num_pairs {attrs['num_pairs']} is not per_class^2 = {attrs['per_class']}^2")
    for c in COLUMNS:
        column = columns[c]
        if column.ndim != 1:
            raise bad(f"column {c} has shape {column.shape}, not one value per pair")
        kind = "f" if c in FLOAT_COLUMNS else "b" if c == "converged" else "iu"
        if column.dtype.kind not in kind:
            raise bad(f"column {c} has dtype {column.dtype}")
    lengths = {c: len(columns[c]) for c in COLUMNS}
    if len(set(lengths.values())) != 1:
        raise ShardError(f"shard {path} has columns of different lengths: {lengths}")
    for c, low in (("pair", 0), ("iterations", 0), ("polish_steps", 0), ("candidate", -1)):
        if len(columns[c]) and columns[c].min() < low:
            raise bad(f"column {c} holds {int(columns[c].min())}, below {low}")
    if len(columns["pair"]) and columns["pair"].max() >= attrs["num_pairs"]:
        raise bad(f"pair index {int(columns['pair'].max())} of {attrs['num_pairs']} pairs")
    if "points/pair" in columns:
        rows = len(columns["points/pair"])
        if columns["points/x_tilde"].shape != columns["points/x_tilde_prime"].shape or len(columns["points/x_tilde"]) != rows:
            raise bad("its colliding points do not match their pair indices")


# What every reader of a merged file needs (the loss stage also its candidates, which it checks).
MERGED_ARRAYS = ("distances", "midpoint_bounds")
MERGED_ATTRS = ("dataset", "pairset", "method", "model", "layer", "m", "options_json", "projections")


def check_merged(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """A merged file's arrays and attributes: all present, of consistent shapes, options_json an object."""
    missing = [name for name in MERGED_ARRAYS if name not in arrays] + [key for key in MERGED_ATTRS if key not in attrs]
    if missing:
        raise ShardError(f"{path} is not a complete merged distance file (no {', '.join(missing)}); delete it and run "
                         "the workflow again")
    distances, bounds = arrays["distances"], arrays["midpoint_bounds"]
    if distances.ndim != 3 or bounds.shape != distances.shape[1:] or distances.dtype.kind != "f":
        raise ShardError(f"{path}: distances of shape {distances.shape} and midpoint bounds of shape {bounds.shape} are "
                         "not (projections, S, S) and (S, S)")
    for name in ("candidates", "residuals", "iterations", "converged", "search_distances", "polish_steps"):
        if name in arrays and arrays[name].shape != distances.shape:
            raise ShardError(f"{path}: {name} has shape {arrays[name].shape}, not the distances' {distances.shape}")
    try:
        options = json.loads(attrs["options_json"])
    except (TypeError, ValueError):
        options = None
    if not isinstance(options, dict):
        raise ShardError(f"{path}: its options_json attribute is not a JSON object")
