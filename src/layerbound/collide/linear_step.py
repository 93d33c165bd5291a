"""What both step controls of the Jacobian search share: the Jacobian rows of a map, the least-norm
projection onto the collision constraint linearized at the current pair (kept in a box when there
is one), and the record of the best verified collisions found so far (paper 001, Sec. 5.1)."""

from __future__ import annotations

import torch

from .base import Collisions, Features


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
