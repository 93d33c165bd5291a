"""Loss tables: eps grids, aggregation over projections, the summary table and CSV helpers."""

import math

import numpy as np
import pandas as pd
import pytest

from layerbound.bounds import losses
from layerbound.bounds.graph import optimal_01_loss, optimal_ce_loss
from layerbound.bounds.losses import (
    KEY_COLUMNS,
    TABLE_COLUMNS,
    eps_grid,
    loss_table,
    read_table,
    stack,
    summarize,
    write_table,
)


def _distances(seed, n_p=4, s=12):
    rng = np.random.default_rng(seed)
    return rng.random((n_p, s, s)) * 2.0


def test_eps_grid_from_range_is_inclusive():
    grid = eps_grid({"start": 0.0, "stop": 2.0, "num": 5})
    np.testing.assert_allclose(grid, [0.0, 0.5, 1.0, 1.5, 2.0])
    assert grid.dtype == np.float64


def test_eps_grid_from_list_is_sorted_and_unique():
    np.testing.assert_array_equal(eps_grid([1, 0.25, 3, 1]), [0.25, 1.0, 3.0])
    np.testing.assert_array_equal(eps_grid(0.5), [0.5])


@pytest.mark.parametrize(
    "spec",
    [{"start": 0, "stop": 1}, {"start": 0, "stop": 1, "num": 0}, [], [-1.0, 1.0], [float("nan")]],
)
def test_eps_grid_rejects_bad_specs(spec):
    with pytest.raises(ValueError):
        eps_grid(spec)


def test_loss_table_aggregates_projections():
    d = _distances(1)
    grid = np.linspace(0, 1.0, 9)
    table = loss_table(d, grid)
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == grid.size
    np.testing.assert_allclose(table["eps"], grid)
    assert (table["projections"] == d.shape[0]).all()
    for k, eps in enumerate(grid):
        ce = np.array([optimal_ce_loss(dp, eps)[0] for dp in d])
        zo = np.array([optimal_01_loss(dp, eps) for dp in d])
        edges = np.array([np.count_nonzero(dp <= eps) for dp in d])
        row = table.iloc[k]
        assert row["ce_mean"] == pytest.approx(ce.mean(), abs=1e-12)
        assert row["ce_std"] == pytest.approx(ce.std(ddof=1), abs=1e-12)
        assert row["ce_min"] == pytest.approx(ce.min(), abs=1e-12)
        assert row["ce_max"] == pytest.approx(ce.max(), abs=1e-12)
        assert row["zero_one_mean"] == pytest.approx(zo.mean(), abs=1e-12)
        assert row["zero_one_std"] == pytest.approx(zo.std(ddof=1), abs=1e-12)
        assert row["zero_one_min"] == pytest.approx(zo.min(), abs=1e-12)
        assert row["zero_one_max"] == pytest.approx(zo.max(), abs=1e-12)
        assert row["edges_mean"] == pytest.approx(edges.mean())
    assert np.all(np.diff(table["ce_mean"]) >= -1e-12)
    assert table["ce_max"].iloc[-1] <= math.log(2) + 1e-12


def test_loss_table_single_projection_has_zero_spread():
    table = loss_table(_distances(2, n_p=1), [0.0, 0.5, 2.0])
    assert (table["ce_std"] == 0).all() and (table["zero_one_std"] == 0).all()
    assert table["ce_mean"].iloc[-1] == pytest.approx(math.log(2))  # complete K_{12,12}


def test_loss_table_rejects_a_single_matrix():
    with pytest.raises(ValueError):
        loss_table(np.zeros((3, 3)), [0.1])


