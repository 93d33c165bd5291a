"""Figures and the report summary: what is drawn is what the tables and stored points say."""

import json
import math

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from matplotlib.colors import to_rgba

from layerbound.collide import shards
from layerbound.core.names import INPUT_LAYERS
from layerbound import plan
from layerbound.models import architectures
from layerbound.data import pairs
from layerbound.figures import collisions as figures_collisions, layers as figures, report, style as figures_style
from layerbound.bounds import losses
from layerbound.cli import main as cli_main
from layerbound.config import validate
from workflow_helpers import ROOT, job_counts, run_snakemake, write_config

TAPS = ["fc1", "fc2", "logits"]            # fcnn_smaller, in network order
WIDTHS = {"fc1": 75, "fc2": 50, "logits": 10}
KEY = ("mnist5k", "c3v7-S4-seed0", "jacobian")
EPS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def _metrics(model="net_pgd", method="pgd", eps=1.5):
    return {"model": model, "dataset": "mnist5k", "arch": "fcnn_smaller", "padding": "same",
            "train": {"method": method, "eps": eps if method != "benign" else 0.0, "norm": "l2"},
            "clean_test_accuracy": 0.9, "robust_test_accuracy": 0.5 if method != "benign" else 0.05,
            "robust_eval": {"norm": "l2", "eps": eps}}


def _tables(models=("net_pgd",), ms=(5,), seed=0, S=4, P=3) -> pd.DataFrame:
    """Keyed loss tables of `models` (layers in scrambled order) and the input baselines, from random distances."""
    rng = np.random.default_rng(seed)
    keyed = {}
    for mi, model in enumerate(models):
        for li, layer in enumerate(["logits", "fc1", "fc2"]):
            for m in ms:
                d = rng.uniform(0.2, 2.4, (P, S, S)) * (1 + 0.2 * li + 0.1 * mi)
                keyed[(*KEY, model, layer, m)] = losses.loss_table(d, EPS)
    for m in ms:
        keyed[(*KEY, "input", "input", m)] = losses.loss_table(rng.uniform(0.5, 2.5, (1, S, S)), EPS)
        keyed[(*KEY, "input", "input_rp", m)] = losses.loss_table(rng.uniform(0.1, 1.0, (P, S, S)), EPS)
    return losses.summarize(keyed)


def layer_curve(tables, model, layer, m=5):
    sel = (tables.model == model) & (tables.layer == layer) & (tables.m == m)
    return tables.loc[sel].sort_values("eps")


def _labelled_lines(ax):
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


# --- ordering ----------------------------------------------------------------------------------

def test_network_order_follows_taps_with_pre_activation_taps_before_their_tap():
    layers = ["logits", "extra", "fc2", "fc1_pre", "fc1"]
    assert architectures.network_order(layers, TAPS) == ["fc1_pre", "fc1", "fc2", "logits", "extra"]


def test_layer_colors_are_a_sequential_ramp_from_dark():
    colors = figures.layer_colors(4)
    luminance = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b, _ in colors]
    assert luminance == sorted(luminance) and len(set(luminance)) == 4


# --- Figures 8-15 -------------------------------------------------------------------------------

