"""Collision shards and merged distance files (SPEC 7): the unit of work of the collision stage.

Paths (relative to the results folder):

    pairs/{dataset}/{pairset}.h5                                              the pair set
    shards/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}/p{p}/c{chunk}.h5  one shard
    distances/{dataset}/{pairset}/{method}/{model}/{layer}/m{m}.h5            the merged file

A shard holds the pairs k in [chunk * chunk_size, (chunk + 1) * chunk_size) of the S x S grid,
for one projection p. Columns (one row per pair): pair (flat index k = i * S + j), i, j,
distance, objective, residual, feature_gap, iterations, converged; optionally points/pair,
points/x_tilde, points/x_tilde_prime (the colliding examples of the first `keep_points` pairs of
the grid). Attributes: the unit (dataset, pairset, method, model, layer, m, n_j, projected,
projection, projection_seed, chunk, chunk_size, num_pairs, per_class, solver), the provenance
(experiment_seed, config_digest of the collision options, options_json, checkpoint_sha256,
pairs_sha256, torch_version, layerbound_version, dtype, device). A shard does not record how many
projections the configuration asks for, so adding one leaves the existing shards valid.

The merged file holds distances, residuals, objectives, feature_gaps (projections, S, S) float64,
iterations (int32) and converged (bool) of the same shape, projection_seeds (projections,), the
points of the shards (points/pair, points/x_tilde and points/x_tilde_prime of shape
(projections, K, C, H, W)), and the shards' common attributes plus projections, the list of
devices and solvers, and the path and sha256 of every shard. Merging refuses missing pairs, duplicated pairs, non-finite values and
shards whose attributes disagree, naming the file.

Model `input` is the input-space baseline, with two layers: `input` (no projection, d = ||x - x'||/2;
its files exist at every configured m so every (model, layer, m) of the grid has one, with
projected = 0 and a single projection) and `input_rp` (the input projected to m dimensions,
d = ||P(x - x')||/2). A layer with m >= n_j is not projected either and has a single projection.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import h5py
import numpy as np
import torch

from . import __version__, collide, projection
from . import pairs as pairsets
from .checkpoint import atomic_write_bytes, file_digest

SHARD_FORMAT = "layerbound-shard-1"
MERGED_FORMAT = "layerbound-distances-1"
INPUT_MODEL = "input"
INPUT_LAYERS = ("input", "input_rp")
COLUMNS = ("pair", "i", "j", "distance", "objective", "residual", "feature_gap", "iterations", "converged")
FLOAT_COLUMNS = ("distance", "objective", "residual", "feature_gap")
# Attributes every shard of one merged file must share (the rest: projection, projection_seed,
# chunk, device, solver).
AGREE = ("format", "dataset", "pairset", "method", "model", "layer", "m", "n_j", "projected",
         "chunk_size", "num_pairs", "per_class", "experiment_seed", "config_digest", "options_json",
         "checkpoint_sha256", "pairs_sha256", "torch_version", "layerbound_version", "dtype")


class ShardError(ValueError):
    """A shard is missing, malformed, or inconsistent with the others; the message names the file."""


# --- options ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchOptions:
    """Algorithm 1's parameters (collide.search); tolerances None mean the dtype's defaults."""

    alpha: float = 1.0
    gamma: float = 0.7
    max_iter: int = 40
    tol: float | None = None
    verify_tol: float | None = None
    rows_per_pass: int | None = None    # Jacobian rows per backward pass (None: 1 on CPU, all m on GPU)


@dataclass(frozen=True)
class CollisionOptions:
    """Everything that determines a shard's numbers besides its unit; digested into its attributes."""

    method: str = "jacobian"
    dtype: str = "float32"
    batch_size: int = 64
    chunk_size: int = 256
    keep_points: int = 4
    search: SearchOptions = field(default_factory=SearchOptions)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "CollisionOptions":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown collision options: {', '.join(sorted(unknown))}")
        search = d.pop("search", {}) or {}
        if isinstance(search, dict):
            bad = set(search) - set(SearchOptions.__dataclass_fields__)
            if bad:
                raise ValueError(f"unknown collision.search options: {', '.join(sorted(bad))}")
            search = SearchOptions(**search)
        options = cls(search=search, **d)
        if options.method not in METHODS:
            raise ValueError(f"unknown collision method {options.method!r}; known: {', '.join(METHODS)}")
        if options.dtype not in ("float32", "float64"):
            raise ValueError(f"collision dtype must be float32 or float64, not {options.dtype!r}")
        return options

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


