"""Pair sets (paper 001, Section 6): S examples of each of two classes, all S x S cross-class pairs.

A pair set is sampled once, from the training split, with a seed, and saved to
`results/pairs/{dataset}/{name}.h5`, name like `c3v7-S16-seed0`. Pair k of the grid is
(i, j) = divmod(k, S): x = x_a[i] (class a), x' = x_b[j] (class b).

HDF5 layout: datasets x_a, x_b (S, C, H, W) float32 in [0, 1]; y_a, y_b (S,) int64;
index_a, index_b (S,) int64, the examples' positions in the split; attributes format, name,
dataset, split, classes, per_class, seed, layerbound_version.

Each class is shuffled by a generator seeded from (experiment seed, dataset, class) and its first
S examples taken, so a larger S extends a smaller one with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from .. import __version__
from ..core import seeds
from .info import pairset_id
from ..core.errors import UnreadableFile, first_line
from ..core.store import atomic_write_buffered

FORMAT = "layerbound-pairs-1"


name = pairset_id   # c{a}v{b}-S{S}-seed{seed}


@dataclass
class PairSet:
    name: str
    dataset: str
    split: str
    classes: tuple[int, int]
    per_class: int
    seed: int
    x_a: torch.Tensor
    x_b: torch.Tensor
    y_a: torch.Tensor
    y_b: torch.Tensor
    index_a: torch.Tensor
    index_b: torch.Tensor

    @property
    def num_pairs(self) -> int:
        return self.per_class * self.per_class

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_a.shape[1:])

    def grid(self, k: np.ndarray | torch.Tensor | range) -> tuple[np.ndarray, np.ndarray]:
        """(i, j) for flat pair indices k."""
        k = np.asarray(k, dtype=np.int64)
        return k // self.per_class, k % self.per_class

    def gather(self, k: np.ndarray | torch.Tensor | range) -> tuple[torch.Tensor, torch.Tensor]:
        """The pairs (x, x') for flat pair indices k."""
        i, j = self.grid(k)
        return self.x_a[torch.from_numpy(i)].detach(), self.x_b[torch.from_numpy(j)].detach()


def class_seed(experiment_seed: int, dataset: str, label: int) -> int:
    """The 64-bit numpy seed that shuffles one class of a dataset."""
    return seeds.derive(f"layerbound-pairs-v1|{int(experiment_seed)}|{dataset}|{int(label)}", bits=64)


def select(labels: np.ndarray, classes: tuple[int, int], per_class: int, seed: int, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (sorted) of S examples of each class, seeded; a clear error when a class is short."""
    labels = np.asarray(labels)
    chosen = []
    for label in classes:
        idx = np.flatnonzero(labels == label)
        if len(idx) < per_class:
            raise ValueError(f"dataset {dataset!r} has {len(idx)} examples of class {label} in this split; "
                             f"the pair set asks for S = {per_class} per class")
        rng = np.random.default_rng(class_seed(seed, dataset, label))
        chosen.append(np.sort(rng.permutation(idx)[:per_class]))
    return chosen[0], chosen[1]


def sample(dataset: str, classes: tuple[int, int] = (3, 7), per_class: int = 16, seed: int = 0,
           data_dir: str | Path = "data", download: bool = False, split: str = "train") -> PairSet:
    from . import datasets as data

    a, b = (int(c) for c in classes)
    if a == b:
        raise ValueError(f"the two classes of a pair set must differ, not {a} and {b}")
    x, y = data.load(dataset, split, data_dir=data_dir, download=download)
    index_a, index_b = select(y.numpy(), (a, b), per_class, seed, dataset)
    ia, ib = torch.from_numpy(index_a), torch.from_numpy(index_b)
    return PairSet(name(classes, per_class, seed), dataset, split, (a, b), int(per_class), int(seed),
                   x[ia].contiguous(), x[ib].contiguous(), y[ia], y[ib], ia, ib)


def save(path: str | Path, pairs: PairSet) -> None:
    def write(buffer) -> None:
        with h5py.File(buffer, "w") as h5:
            for key in ("x_a", "x_b", "y_a", "y_b", "index_a", "index_b"):
                h5.create_dataset(key, data=getattr(pairs, key).numpy())
            h5.attrs.update({"format": FORMAT, "name": pairs.name, "dataset": pairs.dataset,
                             "split": pairs.split, "classes": np.asarray(pairs.classes, dtype=np.int64),
                             "per_class": pairs.per_class, "seed": pairs.seed,
                             "layerbound_version": __version__})
    atomic_write_buffered(path, write)


def inputs_problem(x_a: torch.Tensor, x_b: torch.Tensor, per_class) -> str | None:
    """What is wrong with a pair set's inputs, or None: S = per_class (at least one) inputs of one
    shape in each of x_a and x_b, floating point, finite. Inputs that disagree with per_class would
    silently drop pairs, and a NaN pixel would fill a shard with NaN."""
    S = per_class
    if (isinstance(S, bool) or not isinstance(S, (int, np.integer)) or S < 1 or x_a.dim() < 2
            or x_a.shape != x_b.shape or len(x_a) != S):
        return f"holds inputs of shapes {tuple(x_a.shape)} and {tuple(x_b.shape)}, not {S!r} examples of each class (per_class)"
    if not (x_a.is_floating_point() and x_b.is_floating_point()):
        return f"holds images of dtype {x_a.dtype}, not floating point"
    if not (bool(torch.isfinite(x_a).all()) and bool(torch.isfinite(x_b).all())):
        return "holds pixels that are not finite"
    return None


def structure_problem(pair_set: PairSet) -> str | None:
    """What is wrong with a pair set file's arrays, or None: its inputs (inputs_problem), images
    (C, H, W), and a label and an index per example."""
    S = pair_set.per_class
    keys = ("x_a", "x_b", "y_a", "y_b", "index_a", "index_b")
    if not all(isinstance(getattr(pair_set, key), torch.Tensor) for key in keys):
        return "holds arrays that are not torch tensors"
    shapes = {key: tuple(getattr(pair_set, key).shape) for key in keys}
    if (type(S) is not int or S < 1 or any(shape[:1] != (S,) for shape in shapes.values())
            or shapes["x_a"] != shapes["x_b"] or len(shapes["x_a"]) != 4):
        return f"holds arrays of shapes {shapes}, not {S} examples of each class (per_class), each an image (C, H, W)"
    return inputs_problem(pair_set.x_a, pair_set.x_b, S)


def from_tensors(x_a, x_b, classes: tuple[int, int] = (0, 1), name: str = "own") -> PairSet:
    """A pair set of your own inputs: S examples x_a of class classes[0] and S examples x_b of
    classes[1], each (S, *input_shape) floating point, e.g. images (S, C, H, W) (all S x S pairs).
    In memory only: `save` writes image pair sets of the workflow's datasets."""
    tensors = []
    for label, x in (("x_a", x_a), ("x_b", x_b)):
        if not isinstance(x, torch.Tensor):
            try:
                x = torch.as_tensor(np.asarray(x))
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"make_pairs: {label} is not an array of images ({err})") from None
        tensors.append(x.detach().cpu().contiguous())
    x_a, x_b = tensors
    if x_a.dim() < 2 or x_b.shape != x_a.shape or len(x_a) == 0:
        raise ValueError(f"make_pairs: x_a and x_b must both be (S, *input_shape), the same S >= 1 inputs of one "
                         f"shape; got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    if not (x_a.is_floating_point() and x_b.is_floating_point()):
        raise ValueError(f"make_pairs: the images must be floating point, not {x_a.dtype} / {x_b.dtype} (scale "
                         "8-bit images to the model's input range first)")
    if x_a.dtype in (torch.float16, torch.bfloat16):   # searched in float32 or float64 anyway
        x_a, x_b = x_a.float(), x_b.float()
    for label, x in (("x_a", x_a), ("x_b", x_b)):
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"make_pairs: {label} has {bad} pixels that are not finite")
    if isinstance(classes, (str, bytes)) or len(classes) != 2:
        raise ValueError(f"make_pairs: classes must be two labels (a, b), not {classes!r}")
    a, b = (int(c) for c in classes)
    if a == b:
        raise ValueError(f"make_pairs: the two classes must differ, not {a} and {b}")
    S = len(x_a)
    index = torch.arange(S, dtype=torch.int64)
    return PairSet(name, "own", "own", (a, b), S, 0, x_a, x_b, torch.full((S,), a, dtype=torch.int64),
                   torch.full((S,), b, dtype=torch.int64), index, index.clone())


def load(path: str | Path) -> PairSet:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pair set {path} does not exist: sample it first (`layerbound sample-pairs`, "
                                "the workflow's pairs_sample rule)")
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != FORMAT:
                raise UnreadableFile(f"{path} is not a layerbound pair set (format {FORMAT!r})")
            arrays = {key: torch.from_numpy(h5[key][()]) for key in ("x_a", "x_b", "y_a", "y_b", "index_a", "index_b")}
            a = h5.attrs
            pair_set = PairSet(str(a["name"]), str(a["dataset"]), str(a["split"]), tuple(int(c) for c in a["classes"]),
                               int(a["per_class"]), int(a["seed"]), **arrays)
    except (OSError, KeyError, ValueError, TypeError) as err:   # truncated, or another HDF5 file
        if isinstance(err, UnreadableFile):
            raise
        raise UnreadableFile(f"pair set {path} cannot be read ({first_line(err)}): delete it so it is sampled again "
                             "(`layerbound sample-pairs`, the workflow's pairs_sample rule)") from None
    problem = structure_problem(pair_set)
    if problem:
        raise UnreadableFile(f"pair set {path} {problem}: delete it so it is sampled again")
    return pair_set