def test_loss_curves_plot_the_table_in_network_order_with_baselines():
    tables = _tables()
    order = architectures.network_order(tables.loc[tables.model == "net_pgd", "layer"], TAPS)
    fig = figures.loss_curves_figure(tables, order, _metrics(), 5, WIDTHS, KEY[1])
    ce_ax, zo_ax = fig.axes[:2]
    for ax, column in ((ce_ax, "ce"), (zo_ax, "zero_one")):
        lines = _labelled_lines(ax)
        labels = [label for label in lines if not label.startswith("training")]
        assert labels == ["fc1 (n=75)", "fc2 (n=50)", "logits (n=10)", "input (no projection)", "input RP (m=5)"]
        for label, (owner, layer) in zip(labels, [("net_pgd", "fc1"), ("net_pgd", "fc2"), ("net_pgd", "logits"),
                                                  ("input", "input"), ("input", "input_rp")]):
            table = layer_curve(tables, owner, layer)
            np.testing.assert_allclose(lines[label].get_xdata(), table["eps"])
            np.testing.assert_allclose(lines[label].get_ydata(), table[f"{column}_mean"])
        # Layers get the colormap ramp in network order; baselines are black, dashed / dotted.
        for label, color in zip(labels[:3], figures.layer_colors(3)):
            assert to_rgba(lines[label].get_color()) == pytest.approx(color)
        assert to_rgba(lines["input (no projection)"].get_color()) == to_rgba("black")
        assert lines["input (no projection)"].get_linestyle() == "--"
        assert lines["input RP (m=5)"].get_linestyle() == ":"
        # The training budget is marked.
        assert lines["training $\\epsilon$ = 1.5"].get_xdata()[0] == 1.5
    # Bands: the bootstrap interval (examples and projections), one per curve with any spread (the
    # unprojected input baseline has one too: its examples are resampled).
    bands = ce_ax.collections
    assert len(bands) == 5
    fc1 = layer_curve(tables, "net_pgd", "fc1")
    vertices = {tuple(np.round(v, 9)) for v in bands[0].get_paths()[0].vertices}
    for eps, low, high in zip(fc1.eps, fc1.ce_lo, fc1.ce_hi):
        assert (round(eps, 9), round(low, 9)) in vertices and (round(eps, 9), round(high, 9)) in vertices
    title = fig.texts[0].get_text() if fig.texts else fig._suptitle.get_text()
    for needle in ("mnist5k", "net_pgd", "PGD-1.5", "m=5", "3 random projections", "95% bootstrap interval",
                   "adversary: l2 unboxed"):
        assert needle in title


def test_without_a_bootstrap_the_bands_fall_back_to_the_projection_range():
    tables = _tables()
    for column in ("ce_lo", "ce_hi", "zero_one_lo", "zero_one_hi"):
        tables[column] = np.nan
    fig = figures.loss_curves_figure(tables, TAPS, _metrics(), 5, WIDTHS, KEY[1])
    bands = fig.axes[0].collections
    assert len(bands) == 4   # the unprojected input has no projection range
    fc1 = layer_curve(tables, "net_pgd", "fc1")
    vertices = {tuple(np.round(v, 9)) for v in bands[0].get_paths()[0].vertices}
    for eps, low, high in zip(fc1.eps, fc1.ce_min, fc1.ce_max):
        assert (round(eps, 9), round(low, 9)) in vertices and (round(eps, 9), round(high, 9)) in vertices


def test_figures_are_written_as_valid_png_and_pdf(tmp_path):
    from PIL import Image

    tables = _tables()
    fig = figures.loss_curves_figure(tables, TAPS, _metrics(), 5)
    png, pdf = tmp_path / "a" / "f.png", tmp_path / "a" / "f.pdf"
    figures.save(fig, png, pdf)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as img:
        img.verify()
        assert img.size[0] > 1000 and img.size[1] > 500
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")


def test_m_sweep_draws_one_curve_per_m_and_the_input_space():
    tables = _tables(ms=(5, 20, 100))
    fig = figures.m_sweep_figure(tables, "fc1", [100, 5, 20], _metrics(), width=75)
    lines = _labelled_lines(fig.axes[0])
    assert [k for k in lines if not k.startswith("training")] == [
        "m = 5", "m = 20", "m = 100 (>= n_j: no projection)", "input (no projection)"]
    np.testing.assert_allclose(lines["m = 20"].get_ydata(), layer_curve(tables, "net_pgd", "fc1", 20)["ce_mean"])


# --- training methods ------------------------------------------------------------------------------

def test_select_eps_picks_the_nearest_grid_row():
    table = layer_curve(_tables(), "net_pgd", "fc1")
    assert figures.select_eps(table, 1.0)["eps"] == 1.0
    assert figures.select_eps(table, 1.2)["eps"] == 1.0
    assert figures.select_eps(table, 1.3)["eps"] == 1.5
    assert figures.select_eps(table, 99)["eps"] == 2.5


