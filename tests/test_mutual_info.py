"""The EDGE variants and KSG against Gaussians of known mutual information, the references' steps
written out plainly, their bounds and invariances, and paper 003's class-conditional sum (eq. 5)."""

import math
from collections import Counter

import numpy as np
import pytest

from layerbound import config
from layerbound.semirobust.mutual_info import (ESTIMATORS, LABELS, REVISIONS, EdgeOptions, class_conditional_mi, edge,
                                               edge_paper003, estimate, ksg, projected_dimension, revisions)


def gaussians(n, d, r, seed):
    """Y = r X + sqrt(1 - r^2) Z: d independent coordinate pairs of correlation r."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, r * x + math.sqrt(1 - r * r) * rng.standard_normal((n, d))


def truth(d, r):
    return -0.5 * d * math.log2(1 - r * r)   # bits


def test_one_dimensional_gaussians_in_bits():
    # Closed form 1.198 bits (0.830 nats) at r = 0.9; 0.208 bits at r = 0.5. Measured at N = 2000
    # (benchmarks/bench_mutual_info.py, mean +- sd over 5 draws): EDGE 4.3.1 1.365 +- 0.019 and
    # 0.331 +- 0.022 (biased up by 0.12-0.17 bits); paper 003's EDGE 0.902 +- 0.036 and
    # 0.284 +- 0.023 (its buckets, 1.3 standard deviations wide, lose the finer dependence: 0.3 bits
    # short at r = 0.9); KSG within 0.05.
    x, y = gaussians(2000, 1, 0.9, seed=0)
    assert 1.0 < edge(x, y) < 1.5
    assert 0.75 < edge_paper003(x, y) < 1.05
    assert ksg(x, y) == pytest.approx(truth(1, 0.9), abs=0.1)
    x, y = gaussians(2000, 1, 0.5, seed=1)
    assert 0.1 < edge(x, y) < 0.45
    assert 0.15 < edge_paper003(x, y) < 0.4
    assert ksg(x, y) == pytest.approx(truth(1, 0.5), abs=0.08)


def test_two_dimensional_gaussians():
    # 2.40 bits. EDGE's estimate varies with the random projection (sd 0.9 bits over seeds at r = 0.9),
    # so the median over seeds is checked; KSG is checked directly.
    # Paper 003's EDGE hashes the raw coordinates here (d <= 6) and falls a bit short (measured
    # 1.435 +- 0.046).
    x, y = gaussians(2000, 2, 0.9, seed=2)
    assert np.median([edge(x, y, seed=s) for s in range(5)]) == pytest.approx(truth(2, 0.9), abs=0.8)
    assert 1.2 < edge_paper003(x, y) < 1.7
    assert ksg(x, y) == pytest.approx(truth(2, 0.9), abs=0.15)


def test_independent_data_is_near_zero():
    # EDGE 4.3.1 at d = 10 swings with the projection (measured 0.161 +- 0.104 at N = 2000); paper
    # 003's EDGE is near zero only in one and two dimensions (0.064 +- 0.022, 0.152 +- 0.010).
    for d, bound, bound_paper003 in ((1, 0.06, 0.15), (2, 0.15, 0.25), (10, 0.5, None)):
        rng = np.random.default_rng(d)
        x, y = rng.standard_normal((2000, d)), rng.standard_normal((2000, d))
        assert 0.001 <= edge(x, y) < bound
        assert abs(ksg(x, y)) < 0.06
        if bound_paper003:
            assert 0.001 <= edge_paper003(x, y) < bound_paper003


def test_more_correlation_gives_larger_estimates_in_low_and_high_dimension():
    for d in (1, 10):
        edges = [edge(*gaussians(2000, d, r, seed=10 + d)) for r in (0.0, 0.5, 0.9)]
        ksgs = [ksg(*gaussians(2000, d, r, seed=10 + d)) for r in (0.0, 0.5, 0.9)]
        paper003 = [edge_paper003(*gaussians(2000, d, r, seed=10 + d)) for r in (0.0, 0.5, 0.9)]
        assert edges == sorted(edges) and edges[0] < edges[-1] / 3
        assert paper003 == sorted(paper003)
        assert ksgs == sorted(ksgs) and ksgs[0] < ksgs[-1] / 3


def test_high_dimension_underestimates_as_documented():
    # The breakdown docs/mutual_info.md reports: at d = 10 the truth is 11.98 bits; EDGE 4.3.1
    # projects to floor(log2(N / 10)) = 7 dimensions and returns 1.36 +- 0.37 bits, KSG 4.5.
    assert projected_dimension(2000, 10) == 7
    x, y = gaussians(2000, 10, 0.9, seed=3)
    assert 0.3 < edge(x, y) < 3.0
    assert 3.0 < ksg(x, y) < 6.0


def test_estimates_lie_in_the_clip_range():
    # Each pointwise term is clipped to [0.001, U]. A constant Y has one bucket, log2(N_ij N / (N_i N)) = 0,
    # so EDGE returns exactly 0.001. Y = X in one dimension: X's and Y's buckets coincide (up to the
    # hash's shift), every pointwise term log2(N / N_i) exceeds U = 1 bit, so EDGE returns about U.
    x = np.random.default_rng(4).standard_normal((1000, 3))
    assert edge(x, np.zeros((1000, 2))) == 0.001
    assert edge_paper003(x, np.zeros((1000, 2))) == 0.001
    assert edge_paper003(np.hstack([x, x, x]), np.zeros((1000, 2))) == 0.001
    assert 0.95 < edge(x[:, :1], x[:, :1], EdgeOptions(upper=1.0)) <= 1.0
    assert 3.0 < edge(x[:, :1], x[:, :1]) <= 10.0
    assert edge(x, x, EdgeOptions(upper=0.5)) <= 0.5


def test_invariant_to_rescaling_coordinates():
    # The projection divides each coordinate by its standard deviation, and KSG standardizes: both
    # are blind to each coordinate's scale (powers of two: exact). Paper 003's EDGE projects only
    # when a variable has more than 6 coordinates; on raw coordinates the 1e-4 it adds to the k-NN
    # distance is absolute, so there a rescaling changes the widths.
    x, y = gaussians(1000, 3, 0.7, seed=5)
    scale = np.array([4.0, 0.25, 1024.0])
    assert edge(x * scale, y / 8.0, seed=3) == edge(x, y, seed=3)
    assert ksg(x * scale, y / 8.0, seed=3) == ksg(x, y, seed=3)
    wide = np.hstack([x, x[:, :1] ** 2, x[:, 1:] ** 3, y])   # 8 coordinates: projected
    assert edge_paper003(wide * np.r_[scale, 2.0, 0.5, 0.5, scale], y / 8.0, seed=3) == edge_paper003(wide, y, seed=3)
    assert edge_paper003(x * 1e-3, y, seed=3) != edge_paper003(x, y, seed=3)


def test_seeded_and_deterministic():
    x, y = gaussians(1000, 4, 0.8, seed=6)
    assert edge(x, y, seed=7) == edge(x, y, seed=7)
    assert edge(x, y, seed=7) != edge(x, y, seed=8)
    assert edge_paper003(x, y, seed=7) == edge_paper003(x, y, seed=7)
    assert edge_paper003(x, y, seed=7) != edge_paper003(x, y, seed=8)
    assert estimate(x, y, "ksg", seed=1) == ksg(x, y, seed=1)
    assert estimate(x, y, "edge", seed=1) == edge(x, y, seed=1)
    assert estimate(x, y, seed=1) == estimate(x, y, "edge_paper003", seed=1) == edge_paper003(x, y, seed=1)
    with pytest.raises(ValueError, match="unknown mutual information estimator 'mine'"):
        estimate(x, y, "mine")


def test_every_estimator_is_named_once_in_the_schema_and_has_a_revision():
    # The schema validates `semirobust.estimators`; the workflow re-runs a study when a revision changes.
    enum = config.schema()["properties"]["semirobust"]["properties"]["estimators"]["items"]["enum"]
    assert tuple(enum) == ESTIMATORS == tuple(REVISIONS) == tuple(LABELS)
    assert config.defaults("semirobust")["estimators"] == ["edge_paper003", "ksg"]
    with pytest.raises(ValueError, match="unknown mutual information estimator 'kde'"):
        revisions(["ksg", "kde"])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same number of samples"):
        edge(np.zeros((10, 2)), np.zeros((11, 2)))
    with pytest.raises(ValueError, match="NaN"):
        ksg(np.full((10, 1), np.nan), np.zeros((10, 1)))
    with pytest.raises(ValueError, match="KSG with k=3 needs at least 4 samples"):
        ksg(np.zeros((3, 1)), np.zeros((3, 1)))


def test_class_conditional_weighting():
    # Class 0 (30% of the samples): Y = 0.9 X + noise, 1.198 bits; class 1 (70%): independent.
    # sum_y pi(y) I(X; Y | y) = 0.3 * 1.198 = 0.359 bits.
    x0, y0 = gaussians(900, 1, 0.9, seed=7)
    rng = np.random.default_rng(8)
    x1, y1 = rng.standard_normal((2100, 1)), rng.standard_normal((2100, 1))
    x, y = np.vstack([x0, x1]), np.vstack([y0, y1])
    labels = np.r_[np.zeros(900, int), np.ones(2100, int)]
    result = class_conditional_mi(x, y, labels, "ksg")
    assert result.prior == {0: 0.3, 1: 0.7}
    assert result.value == pytest.approx(sum(result.prior[c] * result.per_class[c] for c in (0, 1)))
    assert result.value == pytest.approx(0.3 * truth(1, 0.9), abs=0.04)
    assert result.per_class[1] == pytest.approx(0.0, abs=0.05)
    # Interleaving the classes (each class's own order kept) changes nothing: each term sees its class alone.
    order = np.argsort(np.r_[np.arange(900) * 3.0, np.arange(2100) * 1.0 + 0.5], kind="stable")
    shuffled = class_conditional_mi(x[order], y[order], labels[order], "ksg")
    assert shuffled == result
    for estimator in ("edge", "edge_paper003"):
        edged = class_conditional_mi(x[order], y[order], labels[order], estimator)
        assert edged == class_conditional_mi(x, y, labels, estimator)
    assert class_conditional_mi(x, y, labels) == class_conditional_mi(x, y, labels, "edge_paper003")


def test_conditioning_on_the_label_removes_shared_class_information():
    # X and Y both reveal the class and are otherwise independent: I(X; Y) is large, I(X; Y | y) = 0.
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 2, 3000)
    x = 4.0 * labels[:, None] + rng.standard_normal((3000, 1))
    y = 4.0 * labels[:, None] + rng.standard_normal((3000, 1))
    assert ksg(x, y) > 0.5
    assert abs(class_conditional_mi(x, y, labels, "ksg").value) < 0.05
    assert edge(x, y) > 0.5
    assert class_conditional_mi(x, y, labels, "edge").value < 0.1
    assert edge_paper003(x, y) > 0.5
    assert class_conditional_mi(x, y, labels, "edge_paper003").value < 0.1


def test_a_class_too_small_is_named():
    labels = np.r_[np.zeros(50, int), np.ones(2, int)]
    with pytest.raises(ValueError, match="class 1: KSG with k=3 needs at least 4 samples"):
        class_conditional_mi(np.zeros((52, 1)), np.zeros((52, 1)), labels, "ksg")


# --- the reference steps, written out plainly --------------------------------------------------
# Straightforward transcriptions of the steps the module docstring cites (loops, sorting,
# dictionaries), drawing from the seeded generator in the documented order, so that
# every step of the vectorized estimators is checked against an independent computation.

def knn_scale_by_sorting(values, k, queries):
    """find_knn: mean over the queries of the k-th smallest distance to the samples, plus 1e-4."""
    return float(np.mean([np.sort(np.abs(values - values[q]))[k - 1] for q in queries])) + 1e-4


def rank_k(n, d):
    return math.floor(0.43 * n ** (2 / 3 + 0.17 * d / (d + 1)) * math.exp(-1.0 / max(10_000, d ** 4)))


def project_by_hand(a, rng):
    n, d = a.shape
    d_proj = max(1, min(d, math.floor(math.log2(n / 10))))
    s = a.std(axis=0)
    s = np.where(s < 1e-4, 1.0, s)
    return (a / s) @ rng.standard_normal((d, d_proj)) / math.sqrt(d)


def plug_in_by_counting(keys_x, keys_y, upper):
    """Compute_MI: (1/N) sum over occupied cells of N_ij clip(log2(N_ij N / (N_i M_j)), 0.001, U)."""
    n = len(keys_x)
    cx, cy, cxy = Counter(keys_x), Counter(keys_y), Counter(zip(keys_x, keys_y))
    return sum(m * min(max(math.log2(m * n / (cx[a] * cy[b])), 0.001), upper) for (a, b), m in cxy.items()) / n


def bucket_keys(z, eps, shift):
    return [tuple(math.floor((z[i, c] + shift[c]) / eps[c]) for c in range(z.shape[1])) for i in range(len(z))]


def paper003_by_hand(x, y, seed):
    """SemirobustSubnetworks' EDGE(X, Y) as its get_mi_estimate calls it (L_ensemble=1,
    stochastic=True, normalize_epsilon=False)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    project = x.shape[1] > 6 or y.shape[1] > 6                 # else hashing = 'floor'
    zs = [project_by_hand(a, rng) if project else a for a in (x, y)]
    queries = rng.integers(0, n, size=500)
    eps = []
    for a, z in zip((x, y), zs):
        d, d_proj = a.shape[1], z.shape[1]
        k = rank_k(n, d_proj)
        factor = 0.4 * 18 * d_proj / max(1 + math.log(d), 1)    # gamma 1 * 0.4, cx = 18 d'/(1 + ln d)
        eps.append(np.array([factor * knn_scale_by_sorting(z[:, c], k, queries) for c in range(d_proj)]))
    shifts = [0.1 * rng.random(len(e)) * e for e in eps]       # b = f rand(d') eps, f = 0.1
    return plug_in_by_counting(bucket_keys(zs[0], eps[0], shifts[0]), bucket_keys(zs[1], eps[1], shifts[1]), 10.0)


