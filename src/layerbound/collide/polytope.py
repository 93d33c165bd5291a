"""Paper 002's collision search (method `polytope`): descent over the activation polytopes of a
ReLU network, each step an exact second-order cone program.

For f = f_l o ... o f_1 with f_i(z) = relu(W_i z + k_i) (the last stage without its ReLU for a
`<tap>_pre` tap), fixing one ReLU sign pattern per layer for x~ = x + delta (s_i) and one for
x~' = x' + delta' (s'_i) makes every pre-activation affine in (delta, delta'), and the pairs whose
patterns are these form a polytope. Inside it the collision problem

    min t  s.t.  ||delta|| <= t, ||delta'|| <= t,  sign constraints of every pattern,
                 f(x + delta) = f(x' + delta')   (linear in the polytope)

is a cone program (paper 002, Section 3.2 and Appendices C-D). The descent starts in the
midpoint's polytope (the midpoint is a collision there), solves it, and flips each ReLU whose sign
constraint has a positive dual variable (crossing it could lower t): independently for x~ and x~'
in the hidden layers, and, as the collision shares the tap layer's pattern, a tap ReLU only when
both its duals are positive. The previous optimum lies in the new polytope (the flipped units are
at zero there), so t never increases; the search stops when no flip is allowed, when t stops
improving, or after max_iter cone programs. Input space reduction (paper 002, Section 4): without a
box, only the component of delta in the row space of W_1 moves any feature, so delta = V alpha with
V the right singular vectors of W_1; with a box, or when W_1 has full column rank, V = I and delta
ranges over the whole input space (input_basis says why the reduction is exact only unboxed).

Solver: Clarabel, an interior-point conic solver, called directly on the program's sparse layered
form (see _cone_program; the tests check it against the dense form solved through cvxpy).
Interior-point duals are strictly complementary (a constraint that is not binding gets a dual near
zero, not an arbitrary one), which the flip rule reads; Clarabel solves the second-order cones
natively and is the solver cvxpy itself ships with.

Only unprojected maps (m >= n_j) are searched, as in paper 002. Every returned collision is
verified by a forward pass like Algorithm 1's (midpoint fallback).
"""

from __future__ import annotations

from dataclasses import dataclass

import clarabel
import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from .base import Collisions, Features, verify_tol_for
from .closed_form import linear_part, row_space
from .options import PolytopeOptions

# Largest affine stage expanded into a matrix (rows x columns, float64): 64 M entries = 512 MB.
MAX_MATRIX_ENTRIES = 64 * 2**20
# A sign constraint's dual counts as positive above this fraction of the largest dual of its solve.
DUAL_TOL = 1e-6
# ... and only where its slack (sign * pre-activation) is at most this fraction of the largest.
SLACK_TOL = 1e-6
# A stage matrix with at most this fraction of nonzeros is kept sparse (a convolution's: 9 of 784
# inputs per row for the Medium CNN's first layer on MNIST).
SPARSE_DENSITY = 0.05


@dataclass
class Stage:
    """One affine stage z -> W z + k of the chain, and whether a ReLU follows it (W dense or
    scipy.sparse)."""

    W: np.ndarray | sp.spmatrix
    k: np.ndarray
    relu: bool


def run(f: Features, A: torch.Tensor | None, x: torch.Tensor, x_prime: torch.Tensor, *, options: PolytopeOptions,
        dtype: torch.dtype, batch_size: int, box: tuple[float, float] | None, return_points: bool) -> Collisions:
    """The registry's entry point (collide.METHODS["polytope"])."""
    if A is not None:
        raise ValueError("method polytope searches unprojected maps only (paper 002): use m >= n_j for its "
                         "analyses, or method jacobian for projected ones")
    return search(stages_of(f, tuple(x.shape[1:])), x, x_prime, max_iter=options.max_iter, verify_tol=options.verify_tol,
                  dtype=dtype, box=box, return_points=return_points, progress=True, f=f)


