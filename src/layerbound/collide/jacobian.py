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
from .options import SearchOptions

# On the CPU the Jacobian rows are computed for at most this many points per forward/backward, so
# the activations stay in cache: measured ~10% faster than 128 points for the Medium CNN.
CPU_POINTS_PER_PASS = 64


def run(f: Features, A: torch.Tensor | None, x: torch.Tensor, x_prime: torch.Tensor, *, options: SearchOptions,
        dtype: torch.dtype, batch_size: int, return_points: bool) -> Collisions:
    """The registry's entry point (collide.METHODS["jacobian"]): `search` with a shard's options."""
    return search(f, A, x, x_prime, dtype=dtype, batch_size=batch_size, return_points=return_points,
                  progress=True, **asdict(options))


def search(f: Features, A: torch.Tensor | None, x: torch.Tensor, x_prime: torch.Tensor, *,
           alpha: float = SearchOptions.alpha, gamma: float = SearchOptions.gamma,
           max_iter: int = SearchOptions.max_iter, tol: float | None = SearchOptions.tol,
           verify_tol: float | None = SearchOptions.verify_tol, batch_size: int | None = None,
           rows_per_pass: int | None = SearchOptions.rows_per_pass, dtype: torch.dtype | None = None,
           return_points: bool = False, progress: bool = False) -> Collisions:
    """Collision distances d_{A o f}(x_k, x'_k) for a batch of pairs, by Algorithm 1.

    f maps a batch (B, *shape) to flattened features (B, n_j); an nn.Module must be in eval mode
    (BatchNorm must use its running statistics, so the pairs of a batch stay independent). A is
    the m x n_j projection, or None for the identity. The computation runs on x's device, in
    `dtype` (default: x's floating dtype); f must accept that dtype. `tol` is the convergence
    threshold of Algorithm 1 (residual relative to the feature gap, objective change relative to
    the midpoint objective); `verify_tol` the relative residual under which a collision counts.
    Pairs are processed `batch_size` at a time (default: all; on a CUDA device at most as many as
    its free memory holds, measured by memory.gpu_batch_size). `rows_per_pass` is how many of the
    m Jacobian rows one batched backward pass computes (default: all m on accelerators, 1 on the
    CPU, where the smaller working set measured ~1.5x faster for the Medium CNN at 64 pairs); on
    the CPU the rows are also computed CPU_POINTS_PER_PASS points at a time, for the same reason.
    `progress` shows a progress bar over the pairs (on stderr).
    """
    if _in_training_mode(f):
        raise ValueError("the feature extractor has BatchNorm or Dropout layers in training mode; call "
                         ".eval() first (batch statistics would mix the pairs of a batch)")
    if x.shape != x_prime.shape:
        raise ValueError(f"x and x_prime must have the same shape, not {tuple(x.shape)} and {tuple(x_prime.shape)}")
    dtype = dtype or (x.dtype if x.is_floating_point() else torch.float32)
    tol = DEFAULT_TOL.get(dtype, 1e-4) if tol is None else tol
    verify_tol = verify_tol_for(dtype, verify_tol)
    if not (0 < gamma < 1 and 0 < alpha <= 1 and max_iter >= 0):
        raise ValueError("need 0 < alpha <= 1, 0 < gamma < 1 and max_iter >= 0")
    x, x_prime = x.to(dtype), x_prime.to(dtype)
    if A is None:
        g = f
    else:
        A_t = A.to(device=x.device, dtype=dtype).T

        def g(u: torch.Tensor) -> torch.Tensor:
            return f(u) @ A_t

    batch_size = batch_size or max(len(x), 1)
    if x.device.type == "cuda" and len(x):
        # One search step on a few pairs measures the memory a pair needs on this device.
        def step(n: int) -> Collisions:
            return algorithm1(g, x[:n], x_prime[:n], alpha=alpha, gamma=gamma, max_iter=1, tol=tol,
                              verify_tol=verify_tol, rows_per_pass=rows_per_pass)
        log = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else (lambda line: None)
        batch_size = memory.gpu_batch_size(step, len(x), batch_size, x.device, log)
    if rows_per_pass is None:
        rows_per_pass = 1 if x.device.type == "cpu" else None
    points_per_pass = CPU_POINTS_PER_PASS if x.device.type == "cpu" else None
    parts = []
    with tqdm(total=len(x), desc="collision search", unit="pair", disable=not progress, mininterval=2.0) as bar:
        for s in range(0, len(x), batch_size):
            parts.append(algorithm1(g, x[s:s + batch_size], x_prime[s:s + batch_size], alpha=alpha, gamma=gamma,
                                    max_iter=max_iter, tol=tol, verify_tol=verify_tol, return_points=return_points,
                                    rows_per_pass=rows_per_pass, points_per_pass=points_per_pass))
            bar.update(len(x[s:s + batch_size]))
    return Collisions.concatenate(parts)