def edge431_by_hand(x, y, seed, gamma=0.9, calibrate=True, ensemble=10, spread=0.1):
    """EDGE_4_3_1.EDGE with its defaults: gamma 1 * 0.9, cx = 3 d', L = 10 widths over
    [eps, 1.1 eps] with shifts (l/L) eps_l, their median, then normalize_epsilon's re-entry."""
    rng = np.random.default_rng(seed)
    n = len(x)
    zs = [project_by_hand(a, rng) for a in (x, y)]
    queries = rng.integers(0, n, size=500)
    base = [np.array([3 * z.shape[1] * knn_scale_by_sorting(z[:, c], rank_k(n, z.shape[1]), queries)
                      for c in range(z.shape[1])]) for z in zs]

    def median_of_hashes(g):
        values = []
        for l, t in enumerate(np.linspace(1, 1 + spread, ensemble)):
            eps = [b * g * t for b in base]
            keys = [bucket_keys(z, e, (l / ensemble) * e) for z, e in zip(zs, eps)]
            values.append(plug_in_by_counting(keys[0], keys[1], 10.0))
        return float(np.median(values))

    first = median_of_hashes(gamma)
    if not calibrate:
        return first
    # The recursion: gamma * 2^(0.5/I - sqrt(2 I)) passed back into EDGE, which multiplies by 0.9.
    return median_of_hashes(0.9 * (gamma * 2.0 ** (0.5 / first - math.sqrt(2.0 * first))))