def stages_of(f: Features, input_shape: tuple[int, ...]) -> list[Stage]:
    """The affine stages of a layerbound network up to f's tap, as matrices (float64).

    f must be a network's extractor (models.TappedNet.extractor, or the CPU wrapper of
    features.feature_map). Each stage's affine part (linear or convolution, with batch norm) becomes
    its matrix; a stage followed by anything but a ReLU (max pooling) is refused, as is a matrix
    beyond MAX_MATRIX_ENTRIES.
    """
    extractor = getattr(f, "extractor", f)
    net, tap = getattr(extractor, "net", None), getattr(extractor, "tap", None)
    if net is None or tap is None or not hasattr(net, "pre"):
        raise ValueError("method polytope needs a layerbound network's extractor (a registry network's affine "
                         "stages), not an arbitrary function or a loaded model; use method jacobian")
    index, post_activation = net._locate(tap)
    stages, shape = [], tuple(input_shape)
    device = next(net.parameters()).device
    for j in range(index + 1):
        pre, post = net.pre[j], net.post[j]
        out_shape = tuple(_shape_after(pre, shape, device))
        entries = int(np.prod(out_shape)) * int(np.prod(shape))
        if entries > MAX_MATRIX_ENTRIES:
            raise ValueError(f"method polytope: stage {j + 1} of {net.arch} maps {int(np.prod(shape))} to "
                             f"{int(np.prod(out_shape))} values, a {entries / 2**20:.0f} M-entry matrix "
                             f"(limit {MAX_MATRIX_ENTRIES / 2**20:.0f} M); use method jacobian for this layer")
        applies_relu = (j < index or post_activation) and not isinstance(post, torch.nn.Identity)   # logits: none
        if applies_relu and not _is_plain_relu(post):
            raise ValueError(f"method polytope handles ReLU activations only; stage {j + 1} of {net.arch} "
                             f"applies {post}")

        def affine(u: torch.Tensor, pre=pre) -> torch.Tensor:
            return pre(u).flatten(1)
        # In the network's own dtype (its weights' values, exactly), then float64 for the solver.
        net_dtype = next(pre.parameters()).dtype
        W = linear_part(affine, shape, dtype=net_dtype, device=device).detach().double().numpy()
        if np.count_nonzero(W) <= SPARSE_DENSITY * W.size:
            W = sp.csr_matrix(W)
        with torch.no_grad():
            k = affine(torch.zeros((1, *shape), dtype=net_dtype, device=device)).double().cpu().numpy()[0]
        stages.append(Stage(W, k, applies_relu))
        shape = out_shape
    return stages


def _shape_after(module: torch.nn.Module, shape: tuple[int, ...], device) -> torch.Size:
    with torch.no_grad():
        return module(torch.zeros((1, *shape), dtype=next(module.parameters()).dtype, device=device)).shape[1:]


def _is_plain_relu(module: torch.nn.Module) -> bool:
    if isinstance(module, torch.nn.ReLU):
        return True
    return isinstance(module, torch.nn.Sequential) and len(module) == 1 and isinstance(module[0], torch.nn.ReLU)


def forward(stages: list[Stage], u: np.ndarray) -> np.ndarray:
    """The chain's features at the rows of u (float64): the reference the searches are checked by."""
    z = u.reshape(len(u), -1)
    for stage in stages:
        z = np.asarray((stage.W @ z.T).T) + stage.k
        if stage.relu:
            z = np.maximum(z, 0)
    return z


