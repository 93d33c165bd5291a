"""Exact optimal cross-entropy of a bipartite conflict graph: the max-flow recursion, compiled.

Problem: minimize -sum_v log q_v over {0 <= q <= 1, q_u + q_v <= 1 on every edge}.  Bhagoji et
al. (2021, Algorithm 1) solve it by recursive splitting, which this module runs as compiled code
(numba): on the S x S graphs of the paper a solve is a few hundred microseconds of real work, and
an interpreted driver around a library max flow spent more time in call overhead than in the flow.

Why the recursion is exact.  A block (a class-A and b class-B vertices, connected) that satisfies
the "fractional Hall" condition b |X| <= a |N(X)| for every set X of its A vertices is optimal at
the uniform point q_A = a/(a+b), q_B = b/(a+b), the value of the complete bipartite K_{a,b}.  The
network source -> A (capacity b/g), A -> B along edges (unbounded), B -> sink (capacity a/g), with
g = gcd(a, b), carries the full flow a b / g exactly when that condition holds.  Otherwise the
minimal min-cut source side X (with its neighbourhood N(X)) maximizes b|X| - a|N(X)|; it is
strictly denser in A than the block, so its A vertices end with larger q than the rest and its B
vertices with smaller q.  The only edges between the two parts run from the rest's A vertices to
N(X), and they stay satisfied, so both parts are solved independently (each split into connected
components first).  No A vertex of the rest has all its neighbours in N(X): adding it to X would
increase b|X| - a|N(X)|.  Vertices without edges keep q = 1.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["optimal_q"]


def optimal_q(n_a: int, n_b: int, u, v) -> tuple[np.ndarray, np.ndarray]:
    """Optimal (q_a, q_b) of the bipartite graph with n_a + n_b vertices and edges (u[k], v[k]).

    Edges may come in any order but must be distinct.  The graph may be the disjoint
    union of many conflict graphs: the recursion works component by component.
    """
    u = np.ascontiguousarray(u, dtype=np.int64)
    v = np.ascontiguousarray(v, dtype=np.int64)
    if u.shape != v.shape or u.ndim != 1:
        raise ValueError("u and v must be 1-D arrays of the same length")
    if u.size and (u.min() < 0 or u.max() >= n_a or v.min() < 0 or v.max() >= n_b):
        raise ValueError(f"edge endpoints out of range for a {n_a} x {n_b} graph")
    if not u.size:  # also covers an empty class, which the compiled code must never see
        return np.ones(n_a), np.ones(n_b)
    return _solve(int(n_a), int(n_b), u, v)


@njit(cache=True)
def _csr(n: int, tail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR grouping of items k by tail[k] in 0..n-1: (indptr, items), items of node i at
    items[indptr[i]:indptr[i + 1]]."""
    indptr = np.zeros(n + 1, dtype=np.int64)
    for k in range(tail.size):
        indptr[tail[k] + 1] += 1
    for i in range(n):
        indptr[i + 1] += indptr[i]
    fill = indptr[:-1].copy()
    items = np.empty(tail.size, dtype=np.int64)
    for k in range(tail.size):
        items[fill[tail[k]]] = k
        fill[tail[k]] += 1
    return indptr, items


@njit(cache=True)
def _solve(n_a, n_b, u, v):
    """The recursion on vertices 0..n_a-1 (class A) and n_a..n_a+n_b-1 (class B)."""
    n = n_a + n_b
    q = np.ones(n)
    tails = np.concatenate((u, v + n_a))
    heads = np.concatenate((v + n_a, u))
    ptr, arcs = _csr(n, tails)
    nbr = heads[arcs]  # neighbours of vertex w: nbr[ptr[w]:ptr[w + 1]]
    # A block is a range of `order` (a permutation of the vertices) whose vertices share one id
    # in `block`; its edges are the edges between two of its vertices.  `pending` holds blocks
    # still to split into connected components.
    order = np.arange(n)
    block = np.zeros(n, dtype=np.int64)
    queue = np.empty(n, dtype=np.int64)
    local = np.empty(n, dtype=np.int64)
    next_id = 1
    pending = [(0, n)]
    while pending:
        lo, hi = pending.pop()
        old = block[order[lo]]
        # Breadth-first search from every unreached vertex; each component lands contiguously
        # in queue[lo:hi] under a fresh id.
        out = lo
        starts = []
        for s in range(lo, hi):
            root = order[s]
            if block[root] != old:
                continue
            block[root] = next_id
            starts.append(out)
            queue[out] = root
            out += 1
            head = out - 1
            while head < out:
                w = queue[head]
                head += 1
                for k in range(ptr[w], ptr[w + 1]):
                    z = nbr[k]
                    if block[z] == old:
                        block[z] = next_id
                        queue[out] = z
                        out += 1
            next_id += 1
        order[lo:hi] = queue[lo:hi]
        starts.append(hi)
        for c in range(len(starts) - 1):
            if starts[c + 1] - starts[c] > 1:  # a lone vertex has no edge: q stays 1
                next_id = _settle(order, block, ptr, nbr, starts[c], starts[c + 1], n_a, q,
                                  local, pending, next_id)
    return q[:n_a], q[n_a:]