def test_methods_figure_plots_each_models_loss_at_the_chosen_eps():
    models = ("net_benign", "net_pgd")
    tables = _tables(models=models)
    metrics = {"net_benign": _metrics("net_benign", "benign"), "net_pgd": _metrics("net_pgd", "pgd")}
    fig = figures.methods_figure(tables, metrics, TAPS, [1.0, 1.3], 5)
    axes = np.array(fig.axes).reshape(2, 2)
    for col, grid_eps in enumerate([1.0, 1.5]):
        for row, column in enumerate(["ce", "zero_one"]):
            lines = _labelled_lines(axes[row, col])
            for model, label in (("net_benign", "benign (net_benign)"), ("net_pgd", "PGD-1.5 (net_pgd)")):
                expected = [layer_curve(tables, model, layer).set_index("eps").loc[grid_eps, f"{column}_mean"] for layer in TAPS]
                np.testing.assert_allclose(lines[label].get_ydata(), expected)
                np.testing.assert_allclose(np.round(lines[label].get_xdata()), [0, 1, 2])
            baseline = layer_curve(tables, "input", "input").set_index("eps").loc[grid_eps, f"{column}_mean"]
            assert lines["input (no projection)"].get_ydata()[0] == pytest.approx(baseline)
    assert axes[0, 0].get_title().endswith("= 1")
    assert "nearest on the grid: 1.5" in axes[0, 1].get_title()
    assert [t.get_text() for t in axes[1, 0].get_xticklabels()] == TAPS


# --- Figure 3 ------------------------------------------------------------------------------------

def _write_collision_files(tmp_path, S=3, P=2, K=2):
    """A pair set and merged distance files (the layout shards.merge writes) with stored points."""
    rng = np.random.default_rng(1)
    x_a = rng.random((S, 1, 28, 28), dtype=np.float32)
    x_b = rng.random((S, 1, 28, 28), dtype=np.float32)
    pair_set = pairs.PairSet("c3v7-S3-seed0", "mnist5k", "train", (3, 7), S, 0, torch.from_numpy(x_a),
                             torch.from_numpy(x_b), torch.full((S,), 3), torch.full((S,), 7),
                             torch.arange(S), torch.arange(S) + 100)
    pairs_file = tmp_path / "pairs.h5"
    pairs.save(pairs_file, pair_set)
    files, stored = [], {}
    for model, layer, projections in (("net_pgd", "fc2", P), ("input", "input", 1), ("net_pgd", "fc1", P)):
        x_tilde = rng.random((projections, K, 1, 28, 28), dtype=np.float32)
        x_tilde_prime = rng.random((projections, K, 1, 28, 28), dtype=np.float32)
        path = tmp_path / f"{layer}.h5"
        with h5py.File(path, "w") as h5:
            bounds = np.linalg.norm((x_a[:, None] - x_b[None]).reshape(S, S, -1), axis=2) / 2
            h5["midpoint_bounds"] = bounds
            h5["distances"] = rng.random((projections, S, S)) * bounds   # a collision is never past the midpoint
            h5["residuals"] = np.zeros((projections, S, S))
            h5["points/pair"] = np.arange(K)
            h5["points/x_tilde"] = x_tilde
            h5["points/x_tilde_prime"] = x_tilde_prime
            h5.attrs.update({"format": shards.MERGED_FORMAT, "dataset": "mnist5k", "pairset": "c3v7-S3-seed0",
                             "method": "jacobian", "model": model, "layer": layer, "m": 5, "n_j": 75,
                             "projected": int(projections > 1), "projections": projections,
                             "options_json": '{"box": [0.0, 1.0]}'})
        files.append(path)
        stored[layer] = path
    return pairs_file, files, stored, x_a, x_b