def search(stages: list[Stage], x: torch.Tensor, x_prime: torch.Tensor, *, max_iter: int = PolytopeOptions.max_iter,
           verify_tol: float | None = PolytopeOptions.verify_tol, dtype: torch.dtype = torch.float64,
           box: tuple[float, float] | None = None, return_points: bool = False, progress: bool = False,
           f: Features | None = None) -> Collisions:
    """Collision distances of the pairs (x_k, x'_k) under the chain `stages`, by polytope descent.

    The cone programs run in float64 on the CPU. The collisions are verified by `f` (in `dtype`, on
    x's device) when given, else by the chain itself; a pair that fails keeps the midpoint.
    """
    verify_tol = verify_tol_for(dtype, verify_tol)
    shape = x.shape[1:]
    xs = x.detach().double().cpu().reshape(len(x), -1).numpy()
    xs_prime = x_prime.detach().double().cpu().reshape(len(x), -1).numpy()
    V = input_basis(stages[0].W, box)
    results = []
    for k in tqdm(range(len(xs)), desc="polytope descent", unit="pair", disable=not progress, mininterval=2.0):
        results.append(_descend(stages, V, xs[k], xs_prime[k], max_iter, box))
    u = np.stack([r[0] for r in results]) if results else np.zeros((0, xs.shape[1]))
    u_prime = np.stack([r[1] for r in results]) if results else np.zeros((0, xs.shape[1]))
    iterations = torch.tensor([r[2] for r in results], dtype=torch.int64)
    converged = torch.tensor([r[3] for r in results], dtype=torch.bool)

    # Verify by an independent forward pass (of f in the shard's dtype when given).
    def features(a: np.ndarray) -> torch.Tensor:
        if f is None:
            return torch.from_numpy(forward(stages, a))
        t = torch.from_numpy(a).reshape(len(a), *shape).to(device=x.device, dtype=dtype)
        with torch.no_grad():
            return f(t).double().cpu()
    midpoint = (xs + xs_prime) / 2
    feature_gap = (features(xs_prime) - features(xs)).norm(dim=1)
    residual = (features(u_prime) - features(u)).norm(dim=1)
    failed = ~(residual <= verify_tol * feature_gap)
    if failed.any():
        bad = failed.numpy()
        u[bad], u_prime[bad] = midpoint[bad], midpoint[bad]
        residual[failed] = 0.0
    delta, delta_prime = np.linalg.norm(u - xs, axis=1), np.linalg.norm(u_prime - xs_prime, axis=1)
    distance = torch.from_numpy(np.maximum(delta, delta_prime))
    points = (lambda a: torch.from_numpy(a).reshape(len(a), *shape).to(x.dtype)) if return_points else None
    return Collisions(
        distance=distance, objective=torch.from_numpy(delta ** 2 + delta_prime ** 2), residual=residual,
        feature_gap=feature_gap, iterations=iterations, converged=converged,
        x_tilde=points(u) if points else None, x_tilde_prime=points(u_prime) if points else None)


def input_basis(W: np.ndarray | sp.spmatrix, box: tuple[float, float] | None) -> np.ndarray | None:
    """V (n0 x r): an orthonormal basis of the first layer's row space, to which the search may
    restrict delta = V alpha (paper 002, Section 4); None for the whole input space (V = I, and a
    sparse W stays sparse in the cone programs): when W has full column rank, and with a box.

    Unboxed the reduction is exact: every constraint of a polytope's program (sign patterns, the
    collision) depends on delta only through W delta = W P delta (P = V V^T), so (P delta,
    P delta') is feasible whenever (delta, delta') is, and ||P delta|| <= ||delta||; each
    polytope's optimum t is the same, and attained in the row space. With a box it is not: x +
    P delta may leave the box where x + delta does not (x = (0, 1), x' = (1, 1), W = [1 1] in
    [0, 1]^2: P (x' - x) / 2 = (1/4, 1/4) moves x to (1/4, 5/4)), so the reduced program misses
    the boxed optimum (here sqrt(2) - 1, below the midpoint's 1/2; the reduced descent stays at
    the midpoint), and in the midpoint's polytope it can even be infeasible.
    """
    n0 = W.shape[1]
    if box is not None:
        return None
    dense = W.toarray() if sp.issparse(W) else W
    if W.shape[0] >= n0 and np.linalg.matrix_rank(dense) == n0:
        return None
    return row_space(torch.from_numpy(dense)).numpy().T


