"""Paper 001's Algorithm 1: the Jacobian collision search, batched over pairs (method `jacobian`).

`search` runs Algorithm 1 (linearize the collision constraint at the current iterate, take a
convex combination with the original pair, project onto the linearization), keeps the best
collision whose residual ||g(x~') - g(x~)|| is small relative to the pair's feature gap
||g(x') - g(x)||, verifies every returned collision with an independent forward pass, and falls
back to the midpoint (see base.py for the distance it bounds).
"""

from __future__ import annotations

import sys
from dataclasses import asdict

import torch
from tqdm.auto import tqdm

from . import memory
from .base import DEFAULT_TOL, Collisions, Features, verify_tol_for
from .options import AUTO_MERIT_MAX_FEATURES, DEFAULT_MAX_ITER, SearchOptions

# On the CPU the Jacobian rows are computed for at most this many points per forward/backward, so
# the activations stay in cache: measured ~10% faster than 128 points for the Medium CNN.
CPU_POINTS_PER_PASS = 64


def run(f: Features, A: torch.Tensor | None, x: torch.Tensor, x_prime: torch.Tensor, *, options: SearchOptions,
        dtype: torch.dtype, batch_size: int, box: tuple[float, float] | None, return_points: bool) -> Collisions:
    """The registry's entry point (collide.METHODS["jacobian"]): `search` with a shard's options."""
    return search(f, A, x, x_prime, dtype=dtype, batch_size=batch_size, box=box, return_points=return_points,
                  progress=True, **asdict(options))


def search(f: Features, A: torch.Tensor | None, x: torch.Tensor, x_prime: torch.Tensor, *,
           step: str = SearchOptions.step, alpha: float = SearchOptions.alpha, gamma: float = SearchOptions.gamma,
           max_iter: int | None = SearchOptions.max_iter, tol: float | None = SearchOptions.tol,
           verify_tol: float | None = SearchOptions.verify_tol, batch_size: int | None = None,
           rows_per_pass: int | None = SearchOptions.rows_per_pass, dtype: torch.dtype | None = None,
           box: tuple[float, float] | None = None, return_points: bool = False, progress: bool = False) -> Collisions:
    """Collision distances d_{A o f}(x_k, x'_k) for a batch of pairs, by Algorithm 1.

    f maps a batch (B, *shape) to flattened features (B, n_j); an nn.Module must be in eval mode
    (BatchNorm must use its running statistics, so the pairs of a batch stay independent). A is
    the m x n_j projection, or None for the identity. The computation runs on x's device, in
    `dtype` (default: x's floating dtype); f must accept that dtype. `tol` is the convergence
    threshold of Algorithm 1 (residual relative to the feature gap, objective change relative to
    the midpoint objective); `verify_tol` the relative residual under which a collision counts.
    `step` is the step control (STEPS, or "auto": resolve_step by the map's width m), `max_iter` the Jacobian
    evaluations per pair at most (None: the step control's DEFAULT_MAX_ITER).
    Pairs are processed `batch_size` at a time (default: all; on a CUDA device at most as many as
    its free memory holds, measured by memory.gpu_batch_size). `rows_per_pass` is how many of the
    m Jacobian rows one batched backward pass computes (default: all m on accelerators, 1 on the
    CPU, where the smaller working set measured ~1.5x faster for the Medium CNN at 64 pairs); on
    the CPU the rows are also computed CPU_POINTS_PER_PASS points at a time, for the same reason.
    `box` (lo, hi) keeps every iterate, hence every collision, inside [lo, hi]^n (the pairs must
    lie in it); None searches all of R^n. `progress` shows a progress bar over the pairs (on stderr).
    """
    if _in_training_mode(f):
        raise ValueError("the feature extractor has BatchNorm or Dropout layers in training mode; call "
                         ".eval() first (batch statistics would mix the pairs of a batch)")
    if x.shape != x_prime.shape:
        raise ValueError(f"x and x_prime must have the same shape, not {tuple(x.shape)} and {tuple(x_prime.shape)}")
    dtype = dtype or (x.dtype if x.is_floating_point() else torch.float32)
    tol = DEFAULT_TOL.get(dtype, 1e-4) if tol is None else tol
    verify_tol = verify_tol_for(dtype, verify_tol)
    if not (0 < gamma < 1 and 0 < alpha <= 1 and (max_iter is None or max_iter >= 0)):
        raise ValueError("need 0 < alpha <= 1, 0 < gamma < 1 and max_iter >= 0")
    x, x_prime = x.to(dtype), x_prime.to(dtype)
    if box is not None:
        lo, hi = box
        outside = ((x < lo) | (x > hi)).flatten(1).any(1) | ((x_prime < lo) | (x_prime > hi)).flatten(1).any(1)
        if outside.any():
            raise ValueError(f"{int(outside.sum())} of {len(x)} pairs have coordinates outside the box [{lo:g}, {hi:g}] "
                             "their collisions must stay in")
    if A is None:
        g = f
    else:
        A_t = A.to(device=x.device, dtype=dtype).T

        def g(u: torch.Tensor) -> torch.Tensor:
            return f(u) @ A_t

    features = 0
    if step == "auto" and len(x):   # the map's width m decides (one forward pass when unprojected)
        with torch.no_grad():
            features = A.shape[0] if A is not None else g(x[:1]).shape[1]
    step = resolve_step(step, features)
    max_iter = DEFAULT_MAX_ITER[step] if max_iter is None else max_iter
    batch_size = batch_size or max(len(x), 1)
    run_step = STEPS[step]
    if _plans_gpu_memory(x.device) and len(x):
        # Two search steps on a few pairs measure the memory a pair needs on this device: the
        # second takes Jacobian rows at both points of every pair (the first, at the midpoint, one).
        def probe(n: int) -> Collisions:
            return run_step(g, x[:n], x_prime[:n], alpha=alpha, gamma=gamma, max_iter=2, tol=tol,
                            verify_tol=verify_tol, rows_per_pass=rows_per_pass, box=box)
        log = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else (lambda line: None)
        batch_size = memory.gpu_batch_size(probe, len(x), batch_size, x.device, log)
    if rows_per_pass is None:
        rows_per_pass = 1 if x.device.type == "cpu" else None
    points_per_pass = CPU_POINTS_PER_PASS if x.device.type == "cpu" else None
    parts = []
    with tqdm(total=len(x), desc="collision search", unit="pair", disable=not progress, mininterval=2.0) as bar:
        for s in range(0, len(x), batch_size):
            parts.append(run_step(g, x[s:s + batch_size], x_prime[s:s + batch_size], alpha=alpha, gamma=gamma,
                                  max_iter=max_iter, tol=tol, verify_tol=verify_tol, return_points=return_points,
                                  rows_per_pass=rows_per_pass, points_per_pass=points_per_pass, box=box))
            bar.update(len(x[s:s + batch_size]))
    return Collisions.concatenate(parts)


