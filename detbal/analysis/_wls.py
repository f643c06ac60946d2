"""Compiled chi^2 of the global cycle test, for the parametric-bootstrap simulations.

The global test fits pair log-ratios y_e ~ x(a_e) - x(b_e) by weighted least
squares (weights 1/v_e) and reports the residual chi^2 with df = pairs - nodes +
components (:func:`detbal.analysis.balance._wls`).  The simulations only need
chi^2 and df, and chi^2 is unchanged by three exact reductions of the pair graph
(the series/leaf rules of resistor networks):

* a leaf edge (one end of degree 1) is fitted exactly: it is removed with no
  residual, repeatedly, which leaves the 2-core;
* a chain of degree-2 nodes between two branch nodes u, z is one edge u - z with
  the oriented sum of the y's and the sum of the variances (minimising over the
  inner nodes is exact);
* a chain that closes on itself (a pure cycle, or a loop from a branch node back
  to it) adds (sum y)^2 / (sum v) and nothing else.

What remains is a weighted Laplacian on the branch nodes (degree >= 3 in the
2-core), solved by conjugate gradients preconditioned by its diagonal.  On the
sparse graphs agents produce the core is a small fraction of the pairs (at the
paper's scale: 3,202 pairs, 43 independent cycles), and a ring of any length
costs one pass.  :func:`wls_solve` also returns the fitted x: chains share their
residual in proportion to their variances, leaves are fitted exactly, and each
connected component is shifted so that its lowest-numbered node has x = 0 (the
gauge of the direct solve in ``balance._wls``).  Unlike a sparse LU of the
Laplacian, whose fill grows about quadratically on random graphs (2.3 s at 1e5
pairs, minutes at 1e6), this stays linear in the pairs outside the core.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: relative residual at which the core's conjugate gradients stop
CG_RTOL = 1e-13


@njit(cache=True, nogil=True)
def _other_alive(u, skip, ptr, inc, alive):  # pragma: no cover - compiled
    """An alive edge at node ``u`` other than ``skip`` (-1 if none)."""
    for k in range(ptr[u], ptr[u + 1]):
        e = inc[k]
        if alive[e] and e != skip:
            return e
    return -1


@njit(cache=True, nogil=True)
def _walk(e, start, a, b, y, v, d, ptr, inc, alive, seen, walk_edge, walk_sign, n_walk):  # pragma: no cover - compiled
    """Walk from ``start`` along edge ``e`` through nodes of degree 2 until a node of
    another degree or ``start`` again; records each edge and its orientation from
    ``n_walk`` on and returns (end node, oriented sum of y, sum of v, next n_walk)."""
    prev = start
    sy = 0.0
    sv = 0.0
    while True:
        seen[e] = True
        walk_edge[n_walk] = e
        if a[e] == prev:
            sy += y[e]
            nxt = b[e]
            walk_sign[n_walk] = 1.0
        else:
            sy -= y[e]
            nxt = a[e]
            walk_sign[n_walk] = -1.0
        n_walk += 1
        sv += v[e]
        if nxt == start or d[nxt] != 2:
            return nxt, sy, sv, n_walk
        e = _other_alive(nxt, e, ptr, inc, alive)
        prev = nxt


@njit(cache=True, nogil=True)
def _find(parent, i):  # pragma: no cover - compiled
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def _reduce(a, b, y, v, n, want_x):  # pragma: no cover - compiled
    """The reduction behind :func:`wls_chi2` and :func:`wls_solve`."""
    m = a.shape[0]
    x = np.full(n if want_x else 0, np.nan)
    deg = np.zeros(n, np.int64)
    parent = np.arange(n)
    for e in range(m):
        deg[a[e]] += 1
        deg[b[e]] += 1
        ra = _find(parent, a[e])
        rb = _find(parent, b[e])
        if ra != rb:
            parent[ra] = rb
    nodes = 0
    comps = 0
    for i in range(n):
        if deg[i] > 0:
            nodes += 1
            if _find(parent, i) == i:
                comps += 1
    df = m - nodes + comps
    if df <= 0 and not want_x:
        return 0.0, df, True, x
    ptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        ptr[i + 1] = ptr[i] + deg[i]
    fill = ptr[:-1].copy()
    inc = np.empty(2 * m, np.int64)
    for e in range(m):
        inc[fill[a[e]]] = e
        fill[a[e]] += 1
        inc[fill[b[e]]] = e
        fill[b[e]] += 1
    # 1. leaves, repeatedly (recorded in order for the back-substitution)
    alive = np.ones(m, np.bool_)
    d = deg.copy()
    stack = np.empty(n, np.int64)
    pruned_edge = np.empty(m, np.int64)
    pruned_leaf = np.empty(m, np.int64)
    n_pruned = 0
    top = 0
    for i in range(n):
        if d[i] == 1:
            stack[top] = i
            top += 1
    while top > 0:
        top -= 1
        u = stack[top]
        if d[u] != 1:
            continue
        e = _other_alive(u, -1, ptr, inc, alive)
        alive[e] = False
        pruned_edge[n_pruned] = e
        pruned_leaf[n_pruned] = u
        n_pruned += 1
        d[u] = 0
        w = b[e] if a[e] == u else a[e]
        d[w] -= 1
        if d[w] == 1:
            stack[top] = w
            top += 1
    # 2. chains between branch nodes (and loops back to the same node), recorded as
    # runs of (edge, orientation) in walk order for the back-substitution
    chi2 = 0.0
    seen = np.zeros(m, np.bool_)
    core = np.full(n, -1, np.int64)
    n_core = 0
    for i in range(n):
        if d[i] >= 3:
            core[i] = n_core
            n_core += 1
    ra_ = np.empty(m, np.int64)
    rb_ = np.empty(m, np.int64)
    ry = np.empty(m)
    rw = np.empty(m)
    n_red = 0
    walk_edge = np.empty(m, np.int64)
    walk_sign = np.empty(m)
    chain_lo = np.empty(m + 1, np.int64)
    chain_from = np.empty(m, np.int64)
    chain_to = np.empty(m, np.int64)
    chain_sy = np.empty(m)
    chain_sv = np.empty(m)
    n_walk = 0
    n_chain = 0
    for u in range(n):
        if d[u] < 3:
            continue
        for k in range(ptr[u], ptr[u + 1]):
            e = inc[k]
            if not alive[e] or seen[e]:
                continue
            chain_lo[n_chain] = n_walk
            nxt, sy, sv, n_walk = _walk(e, u, a, b, y, v, d, ptr, inc, alive, seen, walk_edge,
                                        walk_sign, n_walk)
            chain_from[n_chain] = u
            chain_to[n_chain] = nxt
            chain_sy[n_chain] = sy
            chain_sv[n_chain] = sv
            n_chain += 1
            if nxt == u:
                chi2 += sy * sy / sv
            else:
                ra_[n_red] = core[u]
                rb_[n_red] = core[nxt]
                ry[n_red] = sy
                rw[n_red] = 1.0 / sv
                n_red += 1
    # 3. pure cycles (every node of degree 2)
    for e0 in range(m):
        if not alive[e0] or seen[e0]:
            continue
        chain_lo[n_chain] = n_walk
        start = a[e0]
        _, sy, sv, n_walk = _walk(e0, start, a, b, y, v, d, ptr, inc, alive, seen, walk_edge,
                                  walk_sign, n_walk)
        chain_from[n_chain] = start
        chain_to[n_chain] = start
        chain_sy[n_chain] = sy
        chain_sv[n_chain] = sv
        n_chain += 1
        chi2 += sy * sy / sv
    chain_lo[n_chain] = n_walk
    # 4. the core: L x = rhs by diagonally preconditioned conjugate gradients
    xc = np.zeros(n_core)
    converged = True
    if n_red > 0:
        diag = np.zeros(n_core)
        rhs = np.zeros(n_core)
        for j in range(n_red):
            t = rw[j] * ry[j]
            rhs[ra_[j]] += t
            rhs[rb_[j]] -= t
            diag[ra_[j]] += rw[j]
            diag[rb_[j]] += rw[j]
        r = rhs.copy()
        z = np.empty(n_core)
        p = np.empty(n_core)
        q = np.empty(n_core)
        rz = 0.0
        r0 = 0.0
        for i in range(n_core):
            z[i] = r[i] / diag[i] if diag[i] > 0.0 else 0.0
            p[i] = z[i]
            rz += r[i] * z[i]
            r0 += r[i] * r[i]
        converged = r0 == 0.0
        target = (CG_RTOL * CG_RTOL) * r0
        it = 0
        max_it = 10 * n_core + 100
        while not converged and it < max_it:
            it += 1
            for i in range(n_core):
                q[i] = diag[i] * p[i]
            for j in range(n_red):
                q[ra_[j]] -= rw[j] * p[rb_[j]]
                q[rb_[j]] -= rw[j] * p[ra_[j]]
            pq = 0.0
            for i in range(n_core):
                pq += p[i] * q[i]
            if not pq > 0.0:
                break
            alpha = rz / pq
            rr = 0.0
            for i in range(n_core):
                xc[i] += alpha * p[i]
                r[i] -= alpha * q[i]
                rr += r[i] * r[i]
            if rr <= target:
                converged = True
                break
            rz_new = 0.0
            for i in range(n_core):
                z[i] = r[i] / diag[i] if diag[i] > 0.0 else 0.0
                rz_new += r[i] * z[i]
            beta = rz_new / rz
            rz = rz_new
            for i in range(n_core):
                p[i] = z[i] + beta * p[i]
        for j in range(n_red):
            res = ry[j] - (xc[ra_[j]] - xc[rb_[j]])
            chi2 += rw[j] * res * res
    if not want_x:
        return chi2, df, converged, x
    # 5. back-substitution: core, chains (residual shared by variance), leaves
    for i in range(n):
        if core[i] >= 0:
            x[i] = xc[core[i]]
    for c in range(n_chain):
        u = chain_from[c]
        if x[u] != x[u]:  # a pure cycle's start: its component's gauge is fixed below
            x[u] = 0.0
        xz = x[chain_to[c]] if chain_to[c] != u else x[u]
        resid = chain_sy[c] - (x[u] - xz)
        cur = x[u]
        for t in range(chain_lo[c], chain_lo[c + 1] - 1):  # the last node is the chain's end
            e = walk_edge[t]
            cur -= walk_sign[t] * y[e] - resid * v[e] / chain_sv[c]
            nxt = b[e] if walk_sign[t] > 0.0 else a[e]
            x[nxt] = cur
    for t in range(n_pruned - 1, -1, -1):
        e = pruned_edge[t]
        u = pruned_leaf[t]
        w = b[e] if a[e] == u else a[e]
        if x[w] != x[w]:  # the last node of a tree
            x[w] = 0.0
        x[u] = x[w] + (y[e] if a[e] == u else -y[e])
    # gauge: the lowest-numbered node of every component at 0
    shift = np.full(n, np.nan)
    for i in range(n):
        if deg[i] > 0:
            root = _find(parent, i)
            if shift[root] != shift[root]:
                shift[root] = x[i]
    for i in range(n):
        if deg[i] > 0:
            x[i] -= shift[_find(parent, i)]
    return chi2, df, converged, x


@njit(cache=True, nogil=True)
def wls_chi2(a, b, y, v, n):  # pragma: no cover - compiled
    """``(chi2, df, converged)`` of y_e ~ x[a_e] - x[b_e] with variances v_e on nodes 0..n-1.

    ``a, b`` list distinct unordered pairs (no self-pairs).  ``converged`` is False
    only if the core's conjugate gradients missed :data:`CG_RTOL` (the caller then
    solves directly).
    """
    chi2, df, converged, _ = _reduce(a, b, y, v, n, False)
    return chi2, df, converged


@njit(cache=True, nogil=True)
def wls_solve(a, b, y, v, n):  # pragma: no cover - compiled
    """``(x, chi2, df, converged)``: :func:`wls_chi2` and the fitted x (NaN on nodes of no
    pair; per component, the lowest-numbered node at 0)."""
    chi2, df, converged, x = _reduce(a, b, y, v, n, True)
    return x, chi2, df, converged


@njit(cache=True, nogil=True)
def triangle_list(f, g, n):  # pragma: no cover - compiled
    """Triangles (lo < mid < hi) of the undirected graph with edges f - g on nodes 0..n-1,
    one row per triangle, found from each pair (lo, mid) with hi > mid a common neighbour
    (unsorted; :func:`detbal.analysis.balance._triangles` sorts them)."""
    m = f.shape[0]
    deg = np.zeros(n, np.int64)
    for e in range(m):
        deg[f[e]] += 1
        deg[g[e]] += 1
    ptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        ptr[i + 1] = ptr[i] + deg[i]
    fill = ptr[:-1].copy()
    nbr = np.empty(2 * m, np.int64)
    for e in range(m):
        nbr[fill[f[e]]] = g[e]
        fill[f[e]] += 1
        nbr[fill[g[e]]] = f[e]
        fill[g[e]] += 1
    for i in range(n):
        nbr[ptr[i]:ptr[i + 1]] = np.sort(nbr[ptr[i]:ptr[i + 1]])
    out = np.empty((0, 3), np.int64)
    for rep in range(2):  # count, then fill
        k = 0
        for e in range(m):
            lo = min(f[e], g[e])
            hi = max(f[e], g[e])
            i, j = ptr[lo], ptr[hi]
            last = -1
            while i < ptr[lo + 1] and j < ptr[hi + 1]:
                x, y = nbr[i], nbr[j]
                if x < y:
                    i += 1
                elif y < x:
                    j += 1
                else:
                    if x > hi and x != last:  # a repeated neighbour counts once, as in a set
                        if rep == 1:
                            out[k, 0] = lo
                            out[k, 1] = hi
                            out[k, 2] = x
                        k += 1
                        last = x
                    i += 1
                    j += 1
        if rep == 0:
            out = np.empty((k, 3), np.int64)
    return out
