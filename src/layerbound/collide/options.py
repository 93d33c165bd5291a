"""The collision methods' options and their registry (no torch here: the workflow plans with it).

A method is one module of this package with a `run(f, A, x, x_prime, *, options, dtype,
batch_size, return_points) -> Collisions` function, an options dataclass below (its config
section of `collision:`), and one entry of METHODS. Defaults come from the config schema.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.schema import defaults

_DEFAULTS = defaults("collision")

# What the search's `step: auto` and `max_iter: null` resolve to (jacobian.resolve_step and
# jacobian.search), and the revision of its algorithm. With the options they decide a shard's
# numbers, so they are part of its digest and of its job's parameters: changing any of them
# re-runs the shards, and shards of different revisions do not merge.
# `auto` uses merit up to AUTO_MERIT_MAX_FEATURES features (m constraints) because on unprojected
# ReLU layers of 200-300 features it stalls where decay does not (benchmarks/bench_unprojected.py
# --arch fcnn: 4% above decay at fc1, at fc2 no collision, the midpoint kept), while at m = 10 (every
# default tap) and on fcnn_smaller's 75- and 50-wide layers it finds closer collisions than decay.
AUTO_MERIT_MAX_FEATURES = 50
DEFAULT_MAX_ITER = {"decay": 40, "merit": 15}
SEARCH_REVISION = "2 (merit minimizes the max of the two distances)"
# Merit's smoothing (collision.search.smooth_iters, off by default; collide/merit.py): the first
# smooth_iters Jacobian evaluations search the map with its ReLUs replaced by softplus of sharpness
# SMOOTH_BETA, growing by SMOOTH_GROWTH at each (5, 10, 20, 40, 80 for 5). Chosen on trades2 conv3 and fc5,
# adam2 conv4 and fc6, benign conv3 and fc6, pgd2 logits (benchmarks/bench_tightness.py): one fixed
# sharpness (10) left adam2 conv4 looser than no smoothing, and 8 smoothed evaluations of 15 left
# a pair there at its midpoint. A gentler start (2.5 x 2) left 7 of the 14 benign and held-out
# taps of 48 other pairs more than 0.2% looser than no smoothing, where this one left 3
# (bench_tightness.py --relative, docs/search.md).
# With smoothing on, the schedule is part of the search's revision (CollisionOptions.revision), so
# a new schedule re-runs the smoothed shards and leaves the others valid.
SMOOTH_BETA = 5.0
SMOOTH_GROWTH = 2.0
# The revision of collide/certify.py, which every method's collisions pass through: part of every
# method's revision (CollisionOptions.revision), so a new certificate re-runs every shard.
CERTIFY_REVISION = "1 (float64 Gauss-Newton polish; residual <= 1e-12 of the feature magnitude, correction <= 1e-10 of ||x - x'||/2)"


@dataclass(frozen=True)
class SearchOptions:
    """Algorithm 1's parameters (method `jacobian`, config `collision.search`).

    step "auto" means merit on maps of at most 50 features (m) and decay on wider ones
    (jacobian.resolve_step);
    max_iter None the step control's own budget (DEFAULT_MAX_ITER). Tolerances None mean
    the dtype's defaults (base.DEFAULT_TOL, base.DEFAULT_VERIFY_TOL); rows_per_pass None means 1
    Jacobian row per backward pass on the CPU, all m on a GPU. smooth_iters > 0: merit's first
    smooth_iters Jacobian evaluations search the map with its ReLUs as softplus (merit.py).
    """

    step: str = _DEFAULTS["search"]["step"]
    alpha: float = _DEFAULTS["search"]["alpha"]
    gamma: float = _DEFAULTS["search"]["gamma"]
    max_iter: int | None = _DEFAULTS["search"]["max_iter"]
    tol: float | None = _DEFAULTS["search"]["tol"]
    verify_tol: float | None = _DEFAULTS["search"]["verify_tol"]
    rows_per_pass: int | None = _DEFAULTS["search"]["rows_per_pass"]
    smooth_iters: int = _DEFAULTS["search"]["smooth_iters"]


def check_smooth_iters(smooth_iters: int, step: str, max_iter: int | None) -> None:
    """Refuse a smoothing the search cannot end on the map itself: smooth_iters must be a whole
    number >= 0 and, where the step control is merit (or auto, which is merit on every map of at
    most AUTO_MERIT_MAX_FEATURES features), below its budget (max_iter, or merit's default)."""
    if isinstance(smooth_iters, bool) or not isinstance(smooth_iters, int) or smooth_iters < 0:
        raise ValueError(f"smooth_iters = {smooth_iters!r}: need a whole number >= 0")
    budget = DEFAULT_MAX_ITER["merit"] if max_iter is None else max_iter
    if smooth_iters and step != "decay" and smooth_iters >= budget:
        raise ValueError(f"smooth_iters ({smooth_iters}) must be below max_iter ({budget}): the last "
                         "Jacobian evaluations search the map itself")


# Options added after shards were made, and their value that leaves the search as it was: left out
# of the JSON (so of every shard's digest) at that value, so that existing shards stay valid.
_OMITTED_AT = {"smooth_iters": 0}


@dataclass(frozen=True)
class PolytopeOptions:
    """Paper 002's polytope descent (method `polytope`, config `collision.polytope`).

    max_iter: cone programs per pair at most; verify_tol None means the dtype's default.
    """

    max_iter: int = _DEFAULTS["polytope"]["max_iter"]
    verify_tol: float | None = _DEFAULTS["polytope"]["verify_tol"]


@dataclass(frozen=True)
class Method:
    """A collision method: its options class, the config key holding them, and its entry point."""

    options: type        # its options dataclass (below)
    options_key: str     # the config section of `collision:` holding them
    module: str          # the module of layerbound.collide with its `run` function
    unprojected_only: bool = False   # searches only maps with m >= n_j (the plan refuses others)
    revision: str = "1"  # the algorithm's revision and what its option defaults resolve to


# The dispatch point of the collision methods (the path component `{collision_method}` of shards).
METHODS: dict[str, Method] = {
    "jacobian": Method(SearchOptions, "search", "jacobian",
                       revision=f"{SEARCH_REVISION}; auto: merit up to {AUTO_MERIT_MAX_FEATURES} features; "
                                f"max_iter null: {json.dumps(DEFAULT_MAX_ITER, sort_keys=True)}"),
    "polytope": Method(PolytopeOptions, "polytope", "polytope", unprojected_only=True),
}


@dataclass(frozen=True)
class CollisionOptions:
    """Everything that determines a shard's numbers besides its unit; digested into its attributes."""

    method: str = _DEFAULTS["methods"][0]
    dtype: str = _DEFAULTS["dtype"]
    batch_size: int = _DEFAULTS["batch_size"]
    chunk_size: int = _DEFAULTS["chunk_size"]
    keep_points: int = _DEFAULTS["keep_points"]
    box: tuple[float, float] | None = tuple(_DEFAULTS["box"]) if _DEFAULTS["box"] is not None else None
    method_options: Any = field(default_factory=SearchOptions)   # the method's own options

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown collision method {self.method!r}; known: {', '.join(METHODS)}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"collision dtype must be float32 or float64, not {self.dtype!r}")
        if self.box is not None:
            box = self.box
            if (isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 2
                    or any(isinstance(b, bool) or not isinstance(b, numbers.Real) for b in box)):
                raise ValueError(f"collision box {box!r}: need [lo, hi] (null, None in Python, for unboxed)")
            lo, hi = (float(b) for b in box)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"collision box {list(self.box)}: need finite bounds (null, None in Python, for unboxed)")
            if not lo < hi:
                raise ValueError(f"collision box {list(self.box)}: need lo < hi")
            object.__setattr__(self, "box", (lo, hi))   # a tuple of floats: one JSON form, one digest
        if not isinstance(self.method_options, METHODS[self.method].options):
            raise ValueError(f"method {self.method!r} takes {METHODS[self.method].options.__name__}, "
                             f"not {type(self.method_options).__name__}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "CollisionOptions":
        """From the JSON form (`to_json`): the shared options plus the method's own under its key."""
        d = dict(d or {})
        method = d.get("method", cls.method)
        if method not in METHODS:
            raise ValueError(f"unknown collision method {method!r}; known: {', '.join(METHODS)}")
        spec = METHODS[method]
        own = d.pop(spec.options_key, None) or {}
        shared = set(cls.__dataclass_fields__) - {"method_options"}
        unknown = set(d) - shared
        if unknown:
            raise ValueError(f"unknown collision options: {', '.join(sorted(unknown))}")
        bad = set(own) - set(spec.options.__dataclass_fields__)
        if bad:
            raise ValueError(f"unknown collision.{spec.options_key} options: {', '.join(sorted(bad))}")
        return cls(method_options=spec.options(**own), **d)

    @classmethod
    def from_config(cls, collision: dict[str, Any], method: str) -> "CollisionOptions":
        """From a validated config's `collision:` section, for one of its methods."""
        keys = set(cls.__dataclass_fields__) - {"method", "method_options"}
        values = {k: collision[k] for k in keys if k in collision}
        spec = METHODS.get(method)
        if spec is not None and spec.options_key in collision:
            values[spec.options_key] = collision[spec.options_key]
        return cls.from_dict({"method": method, **values})

    def to_json(self) -> str:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "method_options"}
        d[METHODS[self.method].options_key] = {k: v for k, v in asdict(self.method_options).items()
                                               if k not in _OMITTED_AT or v != _OMITTED_AT[k]}
        if d["box"] is not None:
            d["box"] = list(d["box"])
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def revision(self) -> str:
        """The method's revision (Method.revision) and the certificate's, and merit's smoothing
        schedule where smoothing is on: with the options, what decides the numbers."""
        revision = f"{METHODS[self.method].revision}; certificate {CERTIFY_REVISION}"
        if getattr(self.method_options, "smooth_iters", 0):
            revision += f"; smoothing: softplus sharpness {SMOOTH_BETA:g} x {SMOOTH_GROWTH:g} per evaluation"
        return revision

    def digest(self) -> str:
        return hashlib.sha256(f"{self.to_json()}\n{self.revision()}".encode()).hexdigest()

    def run(self, f, A, x, x_prime, return_points: bool):
        """Collisions of a batch of pairs by this method (on x's device, in this dtype)."""
        import torch

        module = importlib.import_module(f"{__package__}.{METHODS[self.method].module}")
        return module.run(f, A, x, x_prime, options=self.method_options, dtype=getattr(torch, self.dtype),
                          batch_size=self.batch_size, box=self.box, return_points=return_points)

    def adversary_label(self) -> str:
        """The threat model the distances are for, in words (figures, tables and the report)."""
        return adversary_label(self.box)


def adversary_label(box) -> str:
    """'l2 in [0, 1]^n' or 'l2 unboxed': the adversary of a collision analysis."""
    if box is None:
        return "l2 unboxed"
    lo, hi = (float(b) for b in box)
    return f"l2 in [{lo:g}, {hi:g}]^n"
