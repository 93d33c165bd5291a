import time

import numpy as np
import pytest
import torch

from layerbound.data import datasets as data


@pytest.fixture(scope="module")
def mnist5k():
    return data.load("mnist5k", "train"), data.load("mnist5k", "test")


def test_mnist5k_is_a_stratified_80_20_split_of_pixels_in_unit_range(mnist5k):
    (x_tr, y_tr), (x_te, y_te) = mnist5k
    assert x_tr.shape == (4000, 1, 28, 28) and x_te.shape == (1000, 1, 28, 28)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    assert torch.equal(torch.bincount(y_tr), torch.full((10,), 400))
    assert torch.equal(torch.bincount(y_te), torch.full((10,), 100))
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0


def test_mnist5k_split_is_deterministic_disjoint_and_shuffled(mnist5k):
    (x_tr, y_tr), (x_te, _) = mnist5k
    x_tr2, y_tr2 = data.load("mnist5k", "train")
    assert torch.equal(x_tr, x_tr2) and torch.equal(y_tr, y_tr2)
    # No test image appears in the training split (the 5,000 digits are distinct images).
    train_rows = {row.tobytes() for row in (x_tr.flatten(1) * 255).round().to(torch.uint8).numpy()}
    test_rows = [row.tobytes() for row in (x_te.flatten(1) * 255).round().to(torch.uint8).numpy()]
    assert not any(r in train_rows for r in test_rows)
    # The source lists digits class by class; a prefix of the split must still mix classes.
    assert len(torch.unique(y_tr[:50])) >= 8


def test_stratified_split_keeps_class_proportions():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    train, test = data.stratified_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(60))
    assert np.bincount(labels[test]).tolist() == [2, 4, 6]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "imagenette"])
def test_missing_dataset_offline_fails_at_once_naming_dataset_and_location(tmp_path, name):
    started = time.perf_counter()
    with pytest.raises(data.DatasetUnavailable) as err:
        data.load(name, "train", data_dir=tmp_path / "nowhere", download=False)
    assert time.perf_counter() - started < 5  # never a network wait
    message = str(err.value)
    assert repr(name) in message
    assert str(tmp_path / "nowhere") in message
    assert "download: true" in message and "fetch-data" in message


def test_info_rejects_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        data.info("svhn")
