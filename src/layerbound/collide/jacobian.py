"""Paper 001's Algorithm 1: the Jacobian collision search, batched over pairs (method `jacobian`).

`search` runs Algorithm 1 (linearize the collision constraint at the current iterate, take a
convex combination with the original pair, project onto the linearization), keeps the best
collision whose residual ||g(x~') - g(x~)|| is small relative to the pair's feature gap
||g(x') - g(x)||, verifies every returned collision with an independent forward pass, and falls
back to the midpoint (see base.py for the distance it bounds).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import asdict

import torch
from tqdm.auto import tqdm

from . import memory
from .linear_step import _Best, jacobian_rows, project
from .merit import merit
from .base import DEFAULT_TOL, Collisions, Features, verify_tol_for
from .features import Smoothing
from .options import AUTO_MERIT_MAX_FEATURES, DEFAULT_MAX_ITER, SearchOptions, check_smooth_iters

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
           rows_per_pass: int | None = SearchOptions.rows_per_pass, smooth_iters: int = SearchOptions.smooth_iters,
           dtype: torch.dtype | None = None, box: tuple[float, float] | None = None, return_points: bool = False,
           progress: bool = False) -> Collisions:
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
    `smooth_iters` > 0: merit's first Jacobian evaluations are on f with its ReLU modules as
    softplus (merit.py, features.Smoothing); decay, and maps without ReLU modules, ignore it.
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
    check_smooth_iters(smooth_iters, step, max_iter)
    module = getattr(f, "extractor", f)   # feature_map's CPU wrapper keeps the network there
    smoothing = Smoothing(module) if isinstance(module, torch.nn.Module) else None
    if step == "merit" and smooth_iters and smoothing:   # merit.py: the first evaluations on softplus ReLUs
        def smoothed(beta: float) -> Features:
            def g_beta(u: torch.Tensor) -> torch.Tensor:
                with smoothing.softplus(beta):
                    return g(u)
            return g_beta
        run_step = functools.partial(run_step, smooth_iters=smooth_iters, smoothed=smoothed)
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


def decay_search(g: Features, x: torch.Tensor, x_prime: torch.Tensor, *, alpha: float, gamma: float,
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


def _plans_gpu_memory(device: torch.device) -> bool:
    """Whether the batch size is planned from measured device memory (CUDA devices)."""
    return device.type == "cuda"


def _in_training_mode(f: Features) -> bool:
    """Whether f is a module with a batch-dependent or random layer in training mode."""
    if not isinstance(f, torch.nn.Module):
        return False
    stateful = (torch.nn.modules.batchnorm._NormBase, torch.nn.modules.dropout._DropoutNd)
    return any(mod.training for mod in f.modules() if isinstance(mod, stateful))


# The step controls of `search` (option `step`): the paper's decaying schedule, and the merit line
# search; each one's Jacobian budget when max_iter is None is options.DEFAULT_MAX_ITER.
STEPS = {"decay": decay_search, "merit": merit}


def resolve_step(step: str, features: int) -> str:
    """The step control `search` runs on a map with `features` outputs (m): "auto" is merit up to
    AUTO_MERIT_MAX_FEATURES and decay above."""
    if step == "auto":
        return "merit" if features <= AUTO_MERIT_MAX_FEATURES else "decay"
    if step not in STEPS:
        raise ValueError(f"unknown step control {step!r}; known: auto, {', '.join(STEPS)}")
    return step