def test_collision_figure_shows_the_norms_of_the_stored_points(tmp_path):
    pairs_file, files, stored, x_a, x_b = _write_collision_files(tmp_path)
    merged = {layer: shards.read_merged(path) for layer, path in stored.items()}
    pair, projection, S = 1, 1, 3
    rows = figures_collisions.collision_rows(merged, ["input", "fc1", "fc2"], x_a, x_b, pair, projection)
    assert [r["layer"] for r in rows] == ["input", "fc1", "fc2"]
    i, j = divmod(pair, S)
    for row in rows:
        with h5py.File(stored[row["layer"]], "r") as h5:
            p = min(projection, h5["points/x_tilde"].shape[0] - 1)   # `input` has one projection
            k = list(h5["points/pair"][()]).index(pair)
            x_tilde, x_tilde_prime = h5["points/x_tilde"][p, k], h5["points/x_tilde_prime"][p, k]
            assert row["distance"] == h5["distances"][p, i, j]
        assert row["norm"] == pytest.approx(np.linalg.norm(x_tilde.astype(np.float64) - x_a[i]), rel=1e-12)
        assert row["norm_prime"] == pytest.approx(np.linalg.norm(x_tilde_prime.astype(np.float64) - x_b[j]), rel=1e-12)
    fig = figures_collisions.collisions_figure(rows, _metrics(), pair, (3, 7))
    axes = np.array(fig.axes).reshape(len(rows), 6)
    for r, row in enumerate(rows):
        assert axes[r, 1].get_xlabel() == figures_style.NORM_LABEL.format(row["norm"])
        assert axes[r, 2].get_xlabel() == figures_style.NORM_PRIME_LABEL.format(row["norm_prime"])
        assert axes[r, 1].get_xlabel().endswith(f"= {row['norm']:.3f}")
        np.testing.assert_allclose(axes[r, 0].images[0].get_array(), x_a[i][0])
        np.testing.assert_allclose(axes[r, 3].images[0].get_array(), x_b[j][0])
        np.testing.assert_allclose(axes[r, 4].images[0].get_array(), row["x_tilde"][0] - x_a[i][0])
    assert "adversary: l2 in [0, 1]^n" in fig._suptitle.get_text()   # from the files' options
    # The CLI orders the rows (baselines first, then network order) and writes both files.
    metrics_file = tmp_path / "net_pgd.json"
    metrics_file.write_text(json.dumps(_metrics()))
    png, pdf = tmp_path / "out" / "c.png", tmp_path / "out" / "c.pdf"
    cli_main(["figures", "collisions", "--metrics", str(metrics_file), "--pairs", str(pairs_file), "--pair", "1",
              "--projection", "1", "--png", str(png), "--pdf", str(pdf), *map(str, files)])
    assert png.stat().st_size > 0 and pdf.read_bytes().startswith(b"%PDF")


# --- 0-1 vs CE and the summary -----------------------------------------------------------------------

def test_zero_one_figure_pairs_the_two_losses_and_the_bound_holds():
    tables = _tables()
    fig = figures.zero_one_figure(tables, TAPS, _metrics(), 5)
    lines = _labelled_lines(fig.axes[0])
    fc2 = layer_curve(tables, "net_pgd", "fc2")
    np.testing.assert_allclose(lines["fc2"].get_xdata(), fc2["ce_mean"])
    np.testing.assert_allclose(lines["fc2"].get_ydata(), fc2["zero_one_mean"])
    assert "input RP (m=5)" in lines
    # The reference line drawn is a bound the tables obey: 0-1 <= CE / (2 log 2).
    assert (tables["zero_one_mean"] <= tables["ce_mean"] / (2 * math.log(2)) + 1e-12).all()


def test_layer_summary_reads_threshold_and_training_eps_rows():
    tables = _tables(models=("net_benign", "net_pgd"))
    metrics = {"net_benign": _metrics("net_benign", "benign", eps=1.0), "net_pgd": _metrics("net_pgd", "pgd", eps=1.5)}
    summary = report.layer_summary(tables, metrics, {"net_benign": TAPS, "net_pgd": TAPS})
    pgd = summary.loc[summary.model == "net_pgd"]
    assert pgd["layer"].tolist() == ["input", "input_rp", "fc1", "fc2", "logits"]
    for _, row in pgd.iterrows():
        owner = "input" if row.layer in INPUT_LAYERS else "net_pgd"
        curve = layer_curve(tables, owner, row.layer)
        reached = curve.loc[curve.ce_mean >= math.log(2) / 2, "eps"]
        assert row.eps_ce_half_log2 == (reached.min() if len(reached) else pytest.approx(np.nan, nan_ok=True))
        assert row.grid_eps == 1.5
        assert row.ce_at_eval_eps == curve.set_index("eps").loc[1.5, "ce_mean"]
        assert row.ce_at_eval_eps_lo <= row.ce_at_eval_eps_hi
        # The eps range the noise allows: where the interval's upper end reaches log(2)/2 first,
        # where its lower end does last.
        high_reached = curve.loc[curve.ce_hi >= math.log(2) / 2, "eps"]
        assert row.eps_ce_half_log2_lo == (high_reached.min() if len(high_reached) else pytest.approx(np.nan, nan_ok=True))
        assert row.training == "PGD-1.5" and row.adversary == "l2 unboxed"
    assert (summary.loc[summary.model == "net_benign", "grid_eps"] == 1.0).all()
    page = report.summary_html(summary, 2.5)
    assert page.count("<table>") == 2 and "net_pgd (PGD-1.5)" in page
    assert "Latest to reach log(2)/2: <b>" in page and "within the sampling noise of it" in page
    assert "most robust" not in page and "A&#8728;f_j" in page