def algorithm1(g: Features, x: torch.Tensor, x_prime: torch.Tensor, *, alpha: float, gamma: float,
               max_iter: int, tol: float, verify_tol: float, return_points: bool = False,
               rows_per_pass: int | None = None, points_per_pass: int | None = None) -> Collisions:
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

    # Best verified collision per pair, starting from the midpoint (always a collision).
    best_tilde, best_tilde_prime = midpoint.clone(), midpoint.clone()
    best_distance = norms(x - x_prime) / 2
    best_objective = objective_0.clone()
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
            better = finite & (residual <= verify_tol / 2 * scale[active]) & (distance < best_distance[active])
            won = active[better]
            best_tilde[won], best_tilde_prime[won] = x_tilde[better], x_tilde_prime[better]
            best_distance[won], best_objective[won] = distance[better], objective[better]
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
        c = r + _apply(J_prime, p_prime - x_tilde_prime) - _apply(J, p - x_tilde)   # M p - b
        y = _solve_psd(J @ J.transpose(1, 2) + J_prime @ J_prime.transpose(1, 2), c)
        x_tilde = p + (J.transpose(1, 2) @ y.unsqueeze(2)).reshape(p.shape)
        x_tilde_prime = p_prime - (J_prime.transpose(1, 2) @ y.unsqueeze(2)).reshape(p.shape)

    # Verify every returned collision independently; a pair that fails falls back to the midpoint.
    with torch.no_grad():
        check_tilde, check_tilde_prime = g(torch.cat([best_tilde, best_tilde_prime])).chunk(2)
    residual = (check_tilde_prime - check_tilde).norm(dim=1)
    failed = ~(residual <= verify_tol * scale)
    if failed.any():
        best_tilde[failed], best_tilde_prime[failed] = midpoint[failed], midpoint[failed]
        best_distance[failed], best_objective[failed] = norms(x - x_prime)[failed] / 2, objective_0[failed]
        residual[failed] = 0.0   # x~ = x~': g(x~') - g(x~) is exactly zero
    cpu = lambda t: t.detach().to("cpu", torch.float64)  # noqa: E731
    return Collisions(
        distance=cpu(best_distance), objective=cpu(best_objective), residual=cpu(residual),
        feature_gap=cpu(feature_gap), iterations=iterations.cpu(), converged=converged.cpu(),
        x_tilde=best_tilde.detach().cpu() if return_points else None,
        x_tilde_prime=best_tilde_prime.detach().cpu() if return_points else None,
    )


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
    return value.detach(), rows


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
        w, Q = torch.linalg.eigh(G[bad])
        cutoff = w.amax(dim=1, keepdim=True).clamp_min(0) * G.shape[1] * torch.finfo(G.dtype).eps
        w_inv = torch.where(w > cutoff, 1 / w, torch.zeros_like(w))
        y[bad] = (Q @ (w_inv.unsqueeze(2) * (Q.transpose(1, 2) @ c[bad].unsqueeze(2)))).squeeze(2)
    return y