def algorithm1(g: Features, x: torch.Tensor, x_prime: torch.Tensor, *, alpha: float, gamma: float,
               max_iter: int, tol: float, verify_tol: float, return_points: bool = False,
               rows_per_pass: int | None = None, points_per_pass: int | None = None,
               box: tuple[float, float] | None = None) -> Collisions:
    """Algorithm 1 of paper 001 on one batch of pairs (x_k, x'_k), with the paper's names.

    Iterate i holds (x_tilde, x_tilde_prime); H_i is the collision constraint linearized there,
    r + J'(u' - x~') - J(u - x~) = 0 with r = g(x~') - g(x~), J = Dg(x~), J' = Dg(x~'). The next
    iterate is the projection of p = (1 - alpha)(x~, x~') + alpha (x, x') onto H_i:
    p - M^T (M M^T)^{-1} (M p - b) with M = [-J, J'], an m x m solve per pair. alpha is 1 at the
    first step, then decays by gamma. A pair stops when its residual and objective change are
    under tolerance (converged) or at max_iter; stopped pairs leave the batch.
    """
    B = x.shape[0]
    norms = lambda t: t.flatten(1).norm(dim=1)  # noqa: E731 - row norms of a batch
    with torch.no_grad():
        g_x, g_x_prime = g(torch.cat([x, x_prime])).chunk(2)
    feature_gap = norms(g_x_prime - g_x)
    scale = feature_gap.clamp_min(torch.finfo(x.dtype).tiny)
    midpoint = (x + x_prime) / 2
    objective_0 = norms(x - x_prime) ** 2 / 2     # the midpoint's objective, the objective scale

    best = _Best(midpoint, norms(x - x_prime) / 2, objective_0)
    iterations = torch.zeros(B, dtype=torch.int64, device=x.device)
    converged = torch.zeros(B, dtype=torch.bool, device=x.device)

    # The active batch: pairs still iterating, with their current iterate.
    active = torch.arange(B, device=x.device)
    x_a, x_prime_a = x, x_prime
    x_tilde, x_tilde_prime = midpoint, midpoint
    objective_prev = objective_0
    for i in range(max_iter + 1):
        if i == 0:        # both points are the midpoint: one set of rows serves J and J' (half the work)
            g_tilde, J = jacobian_rows(g, midpoint, rows_per_pass, points_per_pass)
            g_tilde_prime, J_prime = g_tilde, J
        elif i < max_iter:  # value and Jacobian rows at the iterate: one forward, m batched VJPs
            values, rows = jacobian_rows(g, torch.cat([x_tilde, x_tilde_prime]), rows_per_pass, points_per_pass)
            (g_tilde, g_tilde_prime), (J, J_prime) = values.chunk(2), rows.chunk(2)
        else:             # after the last step only the value is needed, for the stopping test
            with torch.no_grad():
                g_tilde, g_tilde_prime = g(torch.cat([x_tilde, x_tilde_prime])).chunk(2)
        r = g_tilde_prime - g_tilde
        if i > 0:
            # Step 5: record the iterate, keep it if it is a better verified collision, stop pairs.
            residual = r.norm(dim=1)
            objective = norms(x_tilde - x_a) ** 2 + norms(x_tilde_prime - x_prime_a) ** 2
            distance = torch.maximum(norms(x_tilde - x_a), norms(x_tilde_prime - x_prime_a))
            finite = torch.isfinite(residual) & torch.isfinite(objective)
            # Half the tolerance here, so float noise cannot fail the independent check below.
            best.offer(active, x_tilde, x_tilde_prime, distance, objective,
                       finite & (residual <= verify_tol / 2 * scale[active]))
            iterations[active] = i
            done = finite & (residual < tol * scale[active]) & ((objective_prev - objective).abs() < tol * objective_0[active])
            converged[active[done]] = True
            keep = finite & ~done
            if i == max_iter or not keep.any():
                break
            if not keep.all():
                active, x_a, x_prime_a = active[keep], x_a[keep], x_prime_a[keep]
                x_tilde, x_tilde_prime, r = x_tilde[keep], x_tilde_prime[keep], r[keep]
                J, J_prime = J[keep], J_prime[keep]
                objective = objective[keep]
            objective_prev = objective
        # Step 4: convex combination with the original pair, then projection onto H_i.
        a = alpha * gamma ** i
        p = (1 - a) * x_tilde + a * x_a
        p_prime = (1 - a) * x_tilde_prime + a * x_prime_a
        x_tilde, x_tilde_prime = project(J, J_prime, r, x_tilde, x_tilde_prime, p, p_prime, box)

    return best.verified(g, x, x_prime, midpoint, objective_0, scale, verify_tol, feature_gap, iterations,
                         converged, return_points)


