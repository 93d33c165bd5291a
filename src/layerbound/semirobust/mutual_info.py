"""Mutual information between two layers' outputs, in bits: EDGE as paper 003's code runs it, EDGE
as its authors' reference implementation runs it, a KSG reference, and paper 003's class-conditional
sum.

Paper 003 (assumption A1, eq. 5) measures the dependence between consecutive layers by

    I_j = sum_y pi(y) I(h_{j-1}; h_j | y),

the mutual information of the two layers' outputs among the inputs of class y, weighted by the class
prior pi(y) (here the class frequencies of the given labels). Its Section 3 names EDGE, the ensemble
dependency graph estimator of Noshad, Zeng and Hero, "Scalable Mutual Information Estimation using
Dependence Graphs", ICASSP 2019. Both EDGE variants below hash each variable's samples into buckets
floor((z + b) / eps) and return the clipped plug-in sum over bucket counts

    I = (1/N) sum_ij N_ij clip(log2(N_ij N / (N_i M_j)), 0.001, U),

N_i (M_j) the samples in X's (Y's) bucket, N_ij in the pair of buckets; they differ in the
projection, the bucket widths, the shifts and the ensemble (docs/mutual_info.md compares them).

`edge_paper003`: the modified EDGE of paper 003's code (Sekeh-Lab/SemirobustSubnetworks, commit
dd41a90, MI/AuxiliaryScripts/mi_estimator.py, function EDGE, as called by utils.py's
get_mi_estimate and manager.py's Manager.get_mi_estimate with normalize_epsilon=False,
L_ensemble=1, stochastic=True):

1. No projection when both variables have d <= 6 coordinates (the raw coordinates are hashed, not
   standardized); otherwise each variable is projected (gen_W) to d' = min(d, floor(log2(N/10)))
   coordinates by X diag(1/s) G / sqrt(d), G standard normal, s the coordinates' standard
   deviations (1 where below 1e-4; not centred).
2. Bucket width per coordinate (gen_eps, find_knn): eps = 0.4 * 18 d' / max(1 + ln d, 1) * (r + 1e-4),
   r the mean distance of 500 randomly chosen samples to their k-th nearest sample along that
   coordinate (the query itself counted), k = floor(0.43 N^(2/3 + 0.17 d'/(d'+1)) e^(-1/max(10^4, d'^4))).
   (EDGE multiplies gamma = 1 by 0.4; the 4.3.1 release by 0.9. Its factor 18 d'/(1 + ln d) is
   3 d' in 4.3.1.)
3. One hash (L_ensemble=1, so no ensemble and no median), shifted by b = 0.1 u eps with u uniform
   on [0, 1)^d', independently for X and Y (stochastic=True); U = 10 bits; no calibration.

The reference draws its shift from an unseeded generator (np.random.seed()), so its estimates
vary from call to call; here every draw comes from the seeded generator, in this order: X's then
Y's projection (when projected), the query points (one set for every coordinate of X and Y, as
the reference's find_knn reseeds before each draw), X's then Y's shift.

`edge`: EDGE with the choices of its authors' reference implementation (mrtnoshad/EDGE,
EDGE_4_3_1.py, function EDGE with its defaults): the projection of step 1 for every d; eps =
gamma * 3 d' * (r + 1e-4) with gamma = 0.9 (its gamma = 1 times the 0.9 it applies on entry);
L = 10 hashes with eps_l = eps (1 + spread l/(L-1)) and shifts b_l = (l/L) eps_l, combined by their
median; then, with `calibrate` (its normalize_epsilon), gamma is rescaled by
2^(0.5/I - sqrt(2 I)) from that first estimate and EDGE runs once more, which applies its entry
factor 0.9 again: the second estimate's width factor is 0.9 * gamma * 2^(0.5/I - sqrt(2 I)).

Both estimates depend on the random projection and are seeded. Their bias grows with dimension
and, for `edge_paper003`, is large for independent data in many dimensions:
benchmarks/bench_mutual_info.py measures both against Gaussians of known mutual information
(docs/mutual_info.md).

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

from ..core.schema import defaults

LOG2 = math.log(2.0)


_EDGE = defaults("semirobust")["edge"]

# EDGE_4_3_1.py, EDGE: gamma = gamma * 0.9 on every entry, the calibrated re-estimate included.
EDGE_431_GAMMA_SCALE = 0.9


@dataclass(frozen=True)
class EdgeOptions:
    """`edge`'s parameters; defaults from the schema's `semirobust.edge` (EDGE_4_3_1.py's)."""

    upper: float = _EDGE["upper"]              # U: the largest pointwise term, in bits
    ensemble: int = _EDGE["ensemble"]          # L: base estimates whose median is returned
    spread: float = _EDGE["spread"]            # eps_l runs over [eps, (1 + spread) eps]
    gamma: float = _EDGE["gamma"]              # first estimate's width factor (the reference's gamma=1 times 0.9)
    calibrate: bool = _EDGE["calibrate"]       # rescale gamma from a first estimate and estimate again
    knn_queries: int = _EDGE["knn_queries"]    # points whose k-NN distance sets eps

    def __post_init__(self) -> None:
        if self.upper <= 0.001:
            raise ValueError(f"EDGE's upper bound U must exceed 0.001 bits, not {self.upper}")
        if self.ensemble < 1:
            raise ValueError(f"EDGE's ensemble size must be >= 1, not {self.ensemble}")
        if self.spread < 0 or self.gamma <= 0 or self.knn_queries < 1:
            raise ValueError("EDGE needs spread >= 0, gamma > 0 and knn_queries >= 1")


@dataclass(frozen=True)
class Paper003Edge:
    """The constants of `edge_paper003`: those of paper 003's call of its modified EDGE
    (SemirobustSubnetworks MI/AuxiliaryScripts/mi_estimator.py, EDGE; fixed, not configurable)."""

    upper: float = 10.0          # U
    gamma: float = 0.4           # EDGE: gamma = [1, 1] * 0.4
    width: float = 18.0          # EDGE: cx = 18 d' / max(1 + ln d, 1)
    floor_max_dim: int = 6       # EDGE: hashing = 'floor' (no projection) if dim_X <= 6 and dim_Y <= 6
    shift: float = 0.1           # EDGE, stochastic: b = 0.1 * rand(d') * eps
    knn_queries: int = 500       # find_knn: r = 500


PAPER003_EDGE = Paper003Edge()


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


# --- EDGE: the steps both variants share ---------------------------------------------------------

def projected_dimension(n: int, d: int) -> int:
    """d' = min(d, floor(log2(N / 10))), at least 1: about 10 samples per hash cell per axis."""
    return max(1, min(d, math.floor(math.log2(max(n, 1) / 10))))


def _project(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """a diag(1/s) G / sqrt(d) with G ~ N(0, 1) of shape (d, d'), s the coordinates' standard
    deviations, 1 where below 1e-4 (EDGE_4_3_1.py and mi_estimator.py, gen_W; not centred)."""
    n, d = a.shape
    scale = a.std(axis=0)
    scale[scale < 1e-4] = 1.0
    g = rng.standard_normal((d, projected_dimension(n, d)))
    return (a / scale) @ g / math.sqrt(d)


def _knn_rank(n: int, d: int) -> int:
    """find_knn's k = floor(0.43 N^(2/3 + 0.17 d/(d+1)) e^(-1/max(10^4, d^4))), kept in 1..N."""
    k = math.floor(0.43 * n ** (2 / 3 + 0.17 * d / (d + 1)) * math.exp(-1.0 / max(10_000, d ** 4)))
    return min(max(k, 1), n)


def _knn_distance_1d(values: np.ndarray, k: int, queries: np.ndarray) -> float:
    """Mean over the query points of the distance to their k-th nearest sample (itself counted)."""
    total = 0.0
    for chunk in np.array_split(queries, max(1, len(queries) * len(values) // 2_000_000)):
        gaps = np.abs(values[None, :] - chunk[:, None])
        total += np.partition(gaps, k - 1, axis=1)[:, k - 1].sum()
    return total / len(queries)


def _knn_scales(z: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """r + 1e-4 per coordinate of z (N, d'): r the mean k-NN distance of the samples z[queries]
    along that coordinate, k = _knn_rank(N, d') (gen_eps and find_knn, both references)."""
    n, d = z.shape
    k = _knn_rank(n, d)
    return np.array([_knn_distance_1d(z[:, c], k, z[queries, c]) for c in range(d)]) + 1e-4


def _bucket_ids(z: np.ndarray, width: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Index of each sample's hash bucket floor((z + b) / eps), numbered 0..buckets-1."""
    codes = np.floor((z + shift) / width).astype(np.int64)
    return np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)


def _hashed_mi(zx, zy, width_x, width_y, shift_x, shift_y, upper: float) -> float:
    """(1/N) sum_ij N_ij clip(log2(N_ij N / (N_i M_j)), 0.001, U) for one hash (Compute_MI)."""
    n = len(zx)
    ix = _bucket_ids(zx, width_x, shift_x)
    iy = _bucket_ids(zy, width_y, shift_y)
    stride = iy.max() + 1
    cells, n_ij = np.unique(ix * stride + iy, return_counts=True)
    n_i = np.bincount(ix)[cells // stride]
    m_j = np.bincount(iy)[cells % stride]
    pointwise = np.clip(np.log2(n_ij * n / (n_i * m_j)), 0.001, upper)
    return float((n_ij * pointwise).sum() / n)


# --- edge_paper003 -------------------------------------------------------------------------------

def edge_paper003(x, y, seed: int = 0) -> float:
    """Paper 003's modified EDGE estimate of I(X; Y) in bits from paired samples x (N, d_x) and
    y (N, d_y): one randomly shifted hash, no ensemble, no calibration (module docstring, steps 1-3).

    Deterministic for a given seed (projection, query points and shift, drawn in that order).
    """
    c = PAPER003_EDGE
    x, y = _as_samples(x, "x"), _as_samples(y, "y")
    _check_pair(x, y, 2, "EDGE")
    n = len(x)
    rng = np.random.default_rng(seed)
    project = x.shape[1] > c.floor_max_dim or y.shape[1] > c.floor_max_dim
    zx, zy = (_project(x, rng), _project(y, rng)) if project else (x, y)
    queries = rng.integers(0, n, size=c.knn_queries)
    widths = []
    for a, z in ((x, zx), (y, zy)):
        d, d_proj = a.shape[1], z.shape[1]
        factor = c.gamma * c.width * d_proj / max(1.0 + math.log(d), 1.0)
        widths.append(_knn_scales(z, queries) * factor)
    shifts = [c.shift * rng.random(len(w)) * w for w in widths]
    return _hashed_mi(zx, zy, widths[0], widths[1], shifts[0], shifts[1], c.upper)


# --- edge (EDGE_4_3_1) ---------------------------------------------------------------------------

def _edge_ensemble(zx, zy, base_x, base_y, gamma: float, options: EdgeOptions) -> float:
    """Median over l = 0..L-1 of the hash with eps_l = gamma eps (1 + spread l/(L-1)), b_l = (l/L) eps_l."""
    steps = np.linspace(1.0, 1.0 + options.spread, options.ensemble)
    estimates = []
    for l, step in enumerate(steps):
        width_x, width_y = base_x * gamma * step, base_y * gamma * step
        offset = l / options.ensemble
        estimates.append(_hashed_mi(zx, zy, width_x, width_y, offset * width_x, offset * width_y, options.upper))
    return float(np.median(estimates))


def edge(x, y, options: EdgeOptions | None = None, seed: int = 0) -> float:
    """EDGE estimate of I(X; Y) in bits from paired samples x (N, d_x) and y (N, d_y), with the
    choices of EDGE_4_3_1.py (module docstring).

    Deterministic for a given seed (it draws the projections, then the k-NN query points).
    """
    options = options or EdgeOptions()
    x, y = _as_samples(x, "x"), _as_samples(y, "y")
    _check_pair(x, y, 2, "EDGE")
    n = len(x)
    rng = np.random.default_rng(seed)
    zx, zy = _project(x, rng), _project(y, rng)
    queries = rng.integers(0, n, size=options.knn_queries)
    base_x, base_y = (_knn_scales(z, queries) * 3 * z.shape[1] for z in (zx, zy))
    estimate = _edge_ensemble(zx, zy, base_x, base_y, options.gamma, options)
    if options.calibrate:
        # normalize_epsilon: EDGE re-enters itself with gamma * 2^e and scales that by 0.9 again.
        # The exponent is capped so the widths stay finite (2^30 times the k-NN scale already puts
        # every sample in one bucket).
        exponent = min(30.0, 0.5 / estimate - math.sqrt(2.0 * estimate))
        estimate = _edge_ensemble(zx, zy, base_x, base_y,
                                  EDGE_431_GAMMA_SCALE * options.gamma * 2.0 ** exponent, options)
    return estimate


# --- KSG -----------------------------------------------------------------------------------------

def ksg(x, y, k: int = 3, seed: int = 0) -> float:
    """Kraskov et al.'s estimator 1 of I(X; Y), converted to bits.

    I = psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >, where n_x (n_y) counts the other samples
    strictly closer in X (in Y) than the k-th neighbour in the joint space (max-norm). Coordinates
    are standardized, and a seeded jitter of 1e-10 breaks ties (ReLU outputs repeat exact zeros).
    """
    # Imported here: the workflow imports this module to plan (REVISIONS), and scipy takes seconds to load.
    from scipy.spatial import cKDTree
    from scipy.special import digamma

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


ESTIMATORS = ("edge_paper003", "edge", "ksg")
PAPER003_ESTIMATOR = "edge_paper003"   # the estimator paper 003's code runs
LABELS = {"edge_paper003": "EDGE, paper 003's code", "edge": "EDGE 4.3.1", "ksg": "KSG"}   # figures, tables

# What decides an estimator's numbers besides its inputs, seed and options. The workflow passes a
# study's revisions as a rule parameter, so a new revision re-runs the study's jobs.
REVISIONS = {
    "edge_paper003": "1: SemirobustSubnetworks dd41a90 mi_estimator.EDGE as get_mi_estimate calls it",
    "edge": "2: EDGE_4_3_1 (gen_W's projection, one set of query points, 0.9 applied again when calibrating)",
    "ksg": "1",
}


def revisions(estimators) -> dict[str, str]:
    """The revision of each named estimator."""
    unknown = [e for e in estimators if e not in REVISIONS]
    if unknown:
        raise ValueError(f"unknown mutual information estimator {unknown[0]!r}; known: {', '.join(ESTIMATORS)}")
    return {e: REVISIONS[e] for e in estimators}


def estimate(x, y, estimator: str = PAPER003_ESTIMATOR, seed: int = 0, edge_options: EdgeOptions | None = None,
             k: int = 3) -> float:
    """I(X; Y) in bits with the named estimator (ESTIMATORS); `edge_options` is `edge`'s, `k` KSG's."""
    if estimator == "edge_paper003":
        return edge_paper003(x, y, seed)
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


def class_conditional_mi(h_prev, h_next, labels, estimator: str = PAPER003_ESTIMATOR, seed: int = 0,
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
