"""Closed-form collision distances: the input space, its random projection, affine layers.

These are exact, used as the fast paths of the input baselines and of affine taps, and as the
references the searches are tested against:

* input space: d = ||x - x'|| / 2 (the midpoint);
* input with a projection A: d = ||P (x - x')|| / 2, P the projector onto A's row space;
* affine layer u -> L u + k (L = (A)H): d = ||V^T (x - x')|| / 2, V the right singular vectors
  of L with nonzero singular values (paper 002, Section 3.1).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Collisions, Features


def input_distance(x: torch.Tensor, x_prime: torch.Tensor) -> torch.Tensor:
    """Input space: d = ||x - x'|| / 2 (float64, on the CPU; the difference is taken in float64, so
    float32 inputs give the exact distance, not that of their rounded difference)."""
    return (x.double() - x_prime.double()).flatten(1).norm(dim=1).cpu() / 2


def projected_input_distance(A: torch.Tensor | None, x: torch.Tensor, x_prime: torch.Tensor) -> torch.Tensor:
    """Input with a random projection: d = ||P (x - x')|| / 2, P the projector onto A's row space."""
    if A is None:
        return input_distance(x, x_prime)
    return affine_distance(A, x, x_prime)


def affine_distance(L: torch.Tensor, x: torch.Tensor, x_prime: torch.Tensor, rcond: float | None = None) -> torch.Tensor:
    """Affine feature map u -> L u + k: d = ||V^T (x - x')|| / 2, V the right singular vectors of L
    with nonzero singular values (paper 002, Section 3.1). L is (A)H, of shape (m or n_j, n0)."""
    V_t = row_space(L, rcond)
    delta = (x.double() - x_prime.double()).flatten(1).cpu()
    return (delta @ V_t.T).norm(dim=1) / 2


def row_space(L: torch.Tensor, rcond: float | None = None) -> torch.Tensor:
    """V^T: an orthonormal basis (rows) of L's row space, the right singular vectors with nonzero
    singular values (relative cutoff rcond, default max(shape) * float64 eps), float64 on the CPU."""
    L = L.detach().double().cpu().numpy()
    # numpy's LAPACK SVD: torch's CPU SVD costs ~10 ms even for a 10 x 100 matrix.
    _, s, Vh = np.linalg.svd(L, full_matrices=False)
    rcond = max(L.shape) * np.finfo(np.float64).eps if rcond is None else rcond
    return torch.from_numpy(np.ascontiguousarray(Vh[s > rcond * s.max()]))


def linear_part(g: Features, shape: tuple[int, ...], dtype: torch.dtype = torch.float64,
                device: torch.device | str = "cpu", rows_per_pass: int = 256) -> torch.Tensor:
    """The matrix L of an affine map g(u) = L u + k on inputs of `shape`.

    Row blocks by vector-Jacobian products when L has fewer rows than columns (a projected layer),
    column blocks by Jacobian-vector products otherwise (a wide layer such as the Medium CNN's
    first convolution, 25088 x 784: 784 forward-mode passes instead of 25088 backward ones).
    """
    u = torch.zeros((1, *shape), dtype=dtype, device=device)
    n_in = u[0].numel()
    with torch.no_grad():
        n_out = g(u).shape[1]
    by_rows = n_out <= n_in
    n = n_out if by_rows else n_in
    if by_rows:
        _, vjp_fn = torch.func.vjp(g, u)
    blocks = []
    for start in range(0, n, rows_per_pass):
        stop = min(start + rows_per_pass, n)
        # The block's rows of the identity, without the n x n identity (5 GB for n = 25088).
        basis = torch.zeros((stop - start, 1, n), dtype=dtype, device=device)
        basis[torch.arange(stop - start), 0, torch.arange(start, stop)] = 1
        if by_rows:
            (rows,) = torch.func.vmap(vjp_fn)(basis)
            blocks.append(rows.reshape(stop - start, -1).cpu())
        else:
            def column(e: torch.Tensor) -> torch.Tensor:
                return torch.func.jvp(g, (u,), (e.reshape(1, *shape),))[1]
            blocks.append(torch.func.vmap(column)(basis).reshape(stop - start, -1).cpu())
    L = torch.cat(blocks)
    return L if by_rows else L.T.contiguous()


def collisions(g: Features, L: torch.Tensor | None, x: torch.Tensor, x_prime: torch.Tensor,
               verify_tol: float) -> Collisions:
    """Collisions of an affine map g(u) = L u + k at their optimum (L None: the identity on inputs).

    x~ = x + delta, x~' = x' - delta with delta = V V^T (x' - x)/2, in float64 (the points are
    returned in float64, so their certificates keep the closed form's digits). The residual is
    recomputed from g (in x's dtype) and checked like the search's collisions; a pair that fails
    gets the midpoint.
    """
    x64, x_prime64 = x.double(), x_prime.double()
    delta = (x_prime64 - x64).flatten(1).cpu() / 2
    if L is not None:
        V_t = row_space(L)
        delta = (delta @ V_t.T) @ V_t
    delta = delta.reshape(x.shape).to(x.device)
    x_tilde, x_tilde_prime = x64 + delta, x_prime64 - delta

    def norms(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).double().norm(dim=1).cpu()
    with torch.no_grad():
        g_x, g_x_prime = g(torch.cat([x, x_prime])).chunk(2)
        g_t, g_t_prime = g(torch.cat([x_tilde, x_tilde_prime]).to(x.dtype)).chunk(2)
    residual, feature_gap = norms(g_t_prime - g_t), norms(g_x_prime - g_x)
    failed = (~(residual <= verify_tol * feature_gap)).to(x.device)
    if failed.any():
        midpoint = (x64 + x_prime64) / 2
        x_tilde[failed], x_tilde_prime[failed] = midpoint[failed], midpoint[failed]
        residual[failed.cpu()] = 0.0
    distance = torch.maximum(norms(x_tilde - x64), norms(x_tilde_prime - x_prime64))
    return Collisions(
        distance=distance, objective=norms(x_tilde - x64) ** 2 + norms(x_tilde_prime - x_prime64) ** 2,
        residual=residual, feature_gap=feature_gap,
        iterations=torch.zeros(len(x), dtype=torch.int64), converged=torch.ones(len(x), dtype=torch.bool),
        x_tilde=x_tilde.cpu(), x_tilde_prime=x_tilde_prime.cpu())