@pytest.mark.parametrize("n, dx, dy, offset", [(300, 1, 1, 0.0), (300, 3, 5, 2.5), (300, 2, 9, 0.0),
                                               (400, 12, 30, -1.0)])
def test_edge_paper003_equals_the_reference_steps(n, dx, dy, offset):
    # Both variables at most 6-dimensional: raw coordinates, no projection (the offset moves the
    # buckets, since nothing is centred); otherwise both projected to min(d, floor(log2(N/10))).
    rng = np.random.default_rng(n + dx)
    x = rng.standard_normal((n, dx)) + offset
    y = 0.7 * x[:, :1] + rng.standard_normal((n, dy))
    for seed in (0, 1):
        assert edge_paper003(x, y, seed=seed) == pytest.approx(paper003_by_hand(x, y, seed), abs=1e-12)


@pytest.mark.parametrize("n, dx, dy", [(300, 1, 1), (300, 3, 8)])
def test_edge_equals_the_4_3_1_steps(n, dx, dy):
    rng = np.random.default_rng(n + dx)
    x = rng.standard_normal((n, dx))
    y = 0.7 * x[:, :1] + rng.standard_normal((n, dy))
    assert edge(x, y, seed=2) == pytest.approx(edge431_by_hand(x, y, 2), abs=1e-12)
    assert (edge(x, y, EdgeOptions(calibrate=False), seed=2)
            == pytest.approx(edge431_by_hand(x, y, 2, calibrate=False), abs=1e-12))