# Earlier best collisions kept per pair, for certify.py to fall back to when the best cannot be
# certified (before falling back to the midpoint).
EARLIER_KEPT = 2


class _Best:
    """Per pair, the best collision found so far, starting from the midpoint (always a collision),
    and the EARLIER_KEPT collisions it replaced last (NaN where there were fewer)."""

    def __init__(self, midpoint: torch.Tensor, distance: torch.Tensor, objective: torch.Tensor):
        self.tilde, self.tilde_prime = midpoint.clone(), midpoint.clone()
        self.distance, self.objective = distance.clone(), objective.clone()
        shape = (len(midpoint), EARLIER_KEPT, *midpoint.shape[1:])
        self.earlier = torch.full(shape, float("nan"), dtype=midpoint.dtype, device=midpoint.device)
        self.earlier_prime = self.earlier.clone()
        self.found = torch.zeros(len(midpoint), dtype=torch.bool, device=midpoint.device)

    def offer(self, pairs: torch.Tensor, u: torch.Tensor, u_prime: torch.Tensor, distance: torch.Tensor,
              objective: torch.Tensor, collides: torch.Tensor) -> None:
        """Keep (u, u') for the pairs where it collides and is closer than their best so far."""
        better = collides & (distance < self.distance[pairs])
        won = pairs[better]
        if EARLIER_KEPT:   # the replaced best moves to the front of the earlier ones (not the start's midpoint)
            pad = lambda t: torch.where(self.found[won].view(-1, *[1] * (t.dim() - 1)), t, float("nan"))  # noqa: E731
            self.earlier[won] = torch.cat([pad(self.tilde[won]).unsqueeze(1), self.earlier[won, :-1]], dim=1)
            self.earlier_prime[won] = torch.cat([pad(self.tilde_prime[won]).unsqueeze(1), self.earlier_prime[won, :-1]],
                                                dim=1)
        self.found[won] = True
        self.tilde[won], self.tilde_prime[won] = u[better], u_prime[better]
        self.distance[won], self.objective[won] = distance[better], objective[better]

    def verified(self, g: Features, x: torch.Tensor, x_prime: torch.Tensor, midpoint: torch.Tensor,
                 objective_0: torch.Tensor, scale: torch.Tensor, verify_tol: float, feature_gap: torch.Tensor,
                 iterations: torch.Tensor, converged: torch.Tensor, return_points: bool) -> Collisions:
        """Verify every kept collision by an independent forward pass; a pair that fails falls back
        to the midpoint."""
        with torch.no_grad():
            check_tilde, check_tilde_prime = g(torch.cat([self.tilde, self.tilde_prime])).chunk(2)
        residual = (check_tilde_prime - check_tilde).norm(dim=1)
        failed = ~(residual <= verify_tol * scale)
        if failed.any():
            self.tilde[failed], self.tilde_prime[failed] = midpoint[failed], midpoint[failed]
            self.distance[failed] = (x - x_prime)[failed].flatten(1).norm(dim=1) / 2
            self.objective[failed] = objective_0[failed]
            residual[failed] = 0.0   # x~ = x~': g(x~') - g(x~) is exactly zero
        cpu = lambda t: t.detach().to("cpu", torch.float64)  # noqa: E731
        return Collisions(
            distance=cpu(self.distance), objective=cpu(self.objective), residual=cpu(residual),
            feature_gap=cpu(feature_gap), iterations=iterations.cpu(), converged=converged.cpu(),
            x_tilde=self.tilde.detach().cpu() if return_points else None,
            x_tilde_prime=self.tilde_prime.detach().cpu() if return_points else None,
            earlier_tilde=self.earlier.detach().cpu() if return_points else None,
            earlier_tilde_prime=self.earlier_prime.detach().cpu() if return_points else None,
        )


def _plans_gpu_memory(device: torch.device) -> bool:
    """Whether the batch size is planned from measured device memory (CUDA devices)."""
    return device.type == "cuda"


def _in_training_mode(f: Features) -> bool:
    """Whether f is a module with a batch-dependent or random layer in training mode."""
    if not isinstance(f, torch.nn.Module):
        return False
    stateful = (torch.nn.modules.batchnorm._NormBase, torch.nn.modules.dropout._DropoutNd)
    return any(mod.training for mod in f.modules() if isinstance(mod, stateful))