def _descend(stages: list[Stage], V: np.ndarray | None, x: np.ndarray, x_prime: np.ndarray, max_iter: int,
             box: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """One pair's descent: (x~, x~', cone programs solved, stopped because no flip improves)."""
    midpoint = (x + x_prime) / 2
    best = (midpoint.copy(), midpoint.copy(), float(np.linalg.norm(x - x_prime)) / 2)
    pre = _pre_activations(stages, midpoint)
    pattern = [p > 0 for p in pre]                                   # x~'s patterns
    pattern_prime = [p.copy() for p in pattern]                      # x~''s (the tap's is shared)
    solved = 0
    # Paper 002 stops when t stops decreasing; moving on across polytopes of equal t (never back
    # to one already solved) reaches the global optimum of more of the tiny networks of the tests.
    visited = {b"".join(np.packbits(p).tobytes() for p in pattern + pattern_prime)}
    for solved in range(1, max_iter + 1):
        solution = _cone_program(stages, V, x, x_prime, pattern, pattern_prime, box)
        if solution is None:                                           # solver failure: keep the best
            return best[0], best[1], solved, False
        t, u, u_prime, duals, duals_prime = solution
        if t <= best[2]:
            best = (u, u_prime, t)
        flips = False
        scale = max([float(d.max(initial=0.0)) for d in duals + duals_prime] + [1e-300])
        for i, stage in enumerate(stages):
            if not stage.relu:
                continue
            up, up_prime = duals[i] > DUAL_TOL * scale, duals_prime[i] > DUAL_TOL * scale
            if i == len(stages) - 1:                                   # the tap's shared pattern
                up = up_prime = up & up_prime
            if up.any() or up_prime.any():
                flips = True
                pattern[i] = np.where(up, ~pattern[i], pattern[i])
                pattern_prime[i] = np.where(up_prime, ~pattern_prime[i], pattern_prime[i])
        key = b"".join(np.packbits(p).tobytes() for p in pattern + pattern_prime)
        if not flips or key in visited:
            return best[0], best[1], solved, True
        visited.add(key)
    return best[0], best[1], solved, False


def _pre_activations(stages: list[Stage], u: np.ndarray) -> list[np.ndarray]:
    z, out = u, []
    for stage in stages:
        z = stage.W @ z + stage.k
        out.append(z)
        if stage.relu:
            z = np.maximum(z, 0)
    return out


def _cone_program(stages: list[Stage], V: np.ndarray | None, x: np.ndarray, x_prime: np.ndarray,
                  pattern: list[np.ndarray], pattern_prime: list[np.ndarray], box: tuple[float, float] | None):
    """Solve the polytope's cone program: (t, x~, x~', duals per stage for x~, for x~') or None.

    Layered form, passed to Clarabel directly: besides t and the input coordinates alpha (x~ =
    x + V alpha; V None means the identity, see input_basis; a convolution's matrix then stays
    sparse), every stage's pre-activation z_i is a variable, tied to
    the previous one by z_i = W_i diag(pattern_{i-1}) z_{i-1} + k_i. A sign constraint is then
    sign_i * z_i >= 0, diagonal, instead of a dense row of the chained product W_i ... W_1 V:
    1.3-2.5x less CPU per program than that dense form through cvxpy at the FCNN's ReLU taps
    (benchmarks/bench_polytope.py; the tests check both give the same optimum), and a
    convolution's matrix stays sparse (paper 001 Figure 7's first layer).
    """
    n0 = len(x)
    r = n0 if V is None else V.shape[1]
    widths = [len(st.k) for st in stages]
    side_size = r + sum(widths)
    n = 1 + 2 * side_size
    eq_rows, eq_rhs, nn_rows, nn_rhs, soc_rows = [], [], [], [], []
    sign_slices = [[], []]           # per side and stage: the rows of its sign constraints, or None
    nn_count = 0
    tap_cols = []
    for side, (point, pats) in enumerate(((x, pattern), (x_prime, pattern_prime))):
        base = 1 + side * side_size
        cols_alpha = base
        col = base + r
        first = stages[0].W if V is None else stages[0].W @ V
        prev_cols, prev_pattern = None, None
        for i, st in enumerate(stages):
            width = widths[i]
            # z_i - (W_1 V) alpha = W_1 x + k_1, or z_i - W_i diag(p_{i-1}) z_{i-1} = k_i
            block = first if i == 0 else _scale_columns(st.W, prev_pattern)
            eq_rows.append(_place(sp.identity(width, format="csr"), col, n) - _place(sp.csr_matrix(block), cols_alpha if i == 0 else prev_cols, n))
            eq_rhs.append(st.W @ point + st.k if i == 0 else st.k)
            if st.relu:
                sign = np.where(pats[i], 1.0, -1.0)
                nn_rows.append(_place(sp.diags(-sign, format="csr"), col, n))      # s = sign * z >= 0
                nn_rhs.append(np.zeros(width))
                sign_slices[side].append(slice(nn_count, nn_count + width))
                nn_count += width
            else:
                sign_slices[side].append(None)
            prev_cols, prev_pattern = col, (pats[i].astype(np.float64) if st.relu else None)
            col += width
        tap_cols.append(prev_cols)
        if box is not None:
            lo, hi = box
            basis = sp.identity(n0, format="csr") if V is None else sp.csr_matrix(V)
            nn_rows += [_place(basis, cols_alpha, n), _place(-basis, cols_alpha, n)]   # hi - x - V a >= 0, V a - lo + x >= 0
            nn_rhs += [hi - point, point - lo]
            nn_count += 2 * n0
        # (t, alpha) in the second-order cone: s = (t, alpha)
        t_row = sp.csr_matrix(([-1.0], ([0], [0])), shape=(1, n))
        soc_rows.append(sp.vstack([t_row, _place(-sp.identity(r, format="csr"), cols_alpha, n)]))
    # The collision at the tap: equal pre-activations on its active units (both inactive units are
    # zero already), or equal affine outputs for a pre-activation tap.
    rows = pattern[-1] if stages[-1].relu else np.ones(widths[-1], dtype=bool)
    if rows.any():
        pick = sp.identity(widths[-1], format="csr")[np.flatnonzero(rows)]
        eq_rows.append(_place(pick, tap_cols[0], n) - _place(pick, tap_cols[1], n))
        eq_rhs.append(np.zeros(int(rows.sum())))
    A = sp.vstack(eq_rows + nn_rows + soc_rows, format="csc")
    b = np.concatenate(eq_rhs + nn_rhs + [np.zeros(2 * (r + 1))])
    n_eq = sum(len(v) for v in eq_rhs)
    cones = [clarabel.ZeroConeT(n_eq)]
    if nn_count:
        cones.append(clarabel.NonnegativeConeT(nn_count))
    cones += [clarabel.SecondOrderConeT(r + 1), clarabel.SecondOrderConeT(r + 1)]
    q = np.zeros(n)
    q[0] = 1.0
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    try:
        solution = clarabel.DefaultSolver(sp.csc_matrix((n, n)), q, A, b, cones, settings).solve()
    except Exception:                      # Clarabel raises on numerically broken problems
        return None
    if solution.status not in (clarabel.SolverStatus.Solved, clarabel.SolverStatus.AlmostSolved):
        return None
    xs, zs, slacks = np.asarray(solution.x), np.asarray(solution.z), np.asarray(solution.s)
    duals_nn = np.maximum(zs[n_eq:n_eq + nn_count], 0)
    # Complementarity: only a constraint that binds (its pre-activation at zero) can have a
    # positive dual. An interior-point solve leaves every dual slightly above zero (all 2 x 25088
    # of the Medium CNN's first layer exceeded DUAL_TOL of the largest), so a dual counts only
    # where the slack is zero to the solver's precision too.
    slack = slacks[n_eq:n_eq + nn_count]
    duals_nn[slack > SLACK_TOL * max(1.0, float(slack.max(initial=0.0)))] = 0.0

    def duals(side: int) -> list[np.ndarray]:
        return [np.zeros(w) if sl is None else duals_nn[sl] for sl, w in zip(sign_slices[side], widths)]
    alpha, alpha_prime = xs[1:1 + r], xs[1 + side_size:1 + side_size + r]
    u = x + (alpha if V is None else V @ alpha)
    u_prime = x_prime + (alpha_prime if V is None else V @ alpha_prime)
    if box is not None:
        u, u_prime = np.clip(u, *box), np.clip(u_prime, *box)
    t_value = float(max(np.linalg.norm(u - x), np.linalg.norm(u_prime - x_prime)))
    return t_value, u, u_prime, duals(0), duals(1)


def _scale_columns(W, scale: np.ndarray):
    """W diag(scale), dense or sparse."""
    return W.multiply(scale[None, :]).tocsr() if sp.issparse(W) else W * scale[None, :]


def _place(block, col: int, n: int):
    """`block` as rows of an n-column matrix, its columns starting at `col`."""
    block = sp.csr_matrix(block)
    rows, cols = block.shape
    return sp.hstack([sp.csr_matrix((rows, col)), block, sp.csr_matrix((rows, n - col - cols))], format="csr")
