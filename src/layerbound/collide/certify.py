"""Certification: every reported collision really collides (SPEC section 5, "Certification").

A collision method returns, per pair, its best candidate (x~, x~') and the earlier best ones.
They were accepted in the search's working precision, with a residual ||g(x~') - g(x~)|| small
relative to the pair's feature gap; on a smooth map the search rides that threshold, and a
candidate can be far from every true collision (on an injective map, where the only collisions
are x~ = x~', candidates at half the true distance were accepted). So before any distance is
reported, each candidate is re-evaluated with g in float64 (the network's own weights and the
projection's own entries, evaluated in float64) and polished by Gauss-Newton least-norm steps:
from the current point, the smallest step onto the collision constraint linearized there, with
the Jacobians of the float64 map (fresh ones, and chord steps that reuse them while they halve
the residual). With a box, a step moves only the coordinates strictly inside it and must stay
inside. A point is certified when

    ||r|| <= RTOL * F,   ||r + J' s' - J s|| <= ||r|| / 2,   ||(s, s')|| <= XTOL * ||x - x'|| / 2,

r = g(x~') - g(x~) in float64, F = max(||g(x)||, ||g(x')||, ||g(x~)||, ||g(x~')||) the pair's
feature magnitude (the scale of round-off, not the feature gap), and (s, s') the least-norm
correction of r with the Jacobians J, J' there. With RTOL = 1e-12 and XTOL = 1e-10: the residual
is at float64 round-off; the correction explains it (a residual in a direction the Jacobians do
not reach, as at a saturated unit, is one no nearby collision accounts for); and the collision set
of the linearized map lies within 1e-10 ||x - x'|| / 2 of the point, so the reported distance is
that of a true collision to that relative accuracy, to first order. A candidate with x~ = x~' bit
for bit collides exactly and is certified as the exact midpoint (x + x') / 2, the closest collision
of that kind. The reported distance is the polished one.

Off a piecewise-linear map that is not enough: float64 rounds a saturated unit to a constant (tanh
beyond about 19), so a residual can read 0, in some features or all, at points that collide in no
exact arithmetic. There a point is certified only where, in addition, the smallest singular value
sigma of [-J, J'] (its free coordinates) has RTOL * F / sigma <= XTOL * ||x - x'|| / 2: the
Jacobians reach every feature direction, so whatever residual round-off hides is removed within
the criterion's step length. A zero derivative, or more features than the two points have free
coordinates, fails it and the pair falls back (that only loosens the bound). On a registry
network (conv, linear, batch norm in eval mode, ReLU, max-pooling: features.piecewise_linear) a
zero derivative is a dead unit whose feature is constant exactly, and the test is not needed.

A pair whose best candidate is not certified within POLISH_JACOBIANS Jacobian evaluations falls
back to the method's earlier candidates, best first, and finally to the midpoint (x + x') / 2,
which collides exactly. Every pair records which one it reports, the residual of the method's
best candidate and of the reported point, and the polishing Jacobians spent.

A map that cannot run in float64 (a loaded model with float32-only code) is certified in the
search's dtype with CERTIFY_TOL's float32 tolerances, and the shard says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..core.errors import first_line
from .base import Collisions, Features
from .linear_step import _solve_psd, jacobian_rows

# (RTOL, XTOL) of the criterion above, by the dtype the certificate is computed in. Polished to
# convergence, float64 residuals are 5e-16 to 3e-15 of the feature magnitude on the trained
# Medium CNN's taps (m = 10), so RTOL leaves a factor of about 300 for deeper networks; a
# candidate that float64 cannot pin down (a saturated tanh, where a round-off residual allows a
# large move) is refused by the correction test, whose XTOL bounds how far the reported distance
# can be from that of the nearby true collision (to first order).
CERTIFY_TOL = {torch.float64: (1e-12, 1e-10), torch.float32: (1e-5, 1e-5)}
# Gauss-Newton steps (one Jacobian evaluation each) per candidate: from a float32 candidate the
# quadratic convergence reaches round-off in 1-2 steps on the default experiment.
POLISH_JACOBIANS = 3
# Chord steps (Jacobians kept, one forward pass each) after each Jacobian evaluation: from a
# float32 candidate each gains about three digits on the default experiment's taps.
CHORD_STEPS = 4
# Pairs whose Jacobian rows are computed in one pass (the map's m rows at 2 points each).
POINTS_PER_PASS = 64


@dataclass
class Polished:
    """Per pair, the reported collision and how it was certified (float64 where the map is)."""

    x_tilde: torch.Tensor
    x_tilde_prime: torch.Tensor
    residual: torch.Tensor        # ||g(x~') - g(x~)|| at the reported collision
    residual_before: torch.Tensor  # the same at the method's best candidate, before polishing
    steps: torch.Tensor           # polishing Jacobian evaluations spent on the pair
    candidate: torch.Tensor       # 0: the method's best, k: its k-th earlier best, -1: the midpoint


def certify(g: Features, x: torch.Tensor, x_prime: torch.Tensor, found: Collisions,
            box: tuple[float, float] | None, dtype: torch.dtype = torch.float64,
            piecewise_linear: bool = False) -> Collisions:
    """The certified collisions of `found` (a method's result with its points) under g.

    g must accept `dtype` (float64 unless the map cannot run in it) on x's device; x, x_prime are
    the pairs. `piecewise_linear`: g is a registry network's piecewise-linear map (features.
    piecewise_linear), on which a zero derivative is exact; otherwise every certified point must
    also pass the reach test of the module docstring. Returns a Collisions whose distance,
    objective, residual and feature_gap are those of the certified points (computed in `dtype`),
    keeps the method's iterations and converged, and records search_distance (the method's own
    distance), search_residual, polish_steps and candidate.
    """
    if found.x_tilde is None:
        raise ValueError("certify needs the method's colliding points (x_tilde, x_tilde_prime)")
    device = x.device
    x, x_prime = x.to(dtype), x_prime.to(dtype)
    candidates = [(found.x_tilde, found.x_tilde_prime)]
    if found.earlier_tilde is not None:
        candidates += [(found.earlier_tilde[:, k], found.earlier_tilde_prime[:, k])
                       for k in range(found.earlier_tilde.shape[1])]
    candidates = [(u.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype)) for u, v in candidates]
    norms = lambda t: t.flatten(1).norm(dim=1)  # noqa: E731 - row norms of a batch
    with torch.no_grad():
        g_x, g_x_prime = _features(g, torch.cat([x, x_prime])).chunk(2)
    polished = polish_candidates(g, x, x_prime, candidates, box, dtype, torch.maximum(norms(g_x), norms(g_x_prime)),
                                 piecewise_linear)
    delta, delta_prime = norms(polished.x_tilde - x), norms(polished.x_tilde_prime - x_prime)
    cpu = lambda t: t.detach().to("cpu", torch.float64)  # noqa: E731
    return Collisions(
        distance=cpu(torch.maximum(delta, delta_prime)), objective=cpu(delta ** 2 + delta_prime ** 2),
        residual=cpu(polished.residual), feature_gap=cpu(norms(g_x_prime - g_x)),
        iterations=found.iterations, converged=found.converged,
        search_distance=found.distance.to(torch.float64),
        search_residual=cpu(polished.residual_before), polish_steps=polished.steps.cpu(),
        candidate=polished.candidate.cpu(),
        x_tilde=polished.x_tilde.detach().cpu(), x_tilde_prime=polished.x_tilde_prime.detach().cpu())


def polish_candidates(g: Features, x: torch.Tensor, x_prime: torch.Tensor,
                      candidates: list[tuple[torch.Tensor, torch.Tensor]], box: tuple[float, float] | None,
                      dtype: torch.dtype, magnitude: torch.Tensor, piecewise_linear: bool = False) -> Polished:
    """Certify each pair's candidates in order (best first) and keep the first that certifies;
    the midpoint where none does. `magnitude`: max(||g(x)||, ||g(x')||) per pair."""
    B = len(x)
    midpoint = (x + x_prime) / 2
    out = Polished(midpoint.clone(), midpoint.clone(), torch.zeros(B, dtype=dtype, device=x.device),
                   torch.zeros(B, dtype=dtype, device=x.device), torch.zeros(B, dtype=torch.int64, device=x.device),
                   torch.full((B,), -1, dtype=torch.int64, device=x.device))
    todo = torch.arange(B, device=x.device)
    for k, (u, u_prime) in enumerate(candidates):
        if not len(todo):
            break
        # Earlier candidates a pair does not have are NaN (it found fewer improvements).
        has = todo[(torch.isfinite(u[todo]) & torch.isfinite(u_prime[todo])).flatten(1).all(1)]
        if not len(has):
            continue
        v, v_prime, residual, first, steps, ok = polish(g, x[has], x_prime[has], u[has].clone(),
                                                        u_prime[has].clone(), box, dtype, magnitude[has],
                                                        piecewise_linear)
        if k == 0:
            out.residual_before[has] = first
        out.steps[has] += steps
        norms = lambda t: t.flatten(1).norm(dim=1)  # noqa: E731
        mid = midpoint[has]
        # One point for both (x~ = x~', e.g. the search's own midpoint on an injective map): of all
        # such collisions the exact midpoint is the closest, so it is reported as this candidate
        # (the float32 midpoint is a little farther than the float64 one; that is no fallback).
        same = ok & (v == v_prime).flatten(1).all(1)
        v[same], v_prime[same] = mid[same], mid[same]
        # A certified point farther than the midpoint (Newton steps can move away) loses to it.
        ok &= (torch.maximum(norms(v - x[has]), norms(v_prime - x_prime[has]))
               <= torch.maximum(norms(mid - x[has]), norms(mid - x_prime[has])))
        won = has[ok]
        out.x_tilde[won], out.x_tilde_prime[won] = v[ok], v_prime[ok]
        out.residual[won], out.candidate[won] = residual[ok], k
        todo = todo[~torch.isin(todo, won)]
    return out


def polish(g: Features, x: torch.Tensor, x_prime: torch.Tensor, u: torch.Tensor, u_prime: torch.Tensor,
           box: tuple[float, float] | None, dtype: torch.dtype, magnitude: torch.Tensor, piecewise_linear: bool = False
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gauss-Newton least-norm steps from (u, u') until the criterion of the module docstring
    holds, with at most POLISH_JACOBIANS Jacobian evaluations. `magnitude` is
    max(||g(x)||, ||g(x')||) per pair. Returns the points, their residual, the residual of the
    starting points, the Jacobian evaluations spent and whether each pair is certified (a pair
    that is not keeps its last point).

    Each round takes the Jacobian at the current point (which also tests that point), steps by
    the correction, and tests the new point with one forward pass and the correction of its
    residual with the same Jacobian (a chord step): a float32 candidate usually certifies after
    one round, one Jacobian and one forward pass.
    """
    rtol, xtol = CERTIFY_TOL[dtype]
    B = len(x)
    norms = lambda t: t.flatten(1).norm(dim=1)  # noqa: E731
    half_gap = norms(x - x_prime) / 2
    steps = torch.zeros(B, dtype=torch.int64, device=x.device)
    ok = (u == u_prime).flatten(1).all(1)        # x~ = x~' bit for bit: an exact collision
    residual = torch.zeros(B, dtype=dtype, device=x.device)
    first = torch.full((B,), float("nan"), dtype=dtype, device=x.device)   # at the starting points

    def test(pairs, v, v_prime, J, J_prime):
        """Record the residual at the pairs' points (features v, v'); which are certified, and
        the next points (the correction with Jacobians J, J', kept inside the box)."""
        r = v_prime - v
        size = r.norm(dim=1)
        residual[pairs] = size
        first[pairs] = torch.where(torch.isnan(first[pairs]), size, first[pairs])
        scale = torch.maximum(magnitude[pairs], torch.maximum(norms(v), norms(v_prime)))
        step, step_prime, unexplained = correction(J, J_prime, r, u[pairs], u_prime[pairs], box)
        length = (norms(step) ** 2 + norms(step_prime) ** 2).sqrt()
        nxt, nxt_prime = u[pairs] + step, u_prime[pairs] + step_prime
        inside = torch.ones_like(ok[pairs])
        if box is not None:
            nxt, nxt_prime, raw, raw_prime = nxt.clamp(*box), nxt_prime.clamp(*box), nxt, nxt_prime
            inside = (nxt == raw).flatten(1).all(1) & (nxt_prime == raw_prime).flatten(1).all(1)
        # The correction must explain the residual, or its length says nothing: a residual in a
        # direction the Jacobians do not reach (a saturated unit, coordinates pinned by the box)
        # is one no nearby collision accounts for.
        good = (torch.isfinite(r).all(1) & (size <= rtol * scale) & ((unexplained <= size / 2) | (size == 0))
                & inside & (length <= xtol * half_gap[pairs]))
        if not piecewise_linear and good.any():
            # Off a piecewise-linear map, float64 can round a feature to a constant (a saturated
            # tanh is exactly 1.0): its residual reads 0, or only the other features' shows. So the
            # Jacobians must reach every feature direction, far enough that any residual round-off
            # could hide (up to rtol * scale) is removed by a step within the criterion's length.
            k = good.nonzero().squeeze(1)
            reach = smallest_reach(J[k], J_prime[k], u[pairs[k]], u_prime[pairs[k]], box)
            good[k] &= rtol * scale[k] <= xtol * half_gap[pairs[k]] * reach
        ok[pairs[good]] = True
        finite = torch.isfinite(nxt).flatten(1).all(1) & torch.isfinite(nxt_prime).flatten(1).all(1)
        return good, finite, nxt, nxt_prime

    todo = (~ok).nonzero().squeeze(1)
    for _ in range(POLISH_JACOBIANS):
        if not len(todo):
            break
        values, rows = _jacobian(g, torch.cat([u[todo], u_prime[todo]]))
        steps[todo] += 1
        (v, v_prime), (J, J_prime) = values.chunk(2), rows.chunk(2)
        good, finite, nxt, nxt_prime = test(todo, v, v_prime, J, J_prime)
        # Chord steps: the same Jacobians while each step at least halves the residual (forward
        # passes only; a Jacobian costs one forward and m backward passes). Pairs whose step is
        # not finite stop here (uncertified); pairs that stop contracting get a fresh Jacobian.
        fresh = []
        go = ~good & finite
        for _ in range(CHORD_STEPS):
            todo, J, J_prime, nxt, nxt_prime = todo[go], J[go], J_prime[go], nxt[go], nxt_prime[go]
            if not len(todo):
                break
            before = residual[todo].clone()
            u[todo], u_prime[todo] = nxt, nxt_prime
            with torch.no_grad():
                v, v_prime = _features(g, torch.cat([u[todo], u_prime[todo]])).chunk(2)
            good, finite, nxt, nxt_prime = test(todo, v, v_prime, J, J_prime)
            contracting = residual[todo] <= before / 2
            fresh.append(todo[~good & finite & ~contracting])
            go = ~good & finite & contracting
        else:
            fresh.append(todo[go])
        todo = torch.cat(fresh) if fresh else todo[:0]
    return u, u_prime, residual, first.nan_to_num(0.0), steps, ok


def correction(J: torch.Tensor, J_prime: torch.Tensor, r: torch.Tensor, u: torch.Tensor, u_prime: torch.Tensor,
               box: tuple[float, float] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The least-norm step (s, s') with r + J' s' - J s = 0, the collision constraint linearized
    at (u, u') (r = g(u') - g(u)), and the norm of what it leaves of that linearized residual
    (0 up to rounding where the Jacobians reach r; a least-squares step where they do not).

    With a box only the coordinates strictly inside it move (the step is then least-norm among
    those; the caller checks that it stays inside). The step comes from the m x m Gram matrix
    J D J^T + J' D' J'^T (D the free coordinates), or, for maps with more features than the two
    points have free coordinates, from a least-squares solve of [-J D, J' D'] s = -r.
    """
    JD, JD_prime = _free_columns(J, J_prime, u, u_prime, box)
    m, n0 = J.shape[1], J.shape[2]
    if m <= 2 * n0:
        G = JD @ J.transpose(1, 2) + JD_prime @ J_prime.transpose(1, 2)
        y = _solve_psd(G, r)
        step = (JD.transpose(1, 2) @ y.unsqueeze(2)).reshape(u.shape)
        step_prime = -(JD_prime.transpose(1, 2) @ y.unsqueeze(2)).reshape(u.shape)
        unexplained = (r - (G @ y.unsqueeze(2)).squeeze(2)).norm(dim=1)
        return step, step_prime, unexplained
    M = torch.cat([-JD, JD_prime], dim=2)
    s = torch.linalg.lstsq(M, -r.unsqueeze(2), driver="gelsd" if M.device.type == "cpu" else None).solution
    unexplained = (r + (M @ s).squeeze(2)).norm(dim=1)
    s = s.squeeze(2)
    return s[:, :n0].reshape(u.shape), s[:, n0:].reshape(u.shape), unexplained


def smallest_reach(J: torch.Tensor, J_prime: torch.Tensor, u: torch.Tensor, u_prime: torch.Tensor,
                   box: tuple[float, float] | None) -> torch.Tensor:
    """Per pair, the smallest singular value of [-J D, J' D'] (D: the coordinates strictly inside
    the box): how far the two points must move, at least, per unit of residual in the direction the
    Jacobians reach least. 0 where they do not reach every feature direction (a saturated or dead
    unit's zero derivative, fewer free coordinates than features)."""
    JD, JD_prime = _free_columns(J, J_prime, u, u_prime, box)
    M = torch.cat([-JD, JD_prime], dim=2)
    if M.shape[1] > M.shape[2]:
        return torch.zeros(len(M), dtype=M.dtype, device=M.device)
    return torch.linalg.svdvals(M)[:, -1]


def _free_columns(J: torch.Tensor, J_prime: torch.Tensor, u: torch.Tensor, u_prime: torch.Tensor,
                  box: tuple[float, float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """J and J' with the columns of coordinates on the box's faces zeroed (those cannot move)."""
    if box is None:
        return J, J_prime
    lo, hi = box
    free = ((u > lo) & (u < hi)).flatten(1).to(u.dtype).unsqueeze(1)
    free_prime = ((u_prime > lo) & (u_prime < hi)).flatten(1).to(u.dtype).unsqueeze(1)
    return J * free, J_prime * free_prime


def _jacobian(g: Features, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """g(u) and its Jacobian rows (N, m, n0), POINTS_PER_PASS points per backward pass."""
    return jacobian_rows(g, u, None, POINTS_PER_PASS)


def _features(g: Features, u: torch.Tensor) -> torch.Tensor:
    """g(u) in chunks of POINTS_PER_PASS points."""
    return torch.cat([g(part) for part in u.split(POINTS_PER_PASS)]) if len(u) else g(u)


def certification_map(make_float64: Callable[[], Features] | None, A: torch.Tensor | None, g: Features,
                      dtype: torch.dtype, probe: torch.Tensor) -> tuple[Features, torch.dtype, str]:
    """The map certificates are computed with: (g in float64, float64, "float64").

    make_float64() builds f in float64 (a copy of the network; None when f is the identity); A
    (the search's projection, None for the identity) is used with its own entries, exactly. When
    the search already runs in float64, g itself. Where f cannot run in float64, the search's own
    map g and dtype, and the third element says so in one line.
    """
    if dtype == torch.float64:
        return g, dtype, "float64"
    A64 = None if A is None else A.detach().to(torch.float64)
    try:
        f64 = make_float64() if make_float64 is not None else (lambda u: u.flatten(1))
        g64 = f64 if A64 is None else (lambda u: f64(u) @ A64.T)
        with torch.no_grad():
            value = g64(probe[:1].to(torch.float64))
        if value.dtype != torch.float64:
            raise TypeError(f"it returns {value.dtype} features for float64 inputs")
    except Exception as err:   # a model with float32-only code: certify in the search's dtype
        rtol, xtol = CERTIFY_TOL[dtype]
        return g, dtype, (f"{str(dtype).removeprefix('torch.')} (the model cannot run in float64: {first_line(err)}; "
                          f"certified to residual <= {rtol:g} of the feature magnitude and correction <= "
                          f"{xtol:g} of ||x - x'||/2 in that dtype)")
    return g64, torch.float64, "float64"
