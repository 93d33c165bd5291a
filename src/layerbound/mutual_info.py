"""Mutual information between two layers' outputs, in bits: EDGE, a KSG reference, and paper 003's
class-conditional sum.

Paper 003 (assumption A1, eq. 5) measures the dependence between consecutive layers by

    I_j = sum_y pi(y) I(h_{j-1}; h_j | y),

the mutual information of the two layers' outputs among the inputs of class y, weighted by the class
prior pi(y) (here the class frequencies of the given labels). It estimates each I(.;.|y) with EDGE.

`edge` is the ensemble dependency graph estimator of Noshad, Zeng and Hero, "Scalable Mutual
Information Estimation using Dependence Graphs", ICASSP 2019, with the choices of the authors'
reference implementation (version 4.3.1, whose defaults paper 003's code uses):

1. Standardize each coordinate and project each variable with a Gaussian (2-stable) matrix
   W ~ N(0, 1/d) to d' = min(d, floor(log2(N / 10))) dimensions (at least 1).
2. Bucket width per projected coordinate: eps = gamma * 3 d' * r_k, where r_k is the mean distance
   of a random sample of points to their k-th nearest neighbour along that coordinate,
   k = floor(0.43 N^(2/3 + 0.17 d'/(d'+1))).
3. For l = 0..L-1 hash with eps_l = eps (1 + spread l/(L-1)) and shift b_l = (l/L) eps_l:
   bucket = floor((XW + b_l) / eps_l); count the samples of each X bucket (N_i), Y bucket (M_j)
   and pair of buckets (N_ij), and estimate

       I_l = (1/N) sum_ij N_ij clip(log2(N_ij N / (N_i M_j)), 0.001, U).

4. Combine the L estimates by their median. With `calibrate`, rescale gamma by
   2^(0.5/I - sqrt(2 I)) from that first estimate and estimate once more (the reference's
   `normalize_epsilon`): weak dependence widens the buckets, strong dependence narrows them.

The clip makes every estimate at least 0.001 bits and at most U bits. The estimate depends on the
projection, so it is seeded. Its bias grows with dimension: benchmarks/bench_mutual_info.py
measures it against Gaussians of known mutual information (README, "Subnetwork robustness").

`ksg` is the k-nearest-neighbour estimator 1 of Kraskov, Stoegbauer and Grassberger, "Estimating
mutual information", Phys. Rev. E 69, 066138 (2004), on standardized coordinates with the max-norm,
written here on scipy's KD-tree: a second, independent estimate to compare EDGE with. (Of the PyPI
packages, scikit-learn and ennemi estimate only against a one-dimensional variable, infomeasure
needs numba and sparse, npeet-plus draws its jitter from NumPy's global random state.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

from .config import defaults

LOG2 = math.log(2.0)


_EDGE = defaults("semirobust")["edge"]


@dataclass(frozen=True)
class EdgeOptions:
    """EDGE's parameters; defaults from the schema's `semirobust.edge` (the reference
    implementation's, version 4.3.1)."""

    upper: float = _EDGE["upper"]              # U: the largest pointwise term, in bits
    ensemble: int = _EDGE["ensemble"]          # L: base estimates whose median is returned
    spread: float = _EDGE["spread"]            # eps_l runs over [eps, (1 + spread) eps]
    gamma: float = _EDGE["gamma"]              # bucket width factor (the reference multiplies its gamma=1 by 0.9)
    calibrate: bool = _EDGE["calibrate"]       # rescale gamma from a first estimate and estimate again
    knn_queries: int = _EDGE["knn_queries"]    # points whose k-NN distance sets eps

    def __post_init__(self) -> None:
        if self.upper <= 0.001:
            raise ValueError(f"EDGE's upper bound U must exceed 0.001 bits, not {self.upper}")
        if self.ensemble < 1:
            raise ValueError(f"EDGE's ensemble size must be >= 1, not {self.ensemble}")
        if self.spread < 0 or self.gamma <= 0 or self.knn_queries < 1:
            raise ValueError("EDGE needs spread >= 0, gamma > 0 and knn_queries >= 1")


def _as_samples(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        a = a.reshape(len(a), -1)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return a


def _standardize(a: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per coordinate; constant coordinates (dead units) become 0."""
    std = a.std(axis=0)
    return np.where(std > 0, (a - a.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)


def _check_pair(x: np.ndarray, y: np.ndarray, minimum: int, what: str) -> None:
    if len(x) != len(y):
        raise ValueError(f"x and y must hold the same number of samples, not {len(x)} and {len(y)}")
    if len(x) < minimum:
        raise ValueError(f"{what} needs at least {minimum} samples, got {len(x)}")


# --- EDGE ----------------------------------------------------------------------------------------

def projected_dimension(n: int, d: int) -> int:
    """d' = min(d, floor(log2(N / 10))), at least 1: about 10 samples per hash cell per axis."""
    return max(1, min(d, math.floor(math.log2(max(n, 1) / 10))))


def _knn_distance_1d(values: np.ndarray, k: int, queries: np.ndarray) -> float:
    """Mean over the query points of the distance to their k-th nearest sample (itself counted)."""
    total = 0.0
    for chunk in np.array_split(queries, max(1, len(queries) * len(values) // 2_000_000)):
        gaps = np.abs(values[None, :] - chunk[:, None])
        total += np.partition(gaps, k - 1, axis=1)[:, k - 1].sum()
    return total / len(queries)


def _bucket_widths(z: np.ndarray, options: EdgeOptions, rng: np.random.Generator) -> np.ndarray:
    """eps per projected coordinate: gamma * 3 d' * (mean k-NN distance along it)."""
    n, d_proj = z.shape
    k = math.floor(0.43 * n ** (2 / 3 + 0.17 * d_proj / (d_proj + 1)) * math.exp(-1.0 / max(10_000, d_proj ** 4)))
    k = min(max(k, 1), n)
    widths = np.empty(d_proj)
    for c in range(d_proj):
        queries = rng.choice(z[:, c], size=options.knn_queries)
        widths[c] = _knn_distance_1d(z[:, c], k, queries) + 1e-4
    return widths * 3 * d_proj


def _bucket_ids(z: np.ndarray, width: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Index of each sample's hash bucket floor((z + b) / eps), numbered 0..buckets-1."""
    codes = np.floor((z + shift) / width).astype(np.int64)
    return np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)


def _hashed_mi(zx, zy, width_x, width_y, shift_x, shift_y, upper: float) -> float:
    """(1/N) sum_ij N_ij clip(log2(N_ij N / (N_i M_j)), 0.001, U) for one hash."""
    n = len(zx)
    ix = _bucket_ids(zx, width_x, shift_x)
    iy = _bucket_ids(zy, width_y, shift_y)
    stride = iy.max() + 1
    cells, n_ij = np.unique(ix * stride + iy, return_counts=True)
    n_i = np.bincount(ix)[cells // stride]
    m_j = np.bincount(iy)[cells % stride]
    pointwise = np.clip(np.log2(n_ij * n / (n_i * m_j)), 0.001, upper)
    return float((n_ij * pointwise).sum() / n)


def _edge_once(zx, zy, base_x, base_y, gamma: float, options: EdgeOptions) -> float:
    steps = np.linspace(1.0, 1.0 + options.spread, options.ensemble)
    estimates = []
    for l, step in enumerate(steps):
        width_x, width_y = base_x * gamma * step, base_y * gamma * step
        offset = l / options.ensemble
        estimates.append(_hashed_mi(zx, zy, width_x, width_y, offset * width_x, offset * width_y, options.upper))
    return float(np.median(estimates))


def edge(x, y, options: EdgeOptions | None = None, seed: int = 0) -> float:
    """EDGE estimate of I(X; Y) in bits from paired samples x (N, d_x) and y (N, d_y).

    Deterministic for a given seed (it draws the projections and the k-NN query points).
    """
    options = options or EdgeOptions()
    x, y = _as_samples(x, "x"), _as_samples(y, "y")
    _check_pair(x, y, 2, "EDGE")
    n = len(x)
    rng = np.random.default_rng(seed)
    projected = []
    for a in (x, y):
        d = a.shape[1]
        w = rng.normal(0.0, 1.0 / math.sqrt(d), size=(d, projected_dimension(n, d)))
        projected.append(_standardize(a) @ w)
    zx, zy = projected
    base_x, base_y = _bucket_widths(zx, options, rng), _bucket_widths(zy, options, rng)
    estimate = _edge_once(zx, zy, base_x, base_y, options.gamma, options)
    if options.calibrate:
        # The reference's normalize_epsilon; the exponent is capped so the widths stay finite
        # (2^30 times the k-NN scale already puts every sample in one bucket).
        exponent = min(30.0, 0.5 / estimate - math.sqrt(2.0 * estimate))
        estimate = _edge_once(zx, zy, base_x, base_y, options.gamma * 2.0 ** exponent, options)
    return estimate


# --- KSG -----------------------------------------------------------------------------------------

def ksg(x, y, k: int = 3, seed: int = 0) -> float:
    """Kraskov et al.'s estimator 1 of I(X; Y), converted to bits.

    I = psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >, where n_x (n_y) counts the other samples
    strictly closer in X (in Y) than the k-th neighbour in the joint space (max-norm). Coordinates
    are standardized, and a seeded jitter of 1e-10 breaks ties (ReLU outputs repeat exact zeros).
    """
    x, y = _as_samples(x, "x"), _as_samples(y, "y")
    _check_pair(x, y, k + 1, f"KSG with k={k}")
    rng = np.random.default_rng(seed)
    x = _standardize(x) + 1e-10 * rng.standard_normal(x.shape)
    y = _standardize(y) + 1e-10 * rng.standard_normal(y.shape)
    n = len(x)
    joint = np.hstack([x, y])
    radius = cKDTree(joint).query(joint, k=k + 1, p=np.inf)[0][:, k]
    # Strictly closer than the radius; the counts include the point itself, so they are n_x + 1.
    shrunk = np.nextafter(radius, 0)
    n_x1 = cKDTree(x).query_ball_point(x, shrunk, p=np.inf, return_length=True)
    n_y1 = cKDTree(y).query_ball_point(y, shrunk, p=np.inf, return_length=True)
    nats = digamma(k) + digamma(n) - np.mean(digamma(n_x1) + digamma(n_y1))
    return float(nats / LOG2)


ESTIMATORS = ("edge", "ksg")


def estimate(x, y, estimator: str = "edge", seed: int = 0, edge_options: EdgeOptions | None = None,
             k: int = 3) -> float:
    """I(X; Y) in bits with the named estimator ("edge" or "ksg")."""
    if estimator == "edge":
        return edge(x, y, edge_options, seed)
    if estimator == "ksg":
        return ksg(x, y, k, seed)
    raise ValueError(f"unknown mutual information estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")


# --- paper 003, eq. 5 ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassConditionalMI:
    """sum_y pi(y) I(h_prev; h_next | y) in bits, with its terms."""

    value: float
    per_class: dict[int, float] = field(default_factory=dict)   # I(h_prev; h_next | y)
    prior: dict[int, float] = field(default_factory=dict)       # pi(y): class frequencies


def class_conditional_mi(h_prev, h_next, labels, estimator: str = "edge", seed: int = 0,
                         edge_options: EdgeOptions | None = None, k: int = 3) -> ClassConditionalMI:
    """Paper 003's I_j = sum_y pi(y) I(h_{j-1}; h_j | y) (eq. 5), pi(y) the frequencies of `labels`.

    h_prev, h_next: (N, n_{j-1}) and (N, n_j) outputs of two layers on the same N inputs; labels: (N,)
    their classes. Each class's term is estimated from that class's samples alone, with a seed
    derived from `seed` and the class, so the result does not depend on the order of the samples
    across classes.
    """
    h_prev, h_next = _as_samples(h_prev, "h_prev"), _as_samples(h_next, "h_next")
    labels = np.asarray(labels).reshape(-1)
    if not len(h_prev) == len(h_next) == len(labels):
        raise ValueError(f"h_prev, h_next and labels must have the same length, not "
                         f"{len(h_prev)}, {len(h_next)} and {len(labels)}")
    classes, counts = np.unique(labels, return_counts=True)
    per_class, prior = {}, {}
    for c, count in zip(classes.tolist(), counts.tolist()):
        members = labels == c
        try:
            per_class[c] = estimate(h_prev[members], h_next[members], estimator,
                                    int(np.random.SeedSequence([seed, int(c)]).generate_state(1)[0]),
                                    edge_options, k)
        except ValueError as err:
            raise ValueError(f"class {c}: {err}") from None
        prior[c] = count / len(labels)
    return ClassConditionalMI(sum(prior[c] * per_class[c] for c in per_class), per_class, prior)
