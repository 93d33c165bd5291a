"""The claims table: where a configuration can test each claim, the paired bootstrap, the verdicts."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from layerbound.bounds import claims, losses
from layerbound.plan import claims as claim_plan
from layerbound import config
from layerbound import plan
from layerbound.bounds.claim_statistics import CLAIM_COLUMNS, evaluate, verdict
from layerbound.bounds.paired_bootstrap import HALF_LOG2, PairedBootstrap, cliff, interval, mean_loss
from workflow_helpers import ROOT

LOG2 = math.log(2.0)
GRID = np.linspace(0.0, 4.0, 17)


def _job(instances, replicates=200, grid=GRID):
    return {"eps": list(map(float, grid)), "replicates": replicates, "margin": claims.EQUIVALENCE_MARGIN,
            "units": {}, "instances": instances}


def _instance(claim, units, **extra):
    return {"claim": claim, "dataset": "mnist5k", "pairset": "c3v7-S8-seed0", "collision_method": "jacobian",
            "m": "10", "models": ["a", "b"], "layers": ["logits"], "units": units, "params": {}, "fab": None, **extra}


def _row(table, claim):
    rows = table.loc[table["claim"] == claim]
    assert len(rows) == 1
    return rows.iloc[0]


# --- verdicts --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lo,hi,expected", [(0.01, 0.3, "holds"), (-0.3, -0.01, "contradicted"),
                                            (-0.1, 0.2, "undecided"), (0.0, 0.2, "undecided"),
                                            (float("nan"), float("nan"), "undecided"), (0.5, math.inf, "holds")])
def test_verdict_of_a_direction_claim(lo, hi, expected):
    assert verdict(lo, hi) == expected


@pytest.mark.parametrize("lo,hi,expected", [(-0.01, 0.02, "holds"), (0.04, 0.3, "contradicted"),
                                            (-0.3, -0.035, "contradicted"), (-0.01, 0.05, "undecided")])
def test_verdict_of_an_equivalence_claim(lo, hi, expected):
    assert claims.EQUIVALENCE_MARGIN == pytest.approx(0.0347, abs=1e-4)
    assert verdict(lo, hi, equivalence=True) == expected


# --- the unit quantities: closed forms ------------------------------------------------------------------------

def test_mean_loss_and_cliff_of_a_step_curve():
    """Every pair at distance t: the conflict graph is empty below t and complete from t, so the
    optimal cross-entropy is 0 then log 2 (q = 1/2 everywhere). Between the grid budgets g_k < t <=
    g_k+1 the trapezoid gives area log 2 * ((g_k+1 - g_k) / 2 + (g_max - g_k+1)), and the cliff is
    the midpoint of the two budgets."""
    t = 1.1   # grid step 0.25: between 1.0 and 1.25
    boot = PairedBootstrap(GRID, 5, 5, 0)
    curves = boot.ce_curves("u", np.full((1, 5, 5), t))
    np.testing.assert_allclose(curves[0], np.where(GRID >= t, LOG2, 0.0), atol=1e-12)
    expected = LOG2 * (0.25 / 2 + (4.0 - 1.25)) / 4.0
    assert mean_loss(curves, GRID)[0] == pytest.approx(expected, rel=1e-12)
    assert cliff(curves, GRID)[0] == pytest.approx(1.125, rel=1e-12)
    assert cliff(np.zeros((1, GRID.size)), GRID)[0] == math.inf          # never reaches log(2)/2
    assert cliff(np.full((1, GRID.size), HALF_LOG2), GRID)[0] == GRID[0]  # reached at the first budget


def test_projection_resampling_has_its_closed_form_interval():
    """Two projections, one with every distance 1, one with every distance 3, no example noise: a
    replicate's mean distance is 1, 2 or 3 with probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5%
    order statistics of 400 replicates are 1 and 3."""
    d = np.stack([np.full((6, 6), 1.0), np.full((6, 6), 3.0)])
    boot = PairedBootstrap(GRID, 6, 6, 400)
    values = boot.mean_distances("u", d)
    assert values[0] == 2.0
    assert set(np.unique(values[1:])) == {1.0, 2.0, 3.0}
    assert interval(values) == (1.0, 3.0)


def test_the_resampled_examples_are_the_loss_tables():
    """With one projection, each replicate's loss curve is the one the loss table's bootstrap solves,
    so their linear-interpolated percentiles are the table's band."""
    d = np.random.default_rng(4).uniform(0.3, 3.5, (1, 7, 7))
    table = losses.loss_table(d, GRID, replicates=100)
    curves = PairedBootstrap(GRID, 7, 7, 100).ce_curves("u", d)
    np.testing.assert_allclose(curves[0], table["ce_mean"], rtol=1e-12, atol=1e-15)
    lo, hi = np.percentile(curves[1:], [2.5, 97.5], axis=0)
    np.testing.assert_allclose(lo, table["ce_lo"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hi, table["ce_hi"], rtol=1e-12, atol=1e-15)


# --- the paired bootstrap through the claims table -------------------------------------------------------------

def _clear_case(seed=0, s=8):
    """Class-A / class-B distances whose loss curves differ clearly: `near` collides at budgets
    around 1, `far` around 3 (both with example-to-example spread)."""
    rng = np.random.default_rng(seed)
    near = rng.uniform(0.5, 1.5, (2, s, s))
    far = rng.uniform(2.5, 3.5, (2, s, s))
    return near, far


def test_a_clear_win_holds_and_a_clear_loss_is_contradicted():
    near, far = _clear_case()
    arrays = {"near": near, "far": far}
    # Benign at `near` (collides early: higher loss) against adversarial at `far`: the claim holds.
    win = evaluate(_job([_instance("001_benign_least_robust", {"benign": "near", "adversarial": "far"})]),
                   arrays.__getitem__)
    row = _row(win, "001_benign_least_robust")
    assert row.verdict == "holds" and 0 < row.lo <= row.value <= row.hi
    # Swapped: the statistic is the negative, the interval mirrored, the claim contradicted.
    loss = evaluate(_job([_instance("001_benign_least_robust", {"benign": "far", "adversarial": "near"})]),
                    arrays.__getitem__)
    swapped = _row(loss, "001_benign_least_robust")
    assert swapped.verdict == "contradicted" and swapped.lo <= swapped.value <= swapped.hi < 0
    assert swapped.value == pytest.approx(-row.value, rel=1e-12)


def test_two_draws_of_one_distribution_are_undecided():
    rng = np.random.default_rng(3)
    arrays = {"x": rng.uniform(0.5, 3.5, (2, 8, 8)), "y": rng.uniform(0.5, 3.5, (2, 8, 8))}
    table = evaluate(_job([_instance("001_benign_least_robust", {"benign": "x", "adversarial": "y"})]),
                     arrays.__getitem__)
    row = _row(table, "001_benign_least_robust")
    assert row.verdict == "undecided" and row.lo < 0 < row.hi


def test_identical_inputs_give_a_zero_interval():
    """One projection and the same distances in both files: every replicate resamples the same
    examples in both, so the difference is 0 in each; the equivalence claim holds, a direction
    claim is undecided."""
    d = np.random.default_rng(1).uniform(0.5, 3.5, (1, 8, 8))
    arrays = {"layer": d, "input": d.copy()}
    table = evaluate(_job([_instance("unprojected_first_layer_as_input", {"layer": "layer", "input": "input"}),
                           _instance("001_benign_least_robust", {"benign": "layer", "adversarial": "input"})]),
                     arrays.__getitem__)
    for claim, expected in (("unprojected_first_layer_as_input", "holds"), ("001_benign_least_robust", "undecided")):
        row = _row(table, claim)
        assert (row.value, row.lo, row.hi) == (0.0, 0.0, 0.0)
        assert row.verdict == expected


def test_examples_are_resampled_together_so_a_constant_shift_is_exact():
    """The second file's distances are the first's plus 0.3 (one projection each): per file the mean
    distance varies a lot between resamples of the examples, but paired, the difference is 0.3 in
    every replicate. Resampling each file's examples separately would give a wide interval."""
    d = np.random.default_rng(2).uniform(0.2, 3.0, (1, 8, 8))
    arrays = {"conv1": d, "logits": d + 0.3}
    table = evaluate(_job([_instance("001_distance_grows_with_depth", {"first": "conv1", "last": "logits"})]),
                     arrays.__getitem__)
    row = _row(table, "001_distance_grows_with_depth")
    assert row.value == pytest.approx(0.3) and row.lo == pytest.approx(0.3) and row.hi == pytest.approx(0.3)
    assert row.verdict == "holds"
    single = PairedBootstrap(GRID, 8, 8, 200).mean_distances("conv1", d)
    lo, hi = interval(single)
    assert hi - lo > 0.2   # the per-file band alone is wide


def test_projections_of_different_files_are_resampled_independently():
    """Both files hold one projection at distance 1 and one at 3 (no example noise): with draws
    shared between files the difference would be 0 in every replicate; independent, it is -2, -1, 0,
    1 or 2 (probabilities 1/16, 1/4, 3/8, 1/4, 1/16), so the interval is [-2, 2]."""
    d = np.stack([np.full((6, 6), 1.0), np.full((6, 6), 3.0)])
    table = evaluate(_job([_instance("001_distance_grows_with_depth", {"first": "a", "last": "b"})], replicates=400),
                     {"a": d, "b": d.copy()}.__getitem__)
    row = _row(table, "001_distance_grows_with_depth")
    assert (row.value, row.lo, row.hi) == (0.0, -2.0, 2.0)


def test_cliffs_beyond_the_grid_tie_and_a_censored_pgd_cliff_counts_as_later():
    never = np.full((1, 6, 6), 10.0)   # no edge on the grid: E = +inf
    early = np.full((1, 6, 6), 1.1)
    both = evaluate(_job([_instance("001_trades_cliff_earlier", {"pgd": "n1", "trades": "n2"})]),
                    {"n1": never, "n2": never.copy()}.__getitem__)
    row = _row(both, "001_trades_cliff_earlier")
    assert (row.value, row.lo, row.hi, row.verdict) == (0.0, 0.0, 0.0, "undecided")
    one = evaluate(_job([_instance("001_trades_cliff_earlier", {"pgd": "n", "trades": "e"})]),
                   {"n": never, "e": early}.__getitem__)
    row = _row(one, "001_trades_cliff_earlier")
    assert row.value == math.inf and row.verdict == "holds" and "beyond the eps grid" in row.note


def test_step_claims_compare_a_step_with_the_average_step():
    """Layers with all distances at 0.6, 1.6, 2.6, 2.7 (one projection, on the grid): losses log 2
    from those budgets on, so A = log 2 (4 - t + 0.05) / 4 and the gains are log 2 / 4 times 1, 1 and
    0.1, their average 0.7: the first step is larger, the last (to the logits) smaller, and no
    resample of the examples changes a graph with every pair at one distance."""
    grid = np.linspace(0.0, 4.0, 41)
    arrays = {f"l{i}": np.full((1, 6, 6), t) for i, t in enumerate((0.6, 1.6, 2.6, 2.7))}
    units = {f"l{i}": f"l{i}" for i in range(4)}
    table = evaluate(_job([_instance("001_little_gain_at_logits", units),
                           _instance("001_large_first_step", units),
                           _instance("001_first_layer_weakest", units)], grid=grid), arrays.__getitem__)
    A = [LOG2 * (4.0 - t + 0.05) / 4.0 for t in (0.6, 1.6, 2.6, 2.7)]   # the jump's half-step trapezoid
    average = (A[0] - A[3]) / 3
    little = _row(table, "001_little_gain_at_logits")
    assert little.value == pytest.approx(0.6 * LOG2 / 4, abs=1e-12)
    assert little.value == pytest.approx(average - (A[2] - A[3]), abs=1e-12)
    assert little.verdict == "holds"
    first = _row(table, "001_large_first_step")
    assert first.value == pytest.approx(0.3 * LOG2 / 4, abs=1e-12)
    assert first.value == pytest.approx((A[0] - A[1]) - average, abs=1e-12)
    assert (first.lo, first.hi, first.verdict) == (pytest.approx(first.value), pytest.approx(first.value), "holds")
    weakest = _row(table, "001_first_layer_weakest")
    assert weakest.value == pytest.approx(A[0] - A[1], abs=1e-12) and weakest.verdict == "holds"


def test_fab_claim_pairs_the_fab_points_with_the_same_examples():
    """FAB cross-entropy 0.2 on class-A examples, 0.8 on class-B ones (never reached, so the clean
    point's), collision loss 0 (no edge): the mean over any resample keeps S of each class, so the
    statistic is 0.5 in every replicate."""
    s = 6
    points = pd.DataFrame({"example": np.arange(2 * s)[::-1], "label": [7] * s + [3] * s,
                           "norm": np.inf, "ce_clean": [0.8] * s + [0.2] * s, "ce_fab": 9.0})
    table = evaluate(_job([_instance("001_fab_above_collision", {"logits": "logits"}, fab="fab.csv")]),
                     {"logits": np.full((1, s, s), 10.0)}.__getitem__, {"fab.csv": points}.__getitem__)
    row = _row(table, "001_fab_above_collision")
    assert (row.value, row.lo, row.hi, row.verdict) == pytest.approx((0.5, 0.5, 0.5, "holds"))


def test_fab_claim_reads_the_fab_loss_its_row_names():
    """Every example reached at eps >= 1 (FAB norm 1): two-class cross-entropy 0.1 there, the
    model's all-class one 2.0; clean 0.0 and 0.05. Collision loss: log 2 from eps = 1 on (every
    pair at distance 1, one edge per pair: the optimal loss of a complete bipartite conflict graph),
    0 below. So the statistic, the minimum over the grid [0, 1, 2] of FAB minus collision, is
    min(0, 0.1 - log 2) with the two-class loss and min(0.05, 2 - log 2) = 0.05 with the model's."""
    s = 4
    points = pd.DataFrame({"example": np.arange(2 * s), "label": [3] * s + [7] * s, "norm": 1.0,
                           "ce_clean": 0.0, "ce_fab": 0.1, "ce_all_clean": 0.05, "ce_all_fab": 2.0})
    rows = [_instance("001_fab_above_collision", {"logits": "logits"}, fab="fab.csv", params={"fab_loss": loss})
            for loss in ("ce", "ce_all")]
    table = evaluate(_job(rows, grid=[0.0, 1.0, 2.0]), {"logits": np.full((1, s, s), 1.0)}.__getitem__,
                     {"fab.csv": points}.__getitem__)
    two_class, all_classes = table.loc[table["claim"] == "001_fab_above_collision"].itertuples()
    assert two_class.value == pytest.approx(0.1 - LOG2, abs=1e-12) and two_class.verdict == "contradicted"
    assert all_classes.value == pytest.approx(0.05, abs=1e-12) and all_classes.verdict == "holds"
    assert two_class.note.startswith(claims.FAB_LOSSES["ce"]) and all_classes.note.startswith(claims.FAB_LOSSES["ce_all"])


def test_a_claim_without_instances_is_one_not_tested_row():
    near, far = _clear_case()
    table = evaluate(_job([_instance("001_benign_least_robust", {"benign": "near", "adversarial": "far"})]),
                     {"near": near, "far": far}.__getitem__)
    assert list(table.columns) == CLAIM_COLUMNS
    assert list(dict.fromkeys(table["claim"])) == list(claims.CLAIMS)
    untested = table.loc[table["verdict"] == "not tested"]
    assert len(untested) == len(claims.CLAIMS) - 1 and untested["note"].str.startswith("needs ").all()
    assert untested["value"].isna().all()


def test_no_bootstrap_gives_no_interval_and_no_verdict():
    near, far = _clear_case()
    table = evaluate(_job([_instance("001_benign_least_robust", {"benign": "near", "adversarial": "far"})],
                          replicates=0), {"near": near, "far": far}.__getitem__)
    row = _row(table, "001_benign_least_robust")
    assert row.value > 0 and math.isnan(row.lo) and row.verdict == "undecided"


# --- where a configuration can test each claim ----------------------------------------------------------------

def _counts(cfg) -> dict[str, list[tuple]]:
    found: dict[str, list[tuple]] = {}
    for inst in claim_plan.instances(plan.Plan(cfg)):
        found.setdefault(inst.claim, []).append((tuple(inst.models), tuple(inst.layers), inst.collision_method, inst.m))
    return found


def test_default_config_tests_paper_001_on_its_three_models():
    found = _counts(config.load(ROOT / "config.yaml"))
    assert sorted(found["001_loss_falls_with_depth"]) == [
        ((name,), ("conv1", "logits"), "jacobian", "10") for name in ("medium_benign", "medium_pgd2", "medium_trades2")]
    assert sorted(m for m, *_ in found["001_benign_least_robust"]) == [("medium_benign", "medium_pgd2"),
                                                                      ("medium_benign", "medium_trades2")]
    assert found["001_trades_cliff_earlier"] == [(("medium_pgd2", "medium_trades2"), ("conv1",), "jacobian", "10")]
    assert found["001_trades_fc_separation"][0][1] == ("fc5", "fc6", "logits")
    assert len(found["001_fab_above_collision"]) == 6   # each model with both FAB losses (claims.FAB_LOSSES)
    assert not any(claim.startswith("002_") for claim in found)   # no unprojected FCNN layers here


def test_claims_follow_training_and_layers_not_model_names():
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    renamed = {"x": raw["models"]["medium_trades2"], "y": raw["models"]["medium_benign"], "z": raw["models"]["medium_pgd2"]}
    raw["models"] = renamed
    raw["semirobust"]["studies"]["medium"].update(robust="z", regular="y")
    found = _counts(config.validate(raw))
    assert found["001_trades_cliff_earlier"] == [(("z", "x"), ("conv1",), "jacobian", "10")]
    assert sorted(m for m, *_ in found["001_benign_least_robust"]) == [("y", "x"), ("y", "z")]


def test_paper002_config_tests_the_fcnn_claims_and_not_paper_001s():
    found = _counts(config.load(ROOT / "config" / "paper002_fcnn.yaml"))
    assert not any(claim.startswith("001_") for claim in found)   # no projected layer
    assert sorted({m for m, *_ in found["002_narrower_less_robust"]}) == [("fcnn_small_benign", "fcnn_benign"),
                                                                       ("fcnn_smaller_benign", "fcnn_small_benign")]
    assert sorted({m for m, *_ in found["002_larger_train_eps_more_robust"]}) == [("fcnn_pgd1", "fcnn_pgd2"),
                                                                               ("fcnn_pgd2", "fcnn_pgd3")]
    assert {m for m, *_ in found["002_diminishing_returns_of_train_eps"]} == {("fcnn_pgd1", "fcnn_pgd2", "fcnn_pgd3")}
    assert {m for m, *_ in found["002_pgd_trades_gap_fades"]} == {("fcnn_pgd2", "fcnn_trades2")}
    # Both collision methods: each layer claim once per method, and the methods compared on every layer.
    assert {method for *_, method, _ in found["002_first_relu_raises_bound"]} == {"jacobian", "polytope"}
    assert len(found["polytope_at_most_jacobian"]) == 7 * 4


def test_unprojected_first_layer_is_compared_with_the_input_only_when_at_least_as_wide():
    found = _counts(config.load(ROOT / "config" / "paper001_fig7.yaml"))
    assert found == {"unprojected_first_layer_as_input": [(("medium_pgd2",), ("conv1",), "polytope", "25088")]}


def test_paper_mnist_tests_the_m_sweep_and_the_architectures():
    found = _counts(config.load(ROOT / "config" / "paper_mnist.yaml"))
    assert found["001_loss_falls_with_m"] == [(("medium_pgd2",), ("conv1",), "jacobian", "10 vs 784")]
    assert {m for m, *_ in found["001_small_cnn_first_layer_better"]} == {
        ("small_benign", "medium_benign"), ("small_pgd2", "medium_pgd2"), ("small_trades2", "medium_trades2")}


def test_the_job_names_every_file_it_reads():
    p = plan.Plan(config.load(ROOT / "config.yaml"))
    job = claim_plan.job(p)
    used = {name for inst in job["instances"] for name in inst["units"].values()}
    assert used == set(job["units"])
    assert all(path.startswith("results/distances/") for path in job["units"].values())
    files = claim_plan.input_files(job)
    assert "results/attacks/mnist5k/c3v7-S8-seed0/fab/medium_pgd2.csv" in files
    assert job["replicates"] == 200 and job["eps"][0] == 0.0 and len(job["eps"]) == 41
