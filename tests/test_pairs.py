"""Pair sets: two classes, S per class from the training split, seeded, saved once with indices."""

import h5py
import numpy as np
import pytest
import torch

from layerbound.data import datasets as data, pairs


@pytest.fixture(scope="module")
def mnist5k_train():
    return data.load("mnist5k", "train")


def test_sample_is_seeded_from_the_right_classes_and_split(mnist5k_train, tmp_path):
    x, y = mnist5k_train
    a = pairs.sample("mnist5k", (3, 7), 8, seed=0)
    assert a.name == "c3v7-S8-seed0" and a.num_pairs == 64 and a.split == "train"
    assert (a.y_a == 3).all() and (a.y_b == 7).all()
    # Examples and labels are the training split's rows at the recorded indices.
    assert torch.equal(a.x_a, x[a.index_a]) and torch.equal(a.x_b, x[a.index_b])
    assert torch.equal(a.y_b, y[a.index_b])
    assert len(set(a.index_a.tolist())) == 8
    # Same seed: same pair set; another seed: another one; a larger S extends a smaller one.
    assert torch.equal(pairs.sample("mnist5k", (3, 7), 8, seed=0).index_a, a.index_a)
    assert not torch.equal(pairs.sample("mnist5k", (3, 7), 8, seed=1).index_a, a.index_a)
    bigger = pairs.sample("mnist5k", (3, 7), 16, seed=0)
    assert set(a.index_a.tolist()) <= set(bigger.index_a.tolist())


def test_grid_and_gather():
    S = 3
    ps = pairs.PairSet("c0v1-S3-seed0", "toy", "train", (0, 1), S, 0,
                       torch.arange(S).float().view(S, 1, 1, 1), 10 + torch.arange(S).float().view(S, 1, 1, 1),
                       torch.zeros(S, dtype=torch.int64), torch.ones(S, dtype=torch.int64),
                       torch.arange(S), torch.arange(S))
    i, j = ps.grid(range(9))
    assert i.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and j.tolist() == [0, 1, 2] * 3
    x, x_prime = ps.gather([5])
    assert x.item() == 1 and x_prime.item() == 12


def test_save_load_round_trip(tmp_path):
    a = pairs.sample("mnist5k", (1, 0), 4, seed=2)
    path = tmp_path / "pairs" / f"{a.name}.h5"
    pairs.save(path, a)
    b = pairs.load(path)
    for key in ("x_a", "x_b", "y_a", "y_b", "index_a", "index_b"):
        assert torch.equal(getattr(a, key), getattr(b, key))
    assert (b.name, b.dataset, b.classes, b.per_class, b.seed) == (a.name, "mnist5k", (1, 0), 4, 2)
    with h5py.File(path) as h5:
        assert h5["x_a"].shape == (4, 1, 28, 28) and h5.attrs["format"] == pairs.FORMAT
    assert not list(path.parent.glob(".*tmp*"))   # written atomically, no temporary left


def test_a_pair_set_with_inconsistent_or_non_finite_arrays_is_refused_in_one_line(tmp_path):
    from layerbound.core.errors import UnreadableFile

    a = pairs.sample("mnist5k", (1, 0), 3, seed=2)
    for name, edit, needle in (
            ("fewer.h5", lambda h5: h5.attrs.__setitem__("per_class", 2), "not 2 examples of each class"),
            ("nan.h5", lambda h5: h5["x_b"].__setitem__((1, 0, 5, 5), np.nan), "pixels that are not finite"),
            ("none.h5", lambda h5: h5.attrs.__setitem__("per_class", 0), "not 0 examples of each class"),
            ("bytes.h5", lambda h5: [h5.__delitem__("x_a"), h5.create_dataset("x_a", data=np.zeros((3, 1, 28, 28), np.uint8))],
             "images of dtype torch.uint8, not floating point")):
        path = tmp_path / name
        pairs.save(path, a)
        with h5py.File(path, "r+") as h5:
            edit(h5)
        with pytest.raises(UnreadableFile, match=rf"pair set .*{name} holds .*{needle}"):
            pairs.load(path)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="must differ"):
        pairs.sample("mnist5k", (3, 3), 4)
    with pytest.raises(ValueError, match="class 3"):
        pairs.select(np.array([3, 3, 7, 7, 7]), (3, 7), 3, seed=0, dataset="toy")


def test_the_workflows_pair_arguments_parse_back_to_the_configs_pair_set():
    """The sample-pairs arguments the workflow builds from a config (config.pairs_args) are read by
    the command's own parser as that config's classes, points per class and seed."""
    import shlex

    from layerbound import cli, config
    from workflow_helpers import default_config

    raw = default_config()
    raw["pairs"] = {"classes": [2, 9], "per_class": 5}
    raw["seed"] = 11
    cfg = config.validate(raw)
    args = cli.build_parser().parse_args(["sample-pairs", "--dataset", "mnist5k", *shlex.split(config.pairs_args(cfg))])
    assert (args.classes, args.per_class, args.seed) == ([2, 9], 5, 11)