# --- paths -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shard:
    """One unit of work: pairs of one chunk, one projection, of one (model, layer, m)."""

    dataset: str
    pairset: str
    method: str
    model: str
    layer: str
    m: int
    projection: int
    chunk: int


def pairs_path(root: str | Path, dataset: str, pairset: str) -> Path:
    return Path(root) / "pairs" / dataset / f"{pairset}.h5"


def shard_path(root: str | Path, s: Shard) -> Path:
    return (Path(root) / "shards" / s.dataset / s.pairset / s.method / s.model / s.layer
            / f"m{s.m}" / f"p{s.projection}" / f"c{s.chunk}.h5")


def merged_path(root: str | Path, dataset: str, pairset: str, method: str, model: str, layer: str, m: int) -> Path:
    return Path(root) / "distances" / dataset / pairset / method / model / layer / f"m{m}.h5"


def num_chunks(num_pairs: int, chunk_size: int) -> int:
    return -(-int(num_pairs) // int(chunk_size))


def chunk_pairs(chunk: int, chunk_size: int, num_pairs: int) -> np.ndarray:
    start = int(chunk) * int(chunk_size)
    if not 0 <= start < num_pairs:
        raise ValueError(f"chunk {chunk} of size {chunk_size} is outside the {num_pairs} pairs")
    return np.arange(start, min(start + int(chunk_size), int(num_pairs)), dtype=np.int64)


def projections_for(model: str, layer: str, m: int, n_j: int, projections: int) -> int:
    """The number of distinct projections of a layer: one when it is not projected."""
    return 1 if not is_projected(model, layer, m, n_j) else int(projections)


def is_projected(model: str, layer: str, m: int, n_j: int) -> bool:
    if model == INPUT_MODEL and layer == "input":
        return False
    return not projection.is_identity(m, n_j)


# --- computing one shard -----------------------------------------------------------------------

def prepare_model(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """Eval mode (BatchNorm running statistics), no parameter gradients, dtype and device set."""
    model = model.eval().to(device=device, dtype=dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def feature_map(net: torch.nn.Module, layer: str, device: torch.device) -> collide.Features:
    """f_j of a prepared network, as the function the collision search differentiates.

    On the CPU a convolutional network runs channels-last (oneDNN's fast layout), converting its
    input inside f so the search's own tensors keep their plain layout: measured about 1.5x faster
    for the Jacobian rows of the Medium CNN on a 2-core CPU. A convolution on a single input channel
    also gets a faster input gradient (`_FoldBackwardConv2d`). Both change `net` in place.
    """
    f = net.extractor(layer).eval()
    if device.type != "cpu" or not any(isinstance(mod, torch.nn.Conv2d) for mod in net.modules()):
        return f
    net.to(memory_format=torch.channels_last)
    for mod in net.modules():
        if _single_input_channel(mod):
            mod.forward = _FoldBackwardConv2d(mod)   # same forward, faster input gradient on the CPU

    def f_channels_last(u: torch.Tensor) -> torch.Tensor:
        return f(u.contiguous(memory_format=torch.channels_last))
    return f_channels_last


def _single_input_channel(mod: torch.nn.Module) -> bool:
    """A zero-padded Conv2d on one channel (the input layer on grayscale images).

    Only there the fold wins: measured 2x faster for 1 input channel, but 1.5-7x slower than
    oneDNN's kernel for 3 or more (col2im over several channels is slow)."""
    return (isinstance(mod, torch.nn.Conv2d) and mod.in_channels == 1 and mod.groups == 1
            and mod.padding_mode == "zeros" and not isinstance(mod.padding, str))


class _FoldBackwardConv2d:
    """The forward of a Conv2d whose input gradient is one matmul and a col2im (F.fold).

    Every Jacobian row of the search ends in the input gradient of the first convolution, and for a
    convolution on one input channel oneDNN's backward-data kernel is slow: measured ~2x slower
    than the matmul and fold, and ~25% of the Jacobian rows of the Medium CNN (1x28x28). The
    forward is the module's own (same values); weight and bias gradients use PyTorch's kernel.
    """

    def __init__(self, conv: torch.nn.Conv2d):
        self.conv = conv

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return _ConvFoldBackward.apply(x, c.weight, c.bias, c.stride, c.padding, c.dilation)


class _ConvFoldBackward(torch.autograd.Function):
    generate_vmap_rule = True   # the backward is plain tensor ops, so torch.func.vmap can batch it

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation):
        return torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, ctx.stride, ctx.padding, ctx.dilation = inputs
        ctx.input_size = tuple(x.shape[-2:])
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # The transposed convolution as (N HW, out) @ (out, in kh kw), then col2im.
            n, out, h, w = grad.shape
            cols = grad.permute(0, 2, 3, 1).reshape(n * h * w, out) @ weight.reshape(out, -1)
            grad_x = torch.nn.functional.fold(cols.view(n, h * w, -1).transpose(1, 2), ctx.input_size,
                                              weight.shape[-2:], ctx.dilation, ctx.padding, ctx.stride)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, ctx.stride, ctx.padding,
                ctx.dilation, False, [0, 0], 1, [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return grad_x, grad_w, grad_b, None, None, None


def _jacobian(f: collide.Features, A: torch.Tensor | None, x: torch.Tensor, x_prime: torch.Tensor,
              options: CollisionOptions, keep: bool) -> collide.Collisions:
    """Method `jacobian`: Algorithm 1 of paper 001."""
    return collide.search(f, A, x, x_prime, dtype=options.torch_dtype, batch_size=options.batch_size,
                          return_points=keep, progress=True, **asdict(options.search))


# The dispatch point of the collision methods (the path component `method`). The cone-program
# method of paper 002 will be another entry with the same signature.
METHODS: dict[str, Callable[..., collide.Collisions]] = {"jacobian": _jacobian}


def _closed_form(g: collide.Features, L: torch.Tensor | None, x: torch.Tensor, x_prime: torch.Tensor,
                 verify_tol: float) -> collide.Collisions:
    """Collisions of an affine map g(u) = L u + k at their optimum (L None: the identity on inputs).

    x~ = x + delta, x~' = x' - delta with delta = V V^T (x' - x)/2. The residual is recomputed from
    g and checked like the search's collisions; a pair that fails gets the midpoint.
    """
    delta = (x_prime - x).flatten(1).double().cpu() / 2
    if L is not None:
        V_t = collide.row_space(L)
        delta = (delta @ V_t.T) @ V_t
    delta = delta.reshape(x.shape).to(x.dtype)
    x_tilde, x_tilde_prime = x + delta.to(x.device), x_prime - delta.to(x.device)
    norms = lambda t: t.flatten(1).double().norm(dim=1).cpu()  # noqa: E731
    with torch.no_grad():
        g_x, g_x_prime = g(torch.cat([x, x_prime])).chunk(2)
        g_t, g_t_prime = g(torch.cat([x_tilde, x_tilde_prime])).chunk(2)
    residual, feature_gap = norms(g_t_prime - g_t), norms(g_x_prime - g_x)
    failed = (~(residual <= verify_tol * feature_gap)).to(x.device)
    if failed.any():
        midpoint = (x + x_prime) / 2
        x_tilde[failed], x_tilde_prime[failed] = midpoint[failed], midpoint[failed]
        residual[failed.cpu()] = 0.0
    distance = torch.maximum(norms(x_tilde - x), norms(x_tilde_prime - x_prime))
    return collide.Collisions(
        distance=distance, objective=norms(x_tilde - x) ** 2 + norms(x_tilde_prime - x_prime) ** 2,
        residual=residual, feature_gap=feature_gap,
        iterations=torch.zeros(len(x), dtype=torch.int64), converged=torch.ones(len(x), dtype=torch.bool),
        x_tilde=x_tilde.cpu(), x_tilde_prime=x_tilde_prime.cpu())


def compute(s: Shard, *, pairs_file: str | Path, options: CollisionOptions, experiment_seed: int,
            checkpoint_file: str | Path | None = None, arch: str | None = None,
            device: str | torch.device = "auto", log: Callable[[str], None] = print) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The columns and attributes of shard `s` (nothing written)."""
    from . import checkpoint, device as devices

    if s.method != options.method:
        raise ValueError(f"shard method {s.method!r} differs from the options' method {options.method!r}")
    started = time.perf_counter()
    dev = devices.select(str(device)) if not isinstance(device, torch.device) else device
    dtype = options.torch_dtype
    pairs = pairsets.load(pairs_file)
    if pairs.name != s.pairset or pairs.dataset != s.dataset:
        raise ValueError(f"{pairs_file} holds pair set {pairs.dataset}/{pairs.name}, not {s.dataset}/{s.pairset}")
    k = chunk_pairs(s.chunk, options.chunk_size, pairs.num_pairs)
    x, x_prime = pairs.gather(k)
    keep = k < options.keep_points
    n0 = int(np.prod(pairs.input_shape))

    if s.model == INPUT_MODEL:
        if s.layer not in INPUT_LAYERS:
            raise ValueError(f"model {INPUT_MODEL!r} has layers {INPUT_LAYERS}, not {s.layer!r}")
        net, n_j, checkpoint_sha = None, n0, ""
        f: collide.Features = lambda u: u.flatten(1)  # noqa: E731
    else:
        if checkpoint_file is None:
            raise ValueError(f"model {s.model!r} needs its checkpoint")
        net = checkpoint.load(checkpoint_file, expect={"arch": arch} if arch else None)
        if s.layer not in net.taps + net.pre_activation_taps:
            raise ValueError(f"model {s.model!r} ({net.arch}) has no tap {s.layer!r}; taps: {', '.join(net.taps)}")
        n_j = net.tap_widths()[s.layer]
        net = prepare_model(net, dtype, dev)
        checkpoint_sha = file_digest(checkpoint_file)
        f = feature_map(net, s.layer, dev)

    projected = is_projected(s.model, s.layer, s.m, n_j)
    if s.projection < 0 or (not projected and s.projection != 0):
        raise ValueError(f"{s.model}/{s.layer} at m={s.m} (n_j={n_j}) has no projection {s.projection}"
                         + ("" if projected else ": it is not projected, its only projection is 0"))
    seed = projection.seed(experiment_seed, s.model, s.layer, s.m, s.projection)
    A = projection.matrix(seed, s.m, n_j, dtype=dtype, device=dev) if projected else None
    g: collide.Features = f if A is None else (lambda u: f(u) @ A.T)

    x_d, x_prime_d = x.to(device=dev, dtype=dtype), x_prime.to(device=dev, dtype=dtype)
    verify_tol = collide.DEFAULT_VERIFY_TOL[dtype] if options.search.verify_tol is None else options.search.verify_tol
    if s.model == INPUT_MODEL:
        solver = "closed_form_input" if s.layer == "input" else "closed_form_input_rp"
        result = _closed_form(g, None if A is None else A.double().cpu(), x_d, x_prime_d, verify_tol)
    elif net is not None and net.pre_activation_taps and s.layer == net.pre_activation_taps[0]:
        # f_j is affine (the first layer before its activation): the closed form of paper 002.
        solver = "closed_form_affine"
        L = collide.linear_part(g, pairs.input_shape, dtype=dtype, device=dev)
        result = _closed_form(g, L, x_d, x_prime_d, verify_tol)
    else:
        solver = s.method
        result = METHODS[s.method](f, A, x_d, x_prime_d, options, bool(keep.any()))

    i, j = pairs.grid(k)
    columns = {
        "pair": k, "i": i, "j": j,
        "distance": result.distance.numpy(), "objective": result.objective.numpy(),
        "residual": result.residual.numpy(), "feature_gap": result.feature_gap.numpy(),
        "iterations": result.iterations.numpy().astype(np.int32), "converged": result.converged.numpy().astype(bool),
    }
    if keep.any():
        sel = torch.from_numpy(np.flatnonzero(keep))
        columns["points/pair"] = k[keep]
        columns["points/x_tilde"] = result.x_tilde[sel].float().numpy()
        columns["points/x_tilde_prime"] = result.x_tilde_prime[sel].float().numpy()
    attrs = {
        "format": SHARD_FORMAT, "dataset": s.dataset, "pairset": s.pairset, "method": s.method, "model": s.model,
        "layer": s.layer, "m": int(s.m), "n_j": int(n_j), "projected": int(projected),
        "projection": int(s.projection), "projection_seed": int(seed),
        "chunk": int(s.chunk), "chunk_size": int(options.chunk_size), "num_pairs": int(pairs.num_pairs),
        "per_class": int(pairs.per_class), "solver": solver, "experiment_seed": int(experiment_seed),
        "config_digest": options.digest(), "options_json": options.to_json(),
        "checkpoint_sha256": checkpoint_sha, "pairs_sha256": file_digest(pairs_file),
        "torch_version": str(torch.__version__), "layerbound_version": __version__,
        "dtype": options.dtype, "device": str(dev),
    }
    elapsed = time.perf_counter() - started
    log(f"{s.model}/{s.layer} m={s.m} p={s.projection} chunk={s.chunk}: {len(k)} pairs by {solver} on {dev} "
        f"in {elapsed:.1f} s; mean distance {columns['distance'].mean():.4f} "
        f"(midpoint bound {(collide.input_distance(x, x_prime).mean()):.4f}), "
        f"converged {columns['converged'].mean():.0%}, mean iterations {columns['iterations'].mean():.1f}")
    return columns, attrs


# --- writing, reading, merging -----------------------------------------------------------------

def write(path: str | Path, columns: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Write a shard (or merged file) atomically: a temporary file in the same folder, then rename."""
    def write_to(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            for name, values in columns.items():
                h5.create_dataset(name, data=values, track_times=False)
            h5.attrs.update(attrs)
    atomic_write_bytes(Path(path), write_to)


def run(s: Shard, out: str | Path, **kwargs: Any) -> Path:
    """Compute shard `s` and write it to `out` (see `compute` for the arguments)."""
    columns, attrs = compute(s, **kwargs)
    write(out, columns, attrs)
    return Path(out)


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A shard's columns (and points, if any) and attributes; ShardError naming the file if it is bad."""
    path = Path(path)
    if not path.exists():
        raise ShardError(f"shard {path} does not exist")
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: _plain(v) for k, v in h5.attrs.items()}
            if attrs.get("format") != SHARD_FORMAT:
                raise ShardError(f"{path} is not a layerbound shard (format {attrs.get('format')!r}, expected {SHARD_FORMAT!r})")
            missing = [c for c in COLUMNS if c not in h5]
            if missing:
                raise ShardError(f"shard {path} lacks the columns {', '.join(missing)}")
            columns = {c: h5[c][()] for c in COLUMNS}
            if "points" in h5:
                for name in ("pair", "x_tilde", "x_tilde_prime"):
                    columns[f"points/{name}"] = h5["points"][name][()]
    except OSError as err:
        raise ShardError(f"shard {path} cannot be read: {err}") from None
    lengths = {c: len(columns[c]) for c in COLUMNS}
    if len(set(lengths.values())) != 1:
        raise ShardError(f"shard {path} has columns of different lengths: {lengths}")
    return columns, attrs


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def merge(shard_files: Iterable[str | Path], out: str | Path, projections: int | None = None) -> Path:
    """Merge the shards of one (dataset, pairset, method, model, layer, m) into one file.

    `projections` is the number of projections expected (default: one more than the largest
    index among the shards); every projection must then have all its pairs. The shards do not
    record it, so adding a projection to the configuration leaves the existing shards valid.

    Refuses (ShardError naming the file) shards that disagree on any attribute of AGREE, carry a
    projection seed other than the derived one, hold pairs outside their chunk, non-finite values,
    duplicated pairs, or leave pairs of some projection missing.
    """
    shards = [(Path(p), *read(p)) for p in shard_files]
    if not shards:
        raise ShardError("no shards to merge")
    ref_path, _, ref = shards[0]
    N, S, chunk_size = ref["num_pairs"], ref["per_class"], ref["chunk_size"]
    P = int(projections) if projections else 1 + max(a["projection"] for _, _, a in shards)
    if not ref["projected"] and P != 1:
        raise ShardError(f"{ref['model']}/{ref['layer']} at m={ref['m']} is not projected: it has one projection, not {P}")
    for path, columns, attrs in shards:
        for key in AGREE:
            if attrs.get(key) != ref.get(key):
                raise ShardError(f"shard {path} disagrees with {ref_path} on {key}: {attrs.get(key)!r} vs {ref.get(key)!r}")
        p = attrs["projection"]
        if not 0 <= p < P:
            raise ShardError(f"shard {path} is projection {p}, outside 0..{P - 1}")
        expected_seed = projection.seed(attrs["experiment_seed"], attrs["model"], attrs["layer"], attrs["m"], p)
        if attrs["projection_seed"] != expected_seed:
            raise ShardError(f"shard {path} has projection seed {attrs['projection_seed']}, "
                             f"not the one derived for projection {p} ({expected_seed})")
        allowed = chunk_pairs(attrs["chunk"], chunk_size, N)
        k = columns["pair"]
        outside = k[(k < allowed[0]) | (k > allowed[-1])]
        if len(outside):
            raise ShardError(f"shard {path} (chunk {attrs['chunk']}) holds pairs outside its chunk, e.g. {outside[:5].tolist()}")
        if not (np.array_equal(columns["i"], k // S) and np.array_equal(columns["j"], k % S)):
            raise ShardError(f"shard {path} has (i, j) columns that do not match its pair indices")
        for c in FLOAT_COLUMNS:
            bad = ~np.isfinite(columns[c])
            if bad.any():
                raise ShardError(f"shard {path} has non-finite {c} for pairs {k[bad][:5].tolist()}")

    owner = np.full((P, N), -1, dtype=np.int64)
    merged = {c: np.zeros((P, N), dtype=np.float64) for c in FLOAT_COLUMNS}
    iterations = np.zeros((P, N), dtype=np.int32)
    converged = np.zeros((P, N), dtype=bool)
    points: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {p: {} for p in range(P)}
    for index, (path, columns, attrs) in enumerate(shards):
        p, k = attrs["projection"], columns["pair"]
        values, counts = np.unique(k, return_counts=True)
        if (counts > 1).any():
            raise ShardError(f"shard {path} holds pair {values[counts > 1][0]} more than once")
        taken = owner[p, k] >= 0
        if taken.any():
            other = shards[owner[p, k[taken][0]]][0]
            raise ShardError(f"pair {k[taken][0]} of projection {p} is in both {other} and {path} (duplicated shard?)")
        owner[p, k] = index
        for c in FLOAT_COLUMNS:
            merged[c][p, k] = columns[c]
        iterations[p, k] = columns["iterations"]
        converged[p, k] = columns["converged"]
        if "points/pair" in columns:
            for row, pair in enumerate(columns["points/pair"]):
                points[p][int(pair)] = (columns["points/x_tilde"][row], columns["points/x_tilde_prime"][row])
    missing = np.argwhere(owner < 0)
    if len(missing):
        p, k = (int(v) for v in missing[0])
        chunk = k // chunk_size
        # Name the file where the workflow's layout (.../m{m}/p{p}/c{chunk}.h5) says it should be.
        in_layout = ref_path.parent.name == f"p{ref['projection']}" and ref_path.name == f"c{ref['chunk']}.h5"
        expected = str(ref_path.parent.parent / f"p{p}" / f"c{chunk}.h5") if in_layout else f"p{p}/c{chunk}"
        raise ShardError(f"projection {p} is missing {int((owner[p] < 0).sum())} of its {N} pairs (first: pair {k}); "
                         f"they belong to shard {expected} (projection {p}, chunk {chunk}), which is not among "
                         f"the inputs or is incomplete")

    shape = (P, S, S)
    out_columns: dict[str, np.ndarray] = {
        "distances": merged["distance"].reshape(shape), "residuals": merged["residual"].reshape(shape),
        "objectives": merged["objective"].reshape(shape), "feature_gaps": merged["feature_gap"].reshape(shape),
        "iterations": iterations.reshape(shape), "converged": converged.reshape(shape),
        "projection_seeds": np.array([projection.seed(ref["experiment_seed"], ref["model"], ref["layer"], ref["m"], p)
                                      for p in range(P)], dtype=np.int64),
    }
    point_pairs = sorted(points[0])
    if point_pairs:
        if any(sorted(points[p]) != point_pairs for p in range(P)):
            raise ShardError(f"the shards of {out} store colliding points for different pairs in different projections")
        out_columns["points/pair"] = np.array(point_pairs, dtype=np.int64)
        out_columns["points/x_tilde"] = np.stack([np.stack([points[p][k][0] for k in point_pairs]) for p in range(P)])
        out_columns["points/x_tilde_prime"] = np.stack([np.stack([points[p][k][1] for k in point_pairs]) for p in range(P)])
    attrs = {key: ref[key] for key in AGREE}
    attrs.update({
        "projections": P,
        "format": MERGED_FORMAT,
        "devices": json.dumps(sorted({a["device"] for _, _, a in shards})),
        "solvers": json.dumps(sorted({a["solver"] for _, _, a in shards})),
        "shards": json.dumps([str(path) for path, _, _ in shards]),
        "shard_sha256": json.dumps([file_digest(path) for path, _, _ in shards]),
    })
    write(out, out_columns, attrs)
    return Path(out)


def read_merged(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and attributes of a merged distance file."""
    path = Path(path)
    with h5py.File(path, "r") as h5:
        attrs = {k: _plain(v) for k, v in h5.attrs.items()}
        if attrs.get("format") != MERGED_FORMAT:
            raise ShardError(f"{path} is not a merged distance file (format {MERGED_FORMAT!r})")
        arrays = {name: h5[name][()] for name in h5 if isinstance(h5[name], h5py.Dataset)}
        if "points" in h5:
            arrays.update({f"points/{name}": h5["points"][name][()] for name in h5["points"]})
    return arrays, attrs


# --- the grid of the configuration ---------------------------------------------------------------

DEFAULT_PAIRS = {"classes": [3, 7], "per_class": 16}
DEFAULT_COLLISION = {"methods": ["jacobian"], "models": "all", "layers": "all", "m": [10], "projections": 3,
                     "baselines": list(INPUT_LAYERS), "sweeps": []}
# Keys of the `collision:` section that are CollisionOptions (the rest say what to compute).
OPTION_KEYS = ("dtype", "batch_size", "chunk_size", "keep_points", "search")


@dataclass(frozen=True)
class Unit:
    """One merged file: (dataset, pairset, method, model, layer, m) and the shards that make it."""

    dataset: str
    pairset: str
    method: str
    model: str
    layer: str
    m: int
    n_j: int
    projections: int
    chunks: int
    arch: str | None = None

    def shards(self) -> list[Shard]:
        return [Shard(self.dataset, self.pairset, self.method, self.model, self.layer, self.m, p, c)
                for p in range(self.projections) for c in range(self.chunks)]

    def merged_path(self, root: str | Path = "results") -> Path:
        return merged_path(root, self.dataset, self.pairset, self.method, self.model, self.layer, self.m)

    def shard_paths(self, root: str | Path = "results") -> list[Path]:
        return [shard_path(root, s) for s in self.shards()]


def settings(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `pairs:` and `collision:` sections with defaults filled in."""
    pairs_cfg = {**DEFAULT_PAIRS, **(config.get("pairs") or {})}
    collision_cfg = {**DEFAULT_COLLISION, **(config.get("collision") or {})}
    return pairs_cfg, collision_cfg


def pairset_name(config: dict[str, Any]) -> str:
    pairs_cfg, _ = settings(config)
    return pairsets.name(pairs_cfg["classes"], pairs_cfg["per_class"], config.get("seed", 0))


def options(config: dict[str, Any], method: str) -> CollisionOptions:
    _, collision_cfg = settings(config)
    return CollisionOptions.from_dict({"method": method, **{k: collision_cfg[k] for k in OPTION_KEYS if k in collision_cfg}})


@lru_cache(maxsize=None)
def _tap_widths(arch: str, input_shape: tuple[int, ...], num_classes: int, padding: str) -> dict[str, int]:
    from . import models

    with torch.device("cpu"):
        return models.build(arch, input_shape, num_classes, padding).tap_widths()


def plan(config: dict[str, Any]) -> list[Unit]:
    """Every merged file the configuration asks for (models x layers x m x methods, plus the input
    baselines of each dataset), with its projections and chunks; errors name the bad key."""
    from . import data

    pairs_cfg, collision_cfg = settings(config)
    pairset = pairset_name(config)
    S = int(pairs_cfg["per_class"])
    num_pairs = S * S
    chunk = options(config, collision_cfg["methods"][0]).chunk_size if collision_cfg["methods"] else 1
    chunks = num_chunks(num_pairs, chunk)
    P = int(collision_cfg["projections"])
    ms = [int(m) for m in collision_cfg["m"]]
    units: list[Unit] = []
    datasets: list[str] = []
    seen: set[tuple] = set()
    # The main grid, then the extra (models, layers, m) of `sweeps` (e.g. the first layer for
    # several m, paper 001 Figure 6); a unit asked for twice is planned once.
    grids = [collision_cfg] + [{"models": "all", "layers": "all", **sweep} for sweep in collision_cfg["sweeps"]]
    for where, grid in zip(["collision"] + [f"collision.sweeps[{i}]" for i in range(len(grids) - 1)], grids):
        names = list(config.get("models", {})) if grid["models"] == "all" else list(grid["models"])
        for name in names:
            if name not in config.get("models", {}):
                raise ValueError(f"{where}.models names {name!r}, which is not a key of models:")
            entry = config["models"][name]
            meta = data.info(entry["dataset"])
            widths = _tap_widths(entry["arch"], meta.input_shape, meta.num_classes, entry.get("padding", "same"))
            taps = [t for t in widths if not t.endswith("_pre")]
            layers = taps if grid["layers"] == "all" else list(grid["layers"])
            for layer in layers:
                if layer not in widths:
                    raise ValueError(f"{where}.layers: model {name!r} ({entry['arch']}) has no tap {layer!r}; "
                                     f"taps: {', '.join(widths)}")
            if entry["dataset"] not in datasets:
                datasets.append(entry["dataset"])
            for method in collision_cfg["methods"]:
                for layer in layers:
                    for m in (int(m) for m in grid.get("m", collision_cfg["m"])):
                        if (method, name, layer, m) in seen:
                            continue
                        seen.add((method, name, layer, m))
                        units.append(Unit(entry["dataset"], pairset, method, name, layer, m, widths[layer],
                                          projections_for(name, layer, m, widths[layer], P), chunks, entry["arch"]))
    for dataset in datasets:
        n0 = int(np.prod(data.info(dataset).input_shape))
        for method in collision_cfg["methods"]:
            for layer in collision_cfg["baselines"]:
                if layer not in INPUT_LAYERS:
                    raise ValueError(f"collision.baselines: {layer!r} is not one of {', '.join(INPUT_LAYERS)}")
                for m in ms:
                    units.append(Unit(dataset, pairset, method, INPUT_MODEL, layer, m, n0,
                                      projections_for(INPUT_MODEL, layer, m, n0, P), chunks))
    return units


def find_unit(units: Iterable[Unit], dataset: str, pairset: str, method: str, model: str, layer: str, m: int | str) -> Unit:
    for u in units:
        if (u.dataset, u.pairset, u.method, u.model, u.layer, u.m) == (dataset, pairset, method, model, layer, int(m)):
            return u
    raise ValueError(f"the configuration asks for no distances of {dataset}/{pairset}/{method}/{model}/{layer}/m{m}")
