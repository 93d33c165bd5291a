"""Step control `merit` of the Jacobian search: minimizes the collision distance
max(||x~ - x||, ||x~' - x'||) by a per-pair step fraction from a line search on an exact-penalty
merit function, with chord steps that hold the linearized constraint (docs/search.md)."""

from __future__ import annotations

from typing import Callable

import torch

from .base import Collisions, Features
from .options import SMOOTH_BETA, SMOOTH_GROWTH
from .linear_step import _apply, _Best, _gram, _solve_psd, _step_scales, jacobian_rows, project


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
# evaluations on 24 of the 28 taps measured and looser on 3, 0.41% at pgd2 conv4 (docs/search.md;
# benchmarks/bench_tightness.py measures it); turning it on changes the search: its revision too.
CURVATURE_FRACTION = False
CURVATURE_FLOOR = 0.05


def merit(g: Features, x: torch.Tensor, x_prime: torch.Tensor, *, alpha: float, gamma: float, max_iter: int,
          tol: float, verify_tol: float, return_points: bool = False, rows_per_pass: int | None = None,
          points_per_pass: int | None = None, box: tuple[float, float] | None = None, smooth_iters: int = 0,
          smoothed: Callable[[float], Features] | None = None) -> Collisions:
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
    gamma (decay_search's decay) is not used. The best collision is verified independently at the
    end, as in decay_search.

    With smooth_iters k > 0 and `smoothed` (beta -> the map with its ReLUs as softplus of sharpness
    beta), the first k Jacobian evaluations, and the trials and chord steps between them, are on
    smoothed(SMOOTH_BETA * SMOOTH_GROWTH^i) at the i-th (i = 0 .. k - 1); nothing is offered as a
    collision and no pair stops during them, and everything after is on g itself. A piecewise
    linear map's linearization holds only up to the next kink its steps cross; the smoothed map's
    holds farther, so the first steps go farther before the kinks decide, and the search settles
    in another (on the TRADES model's taps, much closer) local optimum. Every collision offered,
    verified and certified is one of g.

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
    (benchmarks/bench_tightness.py, 15 Jacobian evaluations, certified, the 28 taps of the default
    models and a held-out one): medians up to 5.4% above the best known, within 1% on 8 taps;
    with smooth_iters 5, up to 2.3%, within 1% on 22 (docs/search.md).
    """
    if smoothed is None:
        smooth_iters = 0
    evaluation = 1   # the Jacobian evaluation the current iterate's rows come from

    def searched(u: torch.Tensor) -> torch.Tensor:
        """The map the current iteration searches: g, or during the first smooth_iters evaluations g smoothed."""
        if evaluation > smooth_iters:
            return g(u)
        return smoothed(SMOOTH_BETA * SMOOTH_GROWTH ** (evaluation - 1))(u)

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
                g_u, g_u_prime = searched(torch.cat([u[todo], u_prime[todo]])).chunk(2)
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
        # A collision of the smoothed map is none of g: not offered (but it steers the step as one).
        best.offer(pairs, u, u_prime, distance, objective, collides & (evaluation > smooth_iters))
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
        g_mid, J = jacobian_rows(searched, midpoint, rows_per_pass, points_per_pass)
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
        still &= evaluation > smooth_iters
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
                g_u, g_u_prime = searched(torch.cat([u, u_prime])).chunk(2)
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
            evaluation += 1
            values, rows = jacobian_rows(searched, torch.cat([z[active], z_prime[active]]), rows_per_pass,
                                         points_per_pass)
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