def test_calibration_applies_the_0_9_factor_again():
    # EDGE_4_3_1's normalize_epsilon re-enters EDGE with gamma * 2^e, and EDGE scales its gamma by
    # 0.9 on entry: the re-estimate's width factor is 0.9 * 0.9 * 2^e, not 0.9 * 2^e.
    x, y = gaussians(1000, 2, 0.7, seed=12)
    first = edge(x, y, EdgeOptions(calibrate=False), seed=3)
    exponent = 0.5 / first - math.sqrt(2.0 * first)
    twice = edge(x, y, EdgeOptions(calibrate=False, gamma=0.9 * 0.9 * 2.0 ** exponent), seed=3)
    once = edge(x, y, EdgeOptions(calibrate=False, gamma=0.9 * 2.0 ** exponent), seed=3)
    assert twice != once
    assert edge(x, y, seed=3) == twice


def test_edge_paper003_on_clusters_by_hand():
    # 48 samples in 6 clusters of 8: 4 at c, 4 at c + h (h = 0.1), clusters more than h apart, so
    # every sample's k-th nearest sample (itself counted) is h away for 4 < k <= 8. Both variables
    # have d <= 6, so their raw coordinates are hashed.
    # X = (x1, 0): d' = d = 2, k = floor(0.43 * 48^(2/3 + 0.17 * 2/3) * e^(-1e-4)) = 8,
    #   eps = 0.4 * 18 * 2 / (1 + ln 2) * (h + 1e-4) = 0.85134 for x1; the constant coordinate has
    #   k-NN distance 0, so eps = 8.5e-4 there and every sample is in its bucket 0.
    # Y: d' = d = 1, k = floor(0.43 * 48^(2/3 + 0.17/2)) = 7, eps = 0.4 * 18 * (h + 1e-4) = 0.72072.
    # Clusters sit at bucket * eps + offset with offsets that keep them inside their bucket for any
    # shift b in [0, 0.1 eps): X holds clusters {0, 1}, {2, 3}, {4, 5} in buckets 0, 1, 2; Y holds
    # {5, 0, 1}, {2}, {3, 4}.
    h, eps_x, eps_y = 0.1, 0.85134, 0.72072
    x_place = {a: (a // 2, (0.02, 0.45)[a % 2]) for a in range(6)}
    y_place = {5: (0, 0.02), 0: (0, 0.25), 1: (0, 0.48), 2: (1, 0.02), 3: (2, 0.02), 4: (2, 0.25)}
    x, y, x_bucket, y_bucket = [], [], [], []
    for a in range(6):
        for t in range(8):
            half = h * (t >= 4)
            x.append([x_place[a][0] * eps_x + x_place[a][1] + half, 0.0])
            y.append([y_place[a][0] * eps_y + y_place[a][1] + half])
            x_bucket.append(x_place[a][0])
            y_bucket.append(y_place[a][0])
    # Cells (X, Y bucket): (0, 0) 16 samples, (1, 1), (1, 2), (2, 2), (2, 0) 8 each; N_i = 16, M_j =
    # 24, 8, 16: log2 of 2, 3, 1.5, 1.5, 1 (clipped to 0.001), so I = 0.7927 bits.
    expected = plug_in_by_counting(x_bucket, y_bucket, 10.0)
    assert expected == pytest.approx((16 + 8 * (math.log2(3) + 2 * math.log2(1.5) + 0.001)) / 48)
    for seed in range(4):
        assert edge_paper003(np.array(x), np.array(y), seed=seed) == pytest.approx(expected, abs=1e-12)


def test_edge_paper003_is_far_above_zero_for_independent_data_in_many_dimensions():
    # The issue's sizes: on 1,000 independent Gaussians paper 003's EDGE gives about 1.5 bits at
    # d = 10 and 2.9 at d = 50 (benchmarks/bench_mutual_info.py: 1.47 +- 0.12 and 2.90 +- 0.10 over
    # 5 draws), the 4.3.1 EDGE 0.20 and 0.41.
    for d, low, high in ((10, 1.1, 1.9), (50, 2.5, 3.3)):
        rng = np.random.default_rng(20 + d)
        x, y = rng.standard_normal((1000, d)), rng.standard_normal((1000, d))
        assert low < edge_paper003(x, y) < high
        assert edge(x, y) < 0.6