def test_layer_summary_shows_the_attack_stages_headline_where_there_is_one():
    tables = _tables(models=("net_benign", "net_pgd"))
    metrics = {"net_benign": _metrics("net_benign", "benign", eps=1.0), "net_pgd": _metrics("net_pgd", "pgd", eps=1.5)}
    headline = {"net_pgd": {"model": "net_pgd", "examples": 100, "headline": {
        "attack": "autoattack_l2", "label": "AutoAttack-l2 (standard)", "norm": "l2", "eps": 1.5, "robust_accuracy": 0.42}}}
    summary = report.layer_summary(tables, metrics, {"net_benign": TAPS, "net_pgd": TAPS}, headline)
    pgd, benign = summary.loc[summary.model == "net_pgd"], summary.loc[summary.model == "net_benign"]
    assert (pgd["headline_robust_acc"] == 0.42).all() and (pgd["headline_eps"] == 1.5).all()
    assert benign["headline_robust_acc"].isna().all()
    page = report.summary_html(summary, 2.5)
    assert "<b>robust test accuracy 0.420</b> under AutoAttack-l2 (standard) at eps = 1.50" in page
    assert "the first 100 test images" in page
    assert page.count("PGD robust test accuracy") == 2   # the training sidecar's, for both models


def test_fab_comparison_table_and_figure_put_both_curves_on_the_loss_grid():
    from layerbound.figures import fab as figures_fab

    tables = _tables()
    logits = tables.loc[(tables.model == "net_pgd") & (tables.layer == "logits")]
    # Two examples of class 3, two of class 7; FAB moves example 1 into class 7, example 2 into class 5.
    points = pd.DataFrame({"example": range(4), "label": [3, 3, 7, 7], "dataset_index": range(4),
                           "found": [True, True, True, False], "norm": [0.4, 1.2, 2.0, np.inf],
                           "ce_clean": [0.1, 0.1, 0.2, 0.2], "ce_fab": [0.3, 0.9, 0.25, 0.2],
                           "ce_all_clean": [0.2] * 4, "ce_all_fab": [0.8] * 3 + [0.2],
                           "prediction_clean": [3, 3, 7, 7], "prediction_fab": [5, 7, 5, 7]})
    comparison = figures_fab.fab_comparison_table(points, logits)
    assert comparison["eps"].tolist() == EPS
    at = comparison.set_index("eps")
    assert at.loc[0.0, "fab_ce"] == pytest.approx(0.15) and at.loc[0.5, "fab_ce"] == pytest.approx(0.6 / 4 + 0.2 / 4 * 1)
    assert at.loc[2.5, "fab_ce"] == pytest.approx((0.3 + 0.9 + 0.25 + 0.2) / 4)
    assert at.loc[2.5, "fab_within_eps"] == 0.75 and at.loc[2.5, "fab_to_pair_class"] == 0.25
    np.testing.assert_allclose(comparison["collision_ce"], logits.sort_values("eps")["ce_mean"])
    fig = figures_fab.fab_figure(comparison, logits, _metrics(), (3, 7))
    lines = _labelled_lines(fig.axes[0])
    np.testing.assert_allclose(lines["optimal collision loss, layer logits (m=5)"].get_ydata(), comparison["collision_ce"])
    with pytest.raises(ValueError):
        figures_fab.fab_comparison_table(points, tables.loc[tables.model == "net_pgd"])


def test_within_noise_marks_overlapping_intervals_only():
    values = pd.Series([0.30, 0.35, 0.60])
    lows, highs = pd.Series([0.20, 0.31, 0.50]), pd.Series([0.40, 0.45, 0.70])
    assert report.within_noise(values, lows, highs, "min").tolist() == [True, True, False]
    assert report.within_noise(values, lows, highs, "max").tolist() == [False, False, True]


# --- the workflow's figure targets ------------------------------------------------------------------