def test_summarize_stacks_tables_with_keys_in_order(tmp_path):
    grid = [0.0, 0.5, 1.0]
    tables = {
        ("mnist5k", "c3v7-S4-seed0", "jacobian", "small", "conv2", 10): loss_table(_distances(3), grid),
        ("mnist5k", "c3v7-S4-seed0", "jacobian", "small", "conv1", 10): loss_table(_distances(4), grid),
        ("mnist5k", "c3v7-S4-seed0", "jacobian", "small", "input", 5): loss_table(_distances(5), grid),
    }
    summary = summarize(tables)
    assert list(summary.columns) == KEY_COLUMNS + TABLE_COLUMNS
    assert len(summary) == 9
    assert list(summary["layer"]) == ["conv2"] * 3 + ["conv1"] * 3 + ["input"] * 3
    assert list(summary["m"]) == [10] * 6 + [5] * 3
    pd.testing.assert_frame_equal(
        summary.iloc[3:6][TABLE_COLUMNS].reset_index(drop=True),
        tables[("mnist5k", "c3v7-S4-seed0", "jacobian", "small", "conv1", 10)],
    )
    # Tables written one by one with their keys stack into the same summary.
    keyed = [summarize({key: table}) for key, table in tables.items()]
    pd.testing.assert_frame_equal(stack(keyed), summary)
    path = tmp_path / "out" / "summary.csv"
    write_table(summary, path)
    back = read_table(path)
    pd.testing.assert_frame_equal(back, summary, check_dtype=False)
    assert summarize({}).columns.tolist() == KEY_COLUMNS + TABLE_COLUMNS
    # Without bootstrap intervals (blank cells) and with no rows at all, a table still reads back.
    keyed = summarize({("mnist5k", "c3v7-S4-seed0", "jacobian", "small", "conv1", 10): loss_table(_distances(4), grid, 0)})
    write_table(keyed, path)
    assert read_table(path)["ce_lo"].isna().all() and len(read_table(path)) == 3
    write_table(summarize({}), path)
    assert read_table(path).empty
    # A row cut short (an edited or truncated file) is refused, naming the file.
    path.write_text(path.read_text() + "mnist5k,c3v7-S4-seed0\n")
    with pytest.raises(ValueError, match=r"summary.csv is not a loss table .* have empty cells"):
        read_table(path)
    with pytest.raises(ValueError):
        summarize({("mnist5k", "small"): tables[("mnist5k", "c3v7-S4-seed0", "jacobian", "small", "conv1", 10)]})


# --- bootstrap intervals ---------------------------------------------------------------------------

def test_bootstrap_interval_of_a_single_conflict_edge_is_known():
    """One edge (a0, b0) below eps among S x S pairs: on a resample with k_a copies of a0 and k_b of
    b0 the optimal 0-1 loss is min(k_a, k_b) / 2S (a complete bipartite block between the copies),
    with k_a, k_b ~ Binomial(S, 1/S) independent. For S = 8, P(min >= 2) = 0.070 and
    P(min >= 3) = 0.0045, so the 2.5% / 97.5% percentiles are 0 and 2/16; the mean is 1/16."""
    S = 8
    d = np.full((1, S, S), 10.0)
    d[0, 3, 5] = 0.5
    table = losses.loss_table(d, [1.0], replicates=400)
    row = table.iloc[0]
    assert row.zero_one_mean == 1 / 16
    assert row.zero_one_lo == 0.0 and row.zero_one_hi == 2 / 16
    assert row.ce_lo == 0.0 and row.ce_lo <= row.ce_mean <= row.ce_hi


def test_bootstrap_collapses_without_sampling_noise_and_is_seeded():
    # Every pair at the same distance: every resample has the same graph, so no interval width.
    d = np.full((2, 5, 5), 1.0)
    table = losses.loss_table(d, [0.5, 1.0, 2.0], replicates=50)
    for name in ("ce", "zero_one"):
        np.testing.assert_array_equal(table[f"{name}_lo"], table[f"{name}_mean"])
        np.testing.assert_array_equal(table[f"{name}_hi"], table[f"{name}_mean"])
    # Seeded: the same distances give the same interval; 0 replicates give none (NaN).
    rng = np.random.default_rng(1)
    d = rng.uniform(0, 3, (2, 6, 6))
    a, b = losses.loss_table(d, [1.0, 2.0]), losses.loss_table(d, [1.0, 2.0])
    np.testing.assert_array_equal(a["ce_lo"], b["ce_lo"])
    assert losses.loss_table(d, [1.0], replicates=0)[["ce_lo", "zero_one_hi"]].isna().all(axis=None)


def test_loss_tables_count_the_collisions_that_fell_back():
    """fell_back counts collisions reported from an earlier candidate or the midpoint, because
    the search's best could not be certified; fell_back_midpoint those from the midpoint."""
    d = np.full((2, 3, 3), 0.5)
    candidates = np.zeros(d.shape, dtype=np.int8)
    candidates[0, 1, 2], candidates[1, 0, 0], candidates[1, 2, 1] = 1, -1, -1
    table = loss_table(d, [0.0, 1.0], 0, candidates=candidates)
    assert (table["fell_back"] == 3).all() and (table["fell_back_midpoint"] == 2).all()
    assert (loss_table(d, [0.0, 1.0], 0)["fell_back"] == 0).all()
