"""The collision stage's units of work: a `Unit` is one merged distance file (dataset, pair set,
collision method, model, layer, m) with its projections and chunks; a `Shard` is one job of it.
Model `input` is the input-space baseline: layer `input` is never projected (d = ||x - x'||/2),
layer `input_rp` is the input projected to m dimensions; a layer with m >= n_j is not projected
either and has a single projection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.names import INPUT_MODEL
from ..core.paths import RESULTS, path
from . import projection

@dataclass(frozen=True)
class UnitKey:
    """What names a merged distance file: (dataset, pair set, collision method, model, layer, m)."""

    dataset: str
    pairset: str
    collision_method: str
    model: str
    layer: str
    m: int

    @property
    def key(self) -> tuple[str, str, str, str, str, int]:
        return self.dataset, self.pairset, self.collision_method, self.model, self.layer, self.m


@dataclass(frozen=True)
class Shard(UnitKey):
    """One job of the collision stage: the pairs of one chunk, one projection, of one Unit."""

    projection: int = 0
    chunk: int = 0

    def path(self, root: str = RESULTS) -> str:
        return path("shard", root, p=self.projection, **_fields(self, exclude=("projection",)))


@dataclass(frozen=True)
class Unit(UnitKey):
    """One merged distance file and the shards that make it."""

    n_j: int = 0
    projections: int = 1
    chunks: int = 1
    arch: str | None = None

    def shards(self) -> list[Shard]:
        return [Shard(*self.key, p, c) for p in range(self.projections) for c in range(self.chunks)]

    def shard_paths(self, root: str = RESULTS) -> list[str]:
        return [s.path(root) for s in self.shards()]

    def merged_path(self, root: str = RESULTS) -> str:
        return path("distances", root, **_fields(self))

    def losses_path(self, root: str = RESULTS) -> str:
        return path("losses", root, **_fields(self))


def _fields(obj: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__ if k not in exclude}


def num_chunks(num_pairs: int, chunk_size: int) -> int:
    return -(-int(num_pairs) // int(chunk_size))


def is_projected(model: str, layer: str, m: int, n_j: int) -> bool:
    if model == INPUT_MODEL and layer == "input":
        return False
    return not projection.is_identity(m, n_j)


def projections_for(model: str, layer: str, m: int, n_j: int, projections: int) -> int:
    """The number of distinct projections of a layer: one when it is not projected."""
    return int(projections) if is_projected(model, layer, m, n_j) else 1