def jacobian_rows(g: Features, u: torch.Tensor, rows_per_pass: int | None = None,
                  points_per_pass: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """g(u) (N, m) and the Jacobian of g at every point of u as (N, m, n0).

    One forward pass and m vector-Jacobian products with the unit cotangents, each backward pass
    covering `points_per_pass` points (default all) and `rows_per_pass` rows (default all m at
    once, vmapped with torch.func). Points of the batch are independent.
    """
    if points_per_pass is not None and len(u) > points_per_pass:
        parts = [jacobian_rows(g, part, rows_per_pass) for part in u.split(points_per_pass)]
        return torch.cat([v for v, _ in parts]), torch.cat([r for _, r in parts])
    value, vjp_fn = torch.func.vjp(g, u)
    N, m = value.shape
    rows_per_pass = rows_per_pass or m
    basis = torch.eye(m, dtype=value.dtype, device=value.device).unsqueeze(1).expand(m, N, m)
    rows = torch.empty((N, m, u[0].numel()), dtype=u.dtype, device=u.device)
    for start in range(0, m, rows_per_pass):
        stop = min(start + rows_per_pass, m)
        if stop - start == 1:   # a plain VJP: vmap over a single row only adds batching-rule overhead
            rows[:, start] = vjp_fn(basis[start])[0].reshape(N, -1)
        else:
            (block,) = torch.func.vmap(vjp_fn)(basis[start:stop])             # (rows, N, *shape)
            rows[:, start:stop] = block.transpose(0, 1).reshape(N, stop - start, -1)
    # Detached: with a module whose parameters require grad the rows would carry their autograd
    # graphs, and every iterate built from them would keep all earlier ones alive.
    return value.detach(), rows.detach()


def _step_scales(weights: tuple[torch.Tensor, torch.Tensor] | None, like: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair multipliers of the two points' steps, broadcastable against `like` (B, *shape):
    1 / w and 1 / w' for the metric w ||u - p||^2 + w' ||u' - p'||^2 (both 1: Euclidean)."""
    if weights is None:
        one = torch.ones(len(like), dtype=like.dtype, device=like.device)
        weights = (one, one)
    shape = (-1,) + (1,) * (like.dim() - 1)
    return (1 / weights[0]).reshape(shape), (1 / weights[1]).reshape(shape)


def _gram(J_left: torch.Tensor, J: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """scale * J_left J^T per pair, scale the broadcastable (B, 1, ...) step multiplier."""
    return scale.reshape(-1, 1, 1) * (J_left @ J.transpose(1, 2))


def _apply(J: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Batched J v for J (B, m, n0) and v (B, *shape)."""
    return (J @ v.reshape(v.shape[0], -1, 1)).squeeze(2)


def _solve_psd(G: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Solve G y = c for a batch of m x m positive semi-definite G (the M M^T of each pair).

    Cholesky where it succeeds; where G is singular (dead ReLUs give zero Jacobian rows at both
    points) a pseudo-inverse from the eigendecomposition, which yields the minimum-norm projection.
    """
    L, info = torch.linalg.cholesky_ex(G)
    y = torch.cholesky_solve(c.unsqueeze(2), L).squeeze(2)
    bad = (info != 0) | ~torch.isfinite(y).all(dim=1)
    if bad.any():
        # In float64: float32's eigh fails to converge on nearly vanishing G (saturated units).
        G_bad, c_bad = G[bad].double(), c[bad].double()
        w, Q = torch.linalg.eigh(G_bad)
        cutoff = w.amax(dim=1, keepdim=True).clamp_min(0) * G.shape[1] * torch.finfo(G.dtype).eps
        w_inv = torch.where(w > cutoff, 1 / w, torch.zeros_like(w))
        y[bad] = (Q @ (w_inv.unsqueeze(2) * (Q.transpose(1, 2) @ c_bad.unsqueeze(2)))).squeeze(2).to(y.dtype)
    return y


# Semi-smooth Newton iterations of the box-constrained projection; each is one m x m solve per pair.
BOX_NEWTON_STEPS = 20
BOX_NEWTON_HALVINGS = 6


def project(J: torch.Tensor, J_prime: torch.Tensor, r: torch.Tensor, x_tilde: torch.Tensor,
            x_tilde_prime: torch.Tensor, p: torch.Tensor, p_prime: torch.Tensor,
            box: tuple[float, float] | None = None,
            weights: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection of the pair (p, p') onto the linearized collision constraint H_i,

        r + J' (u' - x~') - J (u - x~) = 0,

    and, with a box (lo, hi), onto H_i intersected with lo <= u, u' <= hi; with `weights` (w, w'),
    per-pair tensors (w, w' > 0), in the metric w ||u - p||^2 + w' ||u' - p'||^2 (default: both 1,
    the Euclidean projection; the formulas below are for that case, and with weights the steps
    J^T y and J'^T y and the Gram matrices J J^T and J' J'^T carry the factors 1 / w and 1 / w').
    Without a box it is
    one m x m solve: (u, u') = (p + J^T y, p' - J'^T y) with (J J^T + J' J'^T) y = c(p, p'). With a
    box the minimizer is (clip(p + J^T y), clip(p' - J'^T y)) for the y that satisfies the
    constraint (the Lagrangian separates per coordinate); y solves that piecewise-linear equation
    by semi-smooth Newton, whose matrix keeps only the unclipped coordinates, with a halving step
    on the residual norm. Points are always inside the box; the constraint holds to solver accuracy
    where H_i meets the box (elsewhere the closest the iteration gets), and the search verifies
    every collision it keeps anyway.
    """
    def constraint(u: torch.Tensor, u_prime: torch.Tensor) -> torch.Tensor:
        return r + _apply(J_prime, u_prime - x_tilde_prime) - _apply(J, u - x_tilde)

    s, s_prime = _step_scales(weights, p)

    def back(M: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scale * (M.transpose(1, 2) @ y.unsqueeze(2)).reshape(p.shape)

    y = _solve_psd(_gram(J, J, s) + _gram(J_prime, J_prime, s_prime), constraint(p, p_prime))
    if box is None:
        return p + back(J, y, s), p_prime - back(J_prime, y, s_prime)
    lo, hi = box

    # v = p + J^T y and v' = p' - J'^T y are affine in y: the trial points of a step are cheap.
    v, v_prime = p + back(J, y, s), p_prime - back(J_prime, y, s_prime)
    # Converged once the constraint holds to rounding of the violation there was to remove.
    floor = 16 * torch.finfo(p.dtype).eps * (constraint(p, p_prime).norm(dim=1) + r.norm(dim=1))
    c = constraint(v.clamp(lo, hi), v_prime.clamp(lo, hi))
    size = c.norm(dim=1)
    done = size <= floor
    for _ in range(BOX_NEWTON_STEPS):
        if done.all():
            break
        free = ((lo < v) & (v < hi)).flatten(1).to(p.dtype).unsqueeze(1)
        free_prime = ((lo < v_prime) & (v_prime < hi)).flatten(1).to(p.dtype).unsqueeze(1)
        H = _gram(J * free, J, s) + _gram(J_prime * free_prime, J_prime, s_prime)
        step = _solve_psd(H, c)
        dv, dv_prime = back(J, step, s), -back(J_prime, step, s_prime)
        accepted = torch.zeros_like(done)
        t = 1.0
        for _ in range(BOX_NEWTON_HALVINGS):   # halve the step until the constraint violation decreases
            trial, trial_prime = v + t * dv, v_prime + t * dv_prime
            trial_c = constraint(trial.clamp(lo, hi), trial_prime.clamp(lo, hi))
            trial_size = trial_c.norm(dim=1)
            take = ~accepted & ~done & (trial_size < size)
            v[take], v_prime[take], c[take], size[take] = trial[take], trial_prime[take], trial_c[take], trial_size[take]
            accepted |= take
            if (accepted | done).all():
                break
            t /= 2
        done = done | ~accepted | (size <= floor)
    u, u_prime = v.clamp(lo, hi), v_prime.clamp(lo, hi)
    return u, u_prime


# Merit step control (step = "merit"): trial fractions per iteration, the factor a rejected one
# shrinks by, the factor an accepted one grows by (up to 1), the exact-penalty weight of the merit
# function, and the chord steps that restore a collision with fixed Jacobians (forward passes
# only; a Jacobian costs one forward and m backward passes). Chosen on the default experiment's
# taps (benchmarks/bench_tightness.py), before the balancing metric: shrink 0.5 or penalty 1.2-2
# left fc6 1-2% looser. Re-checked with it on the 5 hardest taps: penalty 0.5-2, shrink 0.6-0.8,
# growth 2, 6 tries or 16 chord steps moved the medians by up to 1.4% either way, with no
# consistent gain.
MERIT_TRIES = 4
MERIT_SHRINK = 0.7
MERIT_GROW = 4.0
MERIT_PENALTY = 1.0
CHORD_STEPS = 8
MERIT_PATIENCE = 3
# The balancing metric: fixed-point steps per iteration that tilt it until the Gauss-Newton step's
# two distances are equal (4: within 3e-4 of a local min-max optimum where 6 reach 2e-4, on
# test_collide's smooth 2-layer map), and the bound on its log weight ratio log(w / w') (weights
# up to e^3 = 20 apart), so that a pair one of whose points cannot move (pinned by the box)
# cannot tilt it without end.
BALANCE_STEPS = 4
BALANCE_LIMIT = 3.0
# The curvature fraction (a candidate of issue 28, off): when the first trial of an iteration is rejected,
# the second is at 1 / (1 + rho) if that is shorter (instead of the first's MERIT_SHRINK times),
# rho the curvature of the Lagrangian along the last step that the Jacobians at its two ends
# measure, relative to the metric's (the Newton step along the Gauss-Newton direction of a problem
# with that curvature), at least CURVATURE_FLOOR. Not as the first trial: on the TRADES model's
# taps rho grows as the steps shorten (the kinks of a ReLU network), and first trials at
# 1 / (1 + rho) ended 1.3% looser than without them at conv2 (median, 15 evaluations), whose longer
# first trials were accepted there. Off because, as the second trial, it is tighter at 15
# evaluations on 12 of the 22 taps measured and looser on 8, 0.46% at TRADES fc6 (docs/search.md;
# benchmarks/bench_tightness.py measures it); turning it on changes the search: its revision too.
CURVATURE_FRACTION = False
CURVATURE_FLOOR = 0.05


def merit(g: Features, x: torch.Tensor, x_prime: torch.Tensor, *, alpha: float, gamma: float, max_iter: int,
          tol: float, verify_tol: float, return_points: bool = False, rows_per_pass: int | None = None,
          points_per_pass: int | None = None, box: tuple[float, float] | None = None) -> Collisions:
    """Algorithm 1's linearize-and-project step with a per-pair step fraction chosen by a line
    search on an exact-penalty merit function, in a metric that balances the pair's two distances.

    At the iterate z = (x~, x~') (any pair of points) with Jacobians J, J', the projections onto
    H_i of z (P_z, the Newton restoration) and of the original pair (P_x, the Gauss-Newton step)
    bound a segment of points satisfying the linearized constraint (and the box); Algorithm 1's
    projection of (1 - a) z + a (x, x') is the point (1 - a) P_z + a P_x on it. A trial point u at
    fraction a is judged by

        psi(u) = ||(u - x, u' - x')||_w + MERIT_PENALTY * ||delta(u)||_w,

    delta(u) the least-norm correction of its true residual g(u') - g(u) with J, J' (one forward
    pass): the distance to the original pair plus a first-order distance to the collision set
    (at z itself that is ||P_z - z||). The first of up to MERIT_TRIES fractions a, a s, a s^2, ...
    (s = MERIT_SHRINK) that lowers psi below psi(z) becomes the next iterate and a grows by
    MERIT_GROW (up to 1) if P_z could be restored; when none does, the next iterate is P_z. After
    MERIT_PATIENCE iterates in a row whose P_z could not be restored, a shrinks by s at each.
    With CURVATURE_FRACTION (off: see its comment), when the first trial is rejected the second is
    at 1 / (1 + rho) instead of a s, where that is shorter than a and the last step measured a
    positive curvature rho (_curvature): the Jacobians at the step's two ends give the change of
    the Lagrangian's gradient along it, the secant equation of a quasi-Newton method restricted to
    that one direction, and 1 / (1 + rho) is the Newton step along the Gauss-Newton direction of a
    problem with that curvature. On a ReLU network the map is piecewise linear and this curvature
    is that of the kinks the step crossed; the Gauss-Newton step, which ignores it, overshoots.
    A full quasi-Newton (SR1) model of the same secants in all directions, and Broyden updates of
    the Jacobians between evaluations, measured looser (docs/search.md).
    Unlike paper 001's schedule the step length adapts to how far the linearization holds, and
    unlike a search over verified collisions the iterates need not collide, so a step can cross
    ReLU kinks and let the next Jacobians restore it. At every iterate P_z is restored by up to CHORD_STEPS chord steps (fixed
    J, J') and offered as the best collision when its residual is within verify_tol / 2 of the
    feature gap; so is the accepted trial of the last iteration. A pair stops when P_z collides,
    the Gauss-Newton step moves less than tol of the midpoint objective (a squared length) and P_z's
    two distances differ by less than tol of its square root (the imbalance moves the max to first
    order, a step near stationarity the objective only to second), or
    after max_iter Jacobian evaluations (the midpoint's included). The first fraction is alpha;
    gamma (algorithm1's decay) is not used. The best collision is verified independently at the
    end, as in algorithm1.

    The distance is max(||x~ - x||, ||x~' - x'||), which the sum of squares that Algorithm 1
    minimizes does not balance: where the map's Jacobians differ at the two points its minimizer
    can leave one point much farther than the other. So every projection, chord step and psi is
    in the metric ||(v, v')||_w^2 = w ||v||^2 + w' ||v'||^2 (w + w' = 2, both 1 at the start,
    kept per pair from one iteration to the next). At each iterate, BALANCE_STEPS fixed-point
    steps first tilt the log weight ratio log(w / w') by log(||u - x|| / ||u' - x'||) at the
    Gauss-Newton point (u, u') = P_x of the current weights (the update that equalizes them if
    each distance is inversely proportional to its weight), clamped to +-BALANCE_LIMIT. The
    Gauss-Newton step is then, to the accuracy of those steps, the linearized min-max step: of the
    points on H_i (and in the box) the closest to (x, x') in the max of the two distances (a
    weighted least-distance point with equal distances is a min-max point of its set). A fixed
    point with equal distances is a first-order stationary point of min max(||x~ - x||,
    ||x~' - x'||) over collisions. Where no weights within the clamp balance the step (one point
    pinned by the box or by dead ReLUs), the step stays the 20:1-weighted least-squares one and the
    pair never counts as converged: it runs its whole budget. Measured
    (benchmarks/bench_tightness.py, 15 Jacobian evaluations, the default models' 21 taps): median
    distances 0.90-0.99 of a 300-iteration run of Algorithm 1, at most 1.6% above the best known.
    """
    B = x.shape[0]
    norms = lambda t: t.flatten(1).norm(dim=1)  # noqa: E731 - row norms of a batch
    with torch.no_grad():
        g_x, g_x_prime = g(torch.cat([x, x_prime])).chunk(2)
    feature_gap = norms(g_x_prime - g_x)
    tiny = torch.finfo(x.dtype).tiny
    scale = feature_gap.clamp_min(tiny)
    midpoint = (x + x_prime) / 2
    objective_0 = norms(x - x_prime) ** 2 / 2
    best = _Best(midpoint, norms(x - x_prime) / 2, objective_0)
    iterations = torch.zeros(B, dtype=torch.int64, device=x.device)
    converged = torch.zeros(B, dtype=torch.bool, device=x.device)

    def pair_norm(u: torch.Tensor, u_prime: torch.Tensor, v: torch.Tensor, v_prime: torch.Tensor,
                  w: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """(w ||u - v||^2 + w' ||u' - v'||^2)^(1/2)."""
        return (w[0] * norms(u - v) ** 2 + w[1] * norms(u_prime - v_prime) ** 2).sqrt()

    log_ratio = torch.zeros(B, dtype=x.dtype, device=x.device)   # log(w / w') of the balancing metric

    def weights(pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The metric's (w, w') for these pairs, w + w' = 2."""
        w = 2 * torch.sigmoid(log_ratio[pairs])
        return w, 2 - w

    def restore_and_offer(pairs, u, u_prime, J_p, J_prime_p) -> torch.Tensor:
        """Chord steps from (u, u') until it collides; offer it as the best collision. Whether it
        collides. Only the pairs that do not collide yet take a step (each pair's result is the
        same whichever pairs share its batch)."""
        residual = torch.empty(len(pairs), dtype=x.dtype, device=x.device)
        todo = torch.arange(len(pairs), device=x.device)
        for chord in range(CHORD_STEPS + 1):
            with torch.no_grad():
                g_u, g_u_prime = g(torch.cat([u[todo], u_prime[todo]])).chunk(2)
            r_u = g_u_prime - g_u
            residual[todo] = r_u.norm(dim=1)
            # Half the tolerance here, so float noise cannot fail the independent check at the end.
            open_ = ~(residual[todo] <= verify_tol / 2 * scale[pairs[todo]])
            todo, r_u = todo[open_], r_u[open_]
            if chord == CHORD_STEPS or not len(todo):
                break
            u[todo], u_prime[todo] = _chord_step(J_p[todo], J_prime_p[todo], r_u, u[todo], u_prime[todo], box,
                                                 weights(pairs[todo]))
        objective = norms(u - x[pairs]) ** 2 + norms(u_prime - x_prime[pairs]) ** 2
        distance = torch.maximum(norms(u - x[pairs]), norms(u_prime - x_prime[pairs]))
        collides = torch.isfinite(residual) & torch.isfinite(objective) & (residual <= verify_tol / 2 * scale[pairs])
        best.offer(pairs, u, u_prime, distance, objective, collides)
        return collides

    z, z_prime = midpoint.clone(), midpoint.clone()
    # Per pair, the last step (from the previous iterate) and the previous Jacobians applied to it,
    # for the curvature fraction; NaN before the first step.
    step, step_prime = torch.full_like(midpoint, float("nan")), torch.full_like(midpoint, float("nan"))
    J_step = torch.full((B, g_x.shape[1]), float("nan"), dtype=x.dtype, device=x.device)
    J_step_prime = J_step.clone()
    unrestored = torch.zeros(B, dtype=torch.int64, device=x.device)
    fraction = torch.full((B,), float(alpha), dtype=x.dtype, device=x.device)
    active = torch.arange(B, device=x.device)
    if max_iter > 0:
        g_mid, J = jacobian_rows(g, midpoint, rows_per_pass, points_per_pass)
        J_prime, r = J, torch.zeros_like(g_mid)   # both points are the midpoint: one set of rows
        iterations[:] = 1
    else:
        active = active[:0]
    while len(active):
        za, za_prime = z[active], z_prime[active]
        for _ in range(BALANCE_STEPS):   # the metric in which the Gauss-Newton step is balanced
            step_x = project(J, J_prime, r, za, za_prime, x[active], x_prime[active], box, weights(active))
            tilt = (norms(step_x[0] - x[active]).clamp_min(tiny)
                    / norms(step_x[1] - x_prime[active]).clamp_min(tiny)).log()
            log_ratio[active] = (log_ratio[active] + tilt).clamp(-BALANCE_LIMIT, BALANCE_LIMIT)
        W = weights(active)
        restore = project(J, J_prime, r, za, za_prime, za, za_prime, box, W)                 # P_z
        newton = project(J, J_prime, r, za, za_prime, x[active], x_prime[active], box, W)    # P_x
        restored = restore_and_offer(active, restore[0].clone(), restore[1].clone(), J, J_prime)
        psi_z = pair_norm(za, za_prime, x[active], x_prime[active], W) + MERIT_PENALTY * pair_norm(*restore, za, za_prime, W)
        gap = norms(restore[0] - x[active]) - norms(restore[1] - x_prime[active])
        still = restored & (norms(newton[0] - restore[0]) ** 2 + norms(newton[1] - restore[1]) ** 2
                            < tol * objective_0[active]) & (gap.abs() < tol * objective_0[active].sqrt())
        converged[active[still]] = True
        last = iterations[active] >= max_iter    # no Jacobians at the next iterate: offer it now
        a = fraction[active].clone()
        curved = torch.full_like(a, float("nan"))   # the curvature fraction, where there is one
        if CURVATURE_FRACTION:
            rho = _curvature(J, J_prime, r, za, za_prime, x[active], x_prime[active], W, step[active],
                             step_prime[active], J_step[active], J_step_prime[active])
            curved = torch.where(rho > 0, (1 / (1 + rho)).clamp(min=CURVATURE_FLOOR, max=1.0), curved)
        # Steps that keep the iterates too far from the collision set for the chord steps to
        # restore them can cycle (seen on unprojected wide maps): they stop growing the fraction,
        # and after MERIT_PATIENCE such iterates in a row each one shrinks it.
        unrestored[active] = torch.where(restored, 0, unrestored[active] + 1)
        a = torch.where(unrestored[active] >= MERIT_PATIENCE, a * MERIT_SHRINK, a)
        searching, accepted = ~still, torch.zeros_like(still)
        new_z, new_z_prime = restore[0].clone(), restore[1].clone()   # when no trial is accepted: P_z
        for trial in range(MERIT_TRIES):
            idx = searching.nonzero().squeeze(1)
            if not len(idx):
                break
            w = a[idx].view(-1, *([1] * (x.dim() - 1)))
            u = (1 - w) * restore[0][idx] + w * newton[0][idx]
            u_prime = (1 - w) * restore[1][idx] + w * newton[1][idx]
            with torch.no_grad():
                g_u, g_u_prime = g(torch.cat([u, u_prime])).chunk(2)
            Wi = (W[0][idx], W[1][idx])
            c, c_prime = _chord_step(J[idx], J_prime[idx], g_u_prime - g_u, u, u_prime, box, Wi)
            psi = (pair_norm(u, u_prime, x[active[idx]], x_prime[active[idx]], Wi)
                   + MERIT_PENALTY * pair_norm(c, c_prime, u, u_prime, Wi))
            ok = torch.isfinite(psi) & (psi < psi_z[idx])
            took = idx[ok]
            accepted[took], searching[took] = True, False
            new_z[took], new_z_prime[took] = u[ok], u_prime[ok]
            rejected = idx[~ok]
            shorter = (curved[rejected] < a[rejected]) if trial == 0 else torch.zeros_like(rejected, dtype=torch.bool)
            a[rejected] = torch.where(shorter, curved[rejected], a[rejected] * MERIT_SHRINK)
            offer = ok & last[idx]
            if offer.any():
                restore_and_offer(active[idx[offer]], u[offer].clone(), u_prime[offer].clone(),
                                  J[idx[offer]], J_prime[idx[offer]])
        moved = active[~still]
        z[moved], z_prime[moved] = new_z[~still], new_z_prime[~still]
        fraction[active] = torch.where(accepted & restored, (a * MERIT_GROW).clamp(max=1.0), a)
        # The pairs that moved and have budget left get Jacobian rows at their new iterate.
        left = (~still).nonzero().squeeze(1)
        left = left[iterations[active[left]] < max_iter]
        active = active[left]
        if len(active):
            step[active], step_prime[active] = z[active] - za[left], z_prime[active] - za_prime[left]
            J_step[active] = _apply(J[left], step[active])
            J_step_prime[active] = _apply(J_prime[left], step_prime[active])
            values, rows = jacobian_rows(g, torch.cat([z[active], z_prime[active]]), rows_per_pass, points_per_pass)
            (v, v_prime), (J, J_prime) = values.chunk(2), rows.chunk(2)
            r = v_prime - v
            iterations[active] += 1
            # A pair whose features or Jacobians stopped being finite stops (keeping its best collision).
            finite = torch.isfinite(r).all(1) & torch.isfinite(rows.flatten(1)).all(1).view(2, -1).all(0)
            if not finite.all():
                active, J, J_prime, r = active[finite], J[finite], J_prime[finite], r[finite]
    return best.verified(g, x, x_prime, midpoint, objective_0, scale, verify_tol, feature_gap, iterations,
                         converged, return_points)


def _curvature(J: torch.Tensor, J_prime: torch.Tensor, r: torch.Tensor, z: torch.Tensor, z_prime: torch.Tensor,
               x: torch.Tensor, x_prime: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor], s: torch.Tensor,
               s_prime: torch.Tensor, J_s: torch.Tensor, J_s_prime: torch.Tensor) -> torch.Tensor:
    """Per pair, rho = s^T (grad L(z) - grad L(z - s)) / ||s||_w^2 - 1 with the multipliers of the
    Gauss-Newton step at z: the curvature of the Lagrangian of min ||(u - x, u' - x')||_w^2 / 2
    subject to g(u') = g(u) along the last step s = (s, s') that the constraint's Jacobians at its
    two ends measure (the secant equation of a quasi-Newton method, restricted to the step),
    relative to the metric's. J_s, J_s_prime are the previous Jacobians applied to s, s'. NaN
    where there was no step (or it was zero). The multipliers are those of the unboxed projection
    of (x, x') onto the linearization at z (project's y)."""
    scale, scale_prime = _step_scales(weights, z)
    G = _gram(J, J, scale) + _gram(J_prime, J_prime, scale_prime)
    mu = _solve_psd(G, r + _apply(J_prime, x_prime - z_prime) - _apply(J, x - z))
    change = (_apply(J_prime, s_prime) - J_s_prime) - (_apply(J, s) - J_s)
    norms2 = lambda t: t.flatten(1).pow(2).sum(1)  # noqa: E731
    length = weights[0] * norms2(s) + weights[1] * norms2(s_prime)
    return (mu * change).sum(1) / torch.where(length > 0, length, float("nan"))


def _chord_step(J: torch.Tensor, J_prime: torch.Tensor, r: torch.Tensor, u: torch.Tensor, u_prime: torch.Tensor,
                box: tuple[float, float] | None,
                weights: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The least-norm correction of (u, u') that zeroes the linearized residual r = g(u') - g(u)
    with the given Jacobians (least in the metric of `weights`, as in project). With a box, only
    coordinates strictly inside it move (one m x m solve, no Newton iteration: the search checks
    the result anyway) and the result is clipped to the box."""
    if box is None:
        return project(J, J_prime, r, u, u_prime, u, u_prime, weights=weights)
    lo, hi = box
    s, s_prime = _step_scales(weights, u)
    free = ((u > lo) & (u < hi)).flatten(1).to(u.dtype).unsqueeze(1)
    free_prime = ((u_prime > lo) & (u_prime < hi)).flatten(1).to(u.dtype).unsqueeze(1)
    JD, JD_prime = J * free, J_prime * free_prime
    y = _solve_psd(_gram(JD, J, s) + _gram(JD_prime, J_prime, s_prime), r)
    step = s * (JD.transpose(1, 2) @ y.unsqueeze(2)).reshape(u.shape)
    step_prime = s_prime * (JD_prime.transpose(1, 2) @ y.unsqueeze(2)).reshape(u.shape)
    return (u + step).clamp(lo, hi), (u_prime - step_prime).clamp(lo, hi)


# The step controls of `search` (option `step`): the paper's decaying schedule, and the merit line
# search; each one's Jacobian budget when max_iter is None is options.DEFAULT_MAX_ITER.
STEPS = {"decay": algorithm1, "merit": merit}


def resolve_step(step: str, features: int) -> str:
    """The step control `search` runs on a map with `features` outputs (m): "auto" is merit up to
    AUTO_MERIT_MAX_FEATURES and decay above."""
    if step == "auto":
        return "merit" if features <= AUTO_MERIT_MAX_FEATURES else "decay"
    if step not in STEPS:
        raise ValueError(f"unknown step control {step!r}; known: auto, {', '.join(STEPS)}")
    return step