def _dry_run(tmp_path, config):
    return run_snakemake(tmp_path, "-n", "-c1", "--quiet", "rules", configfile=write_config(tmp_path / "config.yaml", config))


def _tiny_config(**collision):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.pop("semirobust")   # its study names the default models, replaced here
    config["models"] = {
        "a_benign": {"dataset": "mnist5k", "arch": "fcnn_smaller", "train": {"method": "benign"}},
        "a_pgd": {"dataset": "mnist5k", "arch": "fcnn_smaller", "train": {"method": "pgd", "eps": 1.0}},
        "b_pgd": {"dataset": "mnist5k", "arch": "fcnn_small", "train": {"method": "pgd", "eps": 1.0}},
    }
    config["pairs"] = {"classes": [3, 7], "per_class": 3}
    config["collision"].update(collision)
    return config


def test_workflow_plans_figures_from_the_config(tmp_path):
    # Two m: an m-sweep per model; keep_points 0: no colliding-examples figure; one architecture
    # with two models: one method comparison per m.
    result = _dry_run(tmp_path, _tiny_config(m=[5, 10], keep_points=0))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["figures_layers"] == counts["figures_zero_one"] == 3 * 2
    assert counts["figures_m_sweep"] == 3
    assert counts["figures_training_methods"] == 2
    assert counts["figures_summary"] == 1
    assert "figures_collisions" not in counts
    # A collision pair the merged files do not store fails at start-up, naming the key.
    config = _tiny_config(m=[5], keep_points=2)
    config["figures"] = {"collision_pair": 2}
    result = _dry_run(tmp_path, config)
    assert result.returncode != 0 and "figures.collision_pair = 2" in result.stdout + result.stderr


# --- collision methods compared ----------------------------------------------------------------------

def test_collision_methods_figure_draws_each_methods_curve_per_layer():
    rng = np.random.default_rng(3)
    keyed = {}
    for method, scale in (("polytope", 1.0), ("jacobian", 1.3)):
        for layer in ("fc2", "fc1"):
            keyed[("mnist5k", "c3v7-S4-seed0", method, "net_pgd", layer, 100)] = \
                losses.loss_table(rng.uniform(0.2, 2.0, (1, 4, 4)) * scale, EPS, replicates=20)
        keyed[("mnist5k", "c3v7-S4-seed0", method, "input", "input", 100)] = \
            losses.loss_table(np.full((1, 4, 4), 2.2), EPS, replicates=20)
    tables = losses.summarize(keyed)
    fig = figures.collision_methods_figure(tables, TAPS, _metrics(), 100, WIDTHS, "c3v7-S4-seed0")
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["fc1 (n=75)", "fc2 (n=50)"]    # network order
    for c, layer in enumerate(["fc1", "fc2"]):
        for r, column in enumerate(("ce", "zero_one")):
            lines = _labelled_lines(axes[r, c])
            for method in ("polytope", "jacobian"):
                table = layer_curve(tables.loc[tables.method == method], "net_pgd", layer, 100)
                line = lines[figures.METHOD_LABELS[method]]
                np.testing.assert_allclose(line.get_ydata(), table[f"{column}_mean"])
            assert "input (no projection)" in lines
    assert "collision methods on the same pairs" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="two or more collision methods"):
        figures.collision_methods_figure(tables.loc[tables.method == "jacobian"], TAPS, _metrics(), 100)


def test_two_methods_on_the_same_unprojected_layers_get_a_comparison_figure(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "paper002_fcnn.yaml").read_text())
    p = plan.Plan(validate(config))
    comparisons = p.method_comparisons()
    assert set(comparisons) == {("mnist5k", "c3v7-S8-seed0", model, 300) for model in config["models"]}
    methods, layers = comparisons[("mnist5k", "c3v7-S8-seed0", "fcnn_benign", 300)]
    assert methods == ["jacobian", "polytope"] and layers == ["fc1_pre", "fc1", "fc2_pre", "fc2"]
    tables = p.method_comparison_tables("mnist5k", "c3v7-S8-seed0", "fcnn_benign", 300)
    assert len(tables) == 2 * 4 + 2 and all("/fcnn_benign/" in t or "/input/" in t for t in tables)
    assert "results/paper002_fcnn/figures/mnist5k/c3v7-S8-seed0/collision_methods/fcnn_benign/m300.png" in p.figure_targets()
