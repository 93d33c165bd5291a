"""Shards and merge: deterministic, recomputable alone, atomic, and merge refuses bad input by name."""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from layerbound import cli
from layerbound.collide import features, projection, shards
from layerbound.core.names import INPUT_MODEL
from layerbound import plan
from layerbound.models import checkpoint, registry as models
from layerbound.data import pairs
from layerbound.core import store
from layerbound.collide import CollisionOptions, closed_form, jacobian, linear_step

S, P, CHUNK = 4, 2, 6          # 16 pairs in chunks of 6, 6, 4; two projections
OPTIONS = CollisionOptions.from_dict({"chunk_size": CHUNK, "batch_size": 4, "keep_points": 2,
                                      "search": {"max_iter": 15}})
UNBOXED = CollisionOptions.from_dict({**json.loads(OPTIONS.to_json()), "box": None})


# One torch thread for the whole module (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def toy_pairset(pairs_of, shape=(1, 12, 12), seed=0) -> pairs.PairSet:
    x_a, x_b = pairs_of(shape, S, seed, dtype=torch.float32)
    return pairs.PairSet(pairs.name((3, 7), S, 0), "mnist5k", "train", (3, 7), S, 0, x_a, x_b,
                         torch.full((S,), 3), torch.full((S,), 7), torch.arange(S), torch.arange(S) + 100)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, pairs_of):
    """A results folder with a pair set and a small CNN checkpoint (random weights)."""
    root = tmp_path_factory.mktemp("results")
    ps = toy_pairset(pairs_of)
    pairs_file = plan.path("pairs", root, dataset="mnist5k", pairset=ps.name)
    pairs.save(pairs_file, ps)
    torch.manual_seed(0)
    ckpt = root / "models" / "mnist5k" / "tiny.pt"
    checkpoint.save(ckpt, models.build("small", (1, 12, 12), 10), {"note": "test"})
    return root, ps, pairs_file, ckpt


def run_all(root: Path, setup, model: str, layer: str, m: int, projections: int = P,
            options: CollisionOptions = OPTIONS) -> list[Path]:
    _, ps, pairs_file, ckpt = setup
    n_j = ps.x_a[0].numel() if model == INPUT_MODEL else models.build("small", (1, 12, 12), 10).tap_widths()[layer]
    count = plan.projections_for(model, layer, m, n_j, projections)
    paths = []
    for p in range(count):
        for c in range(plan.num_chunks(ps.num_pairs, CHUNK)):
            s = plan.Shard("mnist5k", ps.name, "jacobian", model, layer, m, p, c)
            paths.append(shards.run(s, s.path(root), pairs_file=pairs_file, options=options,
                                    experiment_seed=0,
                                    checkpoint_file=None if model == INPUT_MODEL else ckpt,
                                    arch="small", device="cpu", log=lambda _: None))
    return paths