@njit(cache=True)
def _settle(order, block, ptr, nbr, start, stop, n_a, q, local, pending, next_id):
    """Close the connected block order[start:stop] at its uniform point, or split it in two
    along the minimal minimum cut and push both parts on `pending`.  Returns the next free id."""
    cid = block[order[start]]
    a = 0
    edges = 0
    for s in range(start, stop):
        w = order[s]
        local[w] = s - start
        if w < n_a:
            a += 1
            for k in range(ptr[w], ptr[w + 1]):
                if block[nbr[k]] == cid:
                    edges += 1
    b = stop - start - a
    if edges < a * b:
        reached = _min_cut_side(order, block, ptr, nbr, start, stop, n_a, a, b, edges, local, cid)
        if reached.any():
            # Reached vertices (X and N(X)) first, the rest after, each part under a new id.
            size = 0
            members = order[start:stop].copy()
            for i in range(members.size):
                if reached[i]:
                    order[start + size] = members[i]
                    block[members[i]] = next_id
                    size += 1
            rest = start + size
            for i in range(members.size):
                if not reached[i]:
                    order[rest] = members[i]
                    block[members[i]] = next_id + 1
                    rest += 1
            pending.append((start, start + size))
            pending.append((start + size, stop))
            return next_id + 2
    # Complete bipartite, or the flow is full: the uniform point is optimal.
    for s in range(start, stop):
        w = order[s]
        q[w] = a / (a + b) if w < n_a else b / (a + b)
    return next_id


@njit(cache=True)
def _min_cut_side(order, block, ptr, nbr, start, stop, n_a, a, b, edges, local, cid):
    """Max flow (Dinic) of the block's network; returns, per block vertex, whether it is on the
    source side of the minimal minimum cut, or all False when the flow is full (value a b / g)."""
    g = np.gcd(a, b)
    cap_src, cap_sink = b // g, a // g
    c = stop - start
    src, sink = c, c + 1
    # Arc 2k goes tail -> head, arc 2k + 1 is its reverse; the middle arcs get one more than the
    # total source capacity, so that no minimum cut ever cuts them.
    n_pairs = a + edges + b
    tail = np.empty(2 * n_pairs, dtype=np.int64)
    head = np.empty(2 * n_pairs, dtype=np.int64)
    cap = np.zeros(2 * n_pairs, dtype=np.int64)
    big = a * cap_src + 1
    k = 0
    for s in range(start, stop):
        w = order[s]
        i = s - start
        if w < n_a:
            tail[2 * k], head[2 * k], cap[2 * k] = src, i, cap_src
            k += 1
            for e in range(ptr[w], ptr[w + 1]):
                z = nbr[e]
                if block[z] == cid:
                    tail[2 * k], head[2 * k], cap[2 * k] = i, local[z], big
                    k += 1
        else:
            tail[2 * k], head[2 * k], cap[2 * k] = i, sink, cap_sink
            k += 1
    for k in range(n_pairs):
        tail[2 * k + 1], head[2 * k + 1] = head[2 * k], tail[2 * k]
    arc_ptr, arc_list = _csr(c + 2, tail)

    flow = 0
    level = np.empty(c + 2, dtype=np.int64)
    bfs = np.empty(c + 2, dtype=np.int64)
    current = np.empty(c + 2, dtype=np.int64)
    path = np.empty(c + 2, dtype=np.int64)
    while True:
        # Level graph by breadth-first search over arcs with spare capacity.
        level[:] = -1
        level[src] = 0
        bfs[0] = src
        n_bfs = 1
        h = 0
        while h < n_bfs:
            x = bfs[h]
            h += 1
            for j in range(arc_ptr[x], arc_ptr[x + 1]):
                e = arc_list[j]
                if cap[e] > 0 and level[head[e]] < 0:
                    level[head[e]] = level[x] + 1
                    bfs[n_bfs] = head[e]
                    n_bfs += 1
        if level[sink] < 0:
            break
        # Blocking flow: depth-first augmenting paths with current-arc pointers.
        current[:] = arc_ptr[:-1]
        depth = 0
        x = src
        while True:
            if x == sink:
                push = cap[path[0]]
                for d in range(1, depth):
                    push = min(push, cap[path[d]])
                for d in range(depth):
                    cap[path[d]] -= push
                    cap[path[d] ^ 1] += push
                flow += push
                depth = 0
                x = src
                continue
            advanced = False
            while current[x] < arc_ptr[x + 1]:
                e = arc_list[current[x]]
                if cap[e] > 0 and level[head[e]] == level[x] + 1:
                    path[depth] = e
                    depth += 1
                    x = head[e]
                    advanced = True
                    break
                current[x] += 1
            if not advanced:
                if depth == 0:
                    break
                level[x] = -1  # dead end: never enter it again in this phase
                depth -= 1
                x = tail[path[depth]]
                current[x] += 1

    if flow == a * cap_src:
        return np.zeros(c, dtype=np.bool_)
    # The last search reached everything the source still reaches in the residual network:
    # the minimal source side.
    return level[:c] >= 0


def _best_effort_cache(dispatcher) -> None:
    """numba saves each compiled function to its on-disk cache and raises when that write fails: a
    full disk or quota would then fail a loss computation over a file that only saves the next
    run a recompile. Such a failure is skipped; the run's own outputs still report a full disk."""
    save = dispatcher._cache.save_overload

    def save_or_skip(sig, data):
        try:
            save(sig, data)
        except OSError:
            pass

    dispatcher._cache.save_overload = save_or_skip


for _compiled in (_csr, _solve, _settle, _min_cut_side):
    _best_effort_cache(_compiled)