@pytest.fixture(scope="module")
def full_run(setup, tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    return run_all(root, setup, "tiny", "conv2", 5)


def contents(path: Path) -> tuple[dict, dict]:
    with h5py.File(path) as h5:
        arrays = {}
        h5.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return arrays, dict(h5.attrs)


def assert_same(a: Path, b: Path) -> None:
    (arr_a, att_a), (arr_b, att_b) = contents(a), contents(b)
    assert att_a == att_b
    assert arr_a.keys() == arr_b.keys()
    for k in arr_a:
        assert np.array_equal(arr_a[k], arr_b[k]), k


def test_full_run_layout_columns_and_bounds(full_run, setup):
    root, ps, _, ckpt = setup
    assert len(full_run) == P * 3 and all(p.exists() for p in full_run)
    columns, attrs = shards.read(full_run[0])
    assert list(columns["pair"]) == list(range(CHUNK))
    assert attrs["n_j"] == 32 * 6 * 6 and attrs["projected"] == 1 and "projections" not in attrs
    assert attrs["projection_seed"] == projection.seed(0, "tiny", "conv2", 5, 0)
    assert attrs["checkpoint_sha256"] == store.file_digest(ckpt)
    assert attrs["config_digest"] == OPTIONS.digest() and attrs["dtype"] == "float32"
    assert attrs["torch_version"] == str(torch.__version__) and attrs["solver"] == "jacobian"
    x, x_prime = ps.gather(columns["pair"])
    assert (columns["distance"] <= closed_form.input_distance(x, x_prime).numpy() * (1 + 1e-6)).all()
    assert (columns["residual"] <= 1e-3 * columns["feature_gap"] + 1e-7).all()
    assert columns["points/x_tilde"].shape == (2, 1, 12, 12)
    assert not list(full_run[0].parent.glob(".*"))      # no temporary files left behind


def test_same_seed_gives_identical_shards(full_run, setup, tmp_path):
    again = run_all(tmp_path, setup, "tiny", "conv2", 5)
    for a, b in zip(full_run, again):
        assert_same(a, b)


def test_shard_recomputed_alone_by_the_cli_equals_the_full_run(full_run, setup, tmp_path):
    root, ps, pairs_file, ckpt = setup
    alone = tmp_path / "alone.h5"
    cli.main(["collide-shard", "--pairs", str(pairs_file), "--checkpoint", str(ckpt), "--arch", "small",
                      "--model", "tiny", "--layer", "conv2", "--m", "5", "--projection", "1", "--chunk", "2",
                      "--seed", "0", "--options-json", OPTIONS.to_json(),
                      "--device", "cpu", "--out", str(alone)])
    target = [p for p in full_run if p.parts[-2:] == ("p1", "c2.h5")][0]
    assert_same(alone, target)


def test_a_registry_checkpoint_of_the_other_padding_is_refused_in_one_line(setup, tmp_path, capsys):
    # Its layers have other widths: the shard must not search the wrong network.
    root, ps, pairs_file, _ = setup
    valid = tmp_path / "valid.pt"
    checkpoint.save(valid, models.build("small", (1, 12, 12), 10, "valid"), {})
    args = ["collide-shard", "--pairs", str(pairs_file), "--checkpoint", str(valid), "--arch", "small",
            "--model", "tiny", "--layer", "conv2", "--m", "5", "--projection", "0", "--chunk", "0", "--seed", "0",
            "--options-json", OPTIONS.to_json(), "--device", "cpu", "--out", str(tmp_path / "s.h5")]
    with pytest.raises(SystemExit):
        cli.main(args)
    err = capsys.readouterr().err.strip()
    assert "padding: checkpoint has 'valid', config asks for 'same'" in err and "\n" not in err
    cli.main(args + ["--padding", "valid"])   # named: searched
    assert (tmp_path / "s.h5").is_file()


def test_merge_assembles_projections_by_grid(full_run, setup, tmp_path):
    _, ps, _, _ = setup
    out = shards.merge(full_run, tmp_path / "m5.h5", projections=P)
    arrays, attrs = shards.read_merged(out)
    assert arrays["distances"].shape == (P, S, S) and arrays["distances"].dtype == np.float64
    assert arrays["residuals"].shape == (P, S, S) and arrays["converged"].dtype == bool
    columns, shard_attrs = shards.read(full_run[4])      # projection 1, chunk 1: pairs 6..11
    p = shard_attrs["projection"]
    for row, k in enumerate(columns["pair"]):
        assert arrays["distances"][p, k // S, k % S] == columns["distance"][row]
    assert arrays["points/x_tilde"].shape == (P, 2, 1, 12, 12)
    assert attrs["model"] == "tiny" and attrs["format"] == shards.MERGED_FORMAT and attrs["projections"] == P
    # A third projection expected but not computed: refused, naming the shard it needs.
    with pytest.raises(shards.ShardError, match=r"p2/c0\.h5"):
        shards.merge(full_run, tmp_path / "m5b.h5", projections=3)
    assert list(arrays["projection_seeds"]) == [projection.seed(0, "tiny", "conv2", 5, p) for p in range(P)]


def edited_copy(src: Path, dst: Path, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        edit(h5)
    return dst


def test_merge_refuses_missing_pairs_naming_the_shard(full_run, tmp_path):
    with pytest.raises(shards.ShardError, match=r"p1/c1\.h5"):
        shards.merge([p for p in full_run if p.parts[-2:] != ("p1", "c1.h5")], tmp_path / "out.h5")
    # A truncated shard (fewer rows than its chunk) is caught as missing pairs too.
    def truncate(h5):
        for c in shards.COLUMNS:
            data = h5[c][()][:-1]
            del h5[c]
            h5[c] = data
    short = edited_copy(full_run[0], tmp_path / "c0.h5", truncate)
    with pytest.raises(shards.ShardError, match="missing 1 of its 16 pairs"):
        shards.merge([short] + full_run[1:], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_merge_refuses_duplicated_pairs_naming_the_file(full_run, tmp_path):
    dup = edited_copy(full_run[1], tmp_path / "dup.h5", lambda h5: None)
    with pytest.raises(shards.ShardError, match=r"dup\.h5"):
        shards.merge(full_run + [dup], tmp_path / "out.h5")


def test_merge_refuses_nan_naming_the_file(full_run, tmp_path):
    def poison(h5):
        d = h5["distance"][()]
        d[2] = np.nan
        h5["distance"][...] = d
    bad = edited_copy(full_run[3], tmp_path / "nan.h5", poison)
    with pytest.raises(shards.ShardError, match=r"nan\.h5.*non-finite distance"):
        shards.merge(full_run[:3] + [bad] + full_run[4:], tmp_path / "out.h5")


def _replace(name, value):
    def edit(h5):
        del h5[name]
        h5[name] = value
    return edit


@pytest.mark.parametrize("edit,needle", [
    (lambda h5: h5.attrs.__setitem__("projection", 1.5), "attribute projection = 1.5, not an integer >= 0"),
    (lambda h5: h5.attrs.__setitem__("projection", "1"), "attribute projection = '1'"),
    (lambda h5: h5.attrs.__setitem__("num_pairs", 10 ** 12), "num_pairs 1000000000000 is not per_class^2"),
    (lambda h5: h5.attrs.__setitem__("chunk_size", 0), "attribute chunk_size = 0, not an integer >= 1"),
    (_replace("distance", np.float64(1.0)), "column distance has shape ()"),
    (_replace("distance", np.array([b"x"] * 4)), "column distance has dtype"),
    (_replace("pair", np.arange(4, dtype=np.float64)), "column pair has dtype float64"),
    (_replace("iterations", np.full(4, -3, dtype=np.int64)), "column iterations holds -3, below 0"),
    (_replace("candidate", np.full(4, -2, dtype=np.int64)), "column candidate holds -2, below -1"),
])
def test_a_malformed_shard_is_refused_in_one_line_naming_it(full_run, tmp_path, edit, needle):
    bad = edited_copy(full_run[2], tmp_path / "crafted.h5", edit)
    with pytest.raises(shards.ShardError) as err:
        shards.merge(full_run[:2] + [bad] + full_run[3:], tmp_path / "out.h5")
    assert "crafted.h5 is malformed (" in str(err.value) and needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out.h5").exists()


def test_a_merged_file_missing_an_array_or_with_bad_options_is_refused_in_one_line(full_run, tmp_path, capsys):
    merged = shards.merge(full_run, tmp_path / "m.h5")
    no_bounds = edited_copy(merged, tmp_path / "a.h5", lambda h5: h5.__delitem__("midpoint_bounds"))
    with pytest.raises(shards.ShardError, match=r"a\.h5 is not a complete merged distance file \(no midpoint_bounds\)"):
        shards.read_merged(no_bounds)
    # The loss stage also needs each pair's candidate (whether it fell back).
    no_candidates = edited_copy(merged, tmp_path / "c.h5", lambda h5: h5.__delitem__("candidates"))
    with pytest.raises(SystemExit):
        cli.main(["losses", "--distances", str(no_candidates), "--eps-json", "[1]", "--out", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err.strip()
    assert "c.h5 has no candidates" in err and "\n" not in err
    listed = edited_copy(merged, tmp_path / "b.h5", lambda h5: h5.attrs.__setitem__("options_json", "[1, 2]"))
    with pytest.raises(shards.ShardError, match=r"b\.h5: its options_json attribute is not a JSON object"):
        shards.read_merged(listed)


@pytest.mark.parametrize("key,value", [("revision", "0 (another search)"), ("config_digest", "0" * 64),
                                       ("checkpoint_sha256", "f" * 64),
                                       ("torch_version", "0.0"), ("experiment_seed", 1)])
def test_merge_refuses_disagreeing_attributes_naming_the_file(full_run, tmp_path, key, value):
    bad = edited_copy(full_run[2], tmp_path / "other.h5", lambda h5: h5.attrs.__setitem__(key, value))
    with pytest.raises(shards.ShardError, match=rf"other\.h5.*{key}"):
        shards.merge(full_run[:2] + [bad] + full_run[3:], tmp_path / "out.h5")


def test_merge_refuses_a_wrong_projection_seed(full_run, tmp_path):
    bad = edited_copy(full_run[0], tmp_path / "seed.h5", lambda h5: h5.attrs.__setitem__("projection_seed", 7))
    with pytest.raises(shards.ShardError, match=r"seed\.h5.*projection seed"):
        shards.merge([bad] + full_run[1:], tmp_path / "out.h5")


def test_input_baselines_are_the_closed_forms(setup, tmp_path):
    root, ps, _, _ = setup
    plain = run_all(tmp_path, setup, "input", "input", 5)
    assert len(plain) == 3                                   # never projected: one projection
    rp = run_all(tmp_path, setup, "input", "input_rp", 5, options=UNBOXED)
    assert len(rp) == 3 * P
    k = np.arange(ps.num_pairs)
    x, x_prime = ps.gather(k)
    d_plain = shards.read_merged(shards.merge(plain, tmp_path / "plain.h5"))[0]["distances"]
    assert np.allclose(d_plain[0].ravel(), closed_form.input_distance(x, x_prime).numpy())
    arrays, attrs = shards.read_merged(shards.merge(rp, tmp_path / "rp.h5"))
    assert attrs["projected"] == 1 and attrs["n_j"] == 144
    for p in range(P):
        A = projection.draw(0, "input", "input_rp", 5, p, 144, dtype=torch.float64)
        assert np.allclose(arrays["distances"][p].ravel(), closed_form.projected_input_distance(A, x, x_prime).numpy())
    assert (arrays["residuals"] <= 1e-5 * arrays["feature_gaps"]).all()    # the closed-form points collide


def test_affine_tap_uses_the_closed_form_and_algorithm_1_agrees(setup, tmp_path):
    root, ps, pairs_file, ckpt = setup
    paths = run_all(tmp_path, setup, "tiny", "conv1_pre", 5, projections=1, options=UNBOXED)
    columns, attrs = shards.read(paths[0])
    assert attrs["solver"] == "closed_form_affine"
    net = checkpoint.load(ckpt).double()
    A = projection.draw(0, "tiny", "conv1_pre", 5, 0, attrs["n_j"], dtype=torch.float64)
    x, x_prime = ps.gather(columns["pair"])
    found = jacobian.search(net.extractor("conv1_pre").eval(), A, x.double(), x_prime.double(), dtype=torch.float64)
    assert np.allclose(columns["distance"], found.distance.numpy(), rtol=1e-5)


def test_with_a_box_affine_maps_are_searched_and_never_closer_than_unboxed(setup, tmp_path):
    """The closed forms ignore the box; boxed shards search instead, keep the colliding points in
    the box, and cannot beat the unboxed optimum (a weaker adversary)."""
    _, ps, _, _ = setup
    for model, layer in (("input", "input_rp"), ("tiny", "conv1_pre")):
        boxed = shards.read(run_all(tmp_path / "boxed", setup, model, layer, 5, projections=1)[0])
        unboxed = shards.read(run_all(tmp_path / "unboxed", setup, model, layer, 5, projections=1, options=UNBOXED)[0])
        assert boxed[1]["solver"] == "jacobian" and unboxed[1]["solver"].startswith("closed_form")
        assert (boxed[0]["distance"] >= unboxed[0]["distance"] * (1 - 1e-5)).all()
        points = np.concatenate([boxed[0]["points/x_tilde"], boxed[0]["points/x_tilde_prime"]])
        assert points.min() >= 0.0 and points.max() <= 1.0
    # The identity keeps its closed form: the midpoint of two points of the box lies in it.
    plain = shards.read(run_all(tmp_path / "boxed", setup, "input", "input", 5)[0])
    assert plain[1]["solver"] == "closed_form_input"


@pytest.mark.parametrize("input_shape", [(1, 12, 12), (3, 8, 8)])
def test_cpu_feature_map_matches_the_plain_network(input_shape):
    # feature_map runs conv nets channels-last, with a matmul-and-fold input gradient for a first
    # convolution on one channel: same values, Jacobian rows and weight gradients as the plain module.
    torch.manual_seed(0)
    plain = models.build("medium", input_shape, 10).double().eval()
    net = features.prepare_model(models.build("medium", input_shape, 10), torch.float64, torch.device("cpu"))
    net.load_state_dict(plain.state_dict())
    f = features.feature_map(net, "fc5", torch.device("cpu"))
    u = torch.rand(3, *input_shape, dtype=torch.float64)
    expected_values, expected_rows = linear_step.jacobian_rows(lambda t: plain.extractor("fc5")(t)[:, :4], u)
    for rows_per_pass in (1, 4):
        values, rows = linear_step.jacobian_rows(lambda t: f(t)[:, :4], u, rows_per_pass)
        assert torch.allclose(values, expected_values, rtol=1e-12, atol=1e-12)
        assert torch.allclose(rows, expected_rows, rtol=1e-10, atol=1e-12)
    # Forward mode too: linear_part of a layer wider than its input, through the patched network's
    # stages as method polytope builds its matrices (polytope.stages_of).
    wide = features.feature_map(net, "conv1_pre", torch.device("cpu")).extractor
    L = closed_form.linear_part(wide, input_shape)
    assert L.shape == (32 * input_shape[1] * input_shape[2], int(np.prod(input_shape)))
    assert torch.allclose(L, closed_form.linear_part(plain.extractor("conv1_pre"), input_shape), rtol=1e-12, atol=1e-12)
    for p in net.parameters():
        p.requires_grad_(True)
    f(u).square().sum().backward()
    plain.extractor("fc5")(u).square().sum().backward()
    for p, q in zip(net.parameters(), plain.parameters()):
        assert (p.grad is None) == (q.grad is None)   # layers past the tap get none
        assert p.grad is None or torch.allclose(p.grad, q.grad, rtol=1e-10, atol=1e-10)


def test_polytope_method_shards_verify_and_are_never_worse_than_the_midpoint(setup, tmp_path):
    """Method polytope through the shard runner (unprojected conv1 of the small CNN, through its
    matrix): verified collisions, the method recorded, and the plan refuses projected units."""
    shared = {k: v for k, v in json.loads(OPTIONS.to_json()).items() if k != "search"}
    options = CollisionOptions.from_dict({**shared, "method": "polytope", "polytope": {"max_iter": 2}})
    _, ps, pairs_file, ckpt = setup
    s = plan.Shard("mnist5k", ps.name, "polytope", "tiny", "conv1", 576, 0, 0)
    path = shards.run(s, s.path(tmp_path), pairs_file=pairs_file, options=options, experiment_seed=0,
                      checkpoint_file=ckpt, arch="small", device="cpu", log=lambda _: None)
    columns, attrs = shards.read(path)
    assert attrs["solver"] == "polytope" and attrs["projected"] == 0
    assert (columns["residual"] <= 1e-3 * columns["feature_gap"]).all()
    assert (columns["distance"] <= columns["midpoint_bound"] + 1e-6).all()
    points = np.concatenate([columns["points/x_tilde"], columns["points/x_tilde_prime"]])
    assert points.min() >= -1e-6 and points.max() <= 1 + 1e-6     # the default box holds


def test_shards_record_their_certificates(setup, full_run, tmp_path):
    """Every shard's collisions are certified in float64 (collide/certify.py): the reported points
    collide to float64 round-off of the features, by an independent float64 forward pass of the
    checkpoint, and each pair records its search's distance and residual, the polishing Jacobians
    and which candidate it reports; the merged file carries them per projection."""
    root, ps, _, ckpt = setup
    net64 = features.prepare_model(checkpoint.load(ckpt), torch.float64, torch.device("cpu"))
    for path in full_run:
        columns, attrs = shards.read(path)
        assert attrs["certified_in"] == "float64" and "certificate 1" in attrs["revision"]
        assert set(np.unique(columns["candidate"])) <= {-1, 0, 1, 2}
        assert (columns["search_residual"] > 0).any() and (columns["polish_steps"] >= 0).all()
        with h5py.File(path) as h5:
            if "points" not in h5:
                continue
            k, u, u_prime = (h5["points"][n][()] for n in ("pair", "x_tilde", "x_tilde_prime"))
        A = projection.draw(0, "tiny", "conv2", 5, attrs["projection"], attrs["n_j"], dtype=torch.float64)
        g = lambda v: net64.features(torch.from_numpy(v).double(), "conv2") @ A.T  # noqa: E731
        x, x_prime = ps.gather(k)
        scale = torch.maximum(g(x.numpy()).norm(dim=1), g(x_prime.numpy()).norm(dim=1))
        # The stored points are float32 copies: their residual is float32 rounding of the points
        # times the Jacobian, so this checks the record, not the certificate's 1e-12.
        residual = (g(u_prime) - g(u)).norm(dim=1)
        rows = np.searchsorted(columns["pair"], k)
        assert (residual <= 1e-5 * scale).all()
        assert (columns["residual"][rows] <= 1e-12 * 4 * scale.numpy()).all()
    merged = shards.merge(full_run, tmp_path / "merged.h5")
    arrays, _ = shards.read_merged(merged)
    assert arrays["candidates"].shape == arrays["distances"].shape == arrays["search_distances"].shape
