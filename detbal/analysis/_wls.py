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
costs one pass.
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
def _find(parent, i):  # pragma: no cover - compiled
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def wls_chi2(a, b, y, v, n):  # pragma: no cover - compiled
    """``(chi2, df, converged)`` of y_e ~ x[a_e] - x[b_e] with variances v_e on nodes 0..n-1.

    ``a, b`` list distinct unordered pairs (no self-pairs).  ``converged`` is False
    only if the core's conjugate gradients missed :data:`CG_RTOL` (the caller then
    solves directly).
    """
    m = a.shape[0]
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
    if df <= 0:
        return 0.0, df, True
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
    # 1. leaves, repeatedly
    alive = np.ones(m, np.bool_)
    d = deg.copy()
    stack = np.empty(n, np.int64)
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
        d[u] = 0
        w = b[e] if a[e] == u else a[e]
        d[w] -= 1
        if d[w] == 1:
            stack[top] = w
            top += 1
    # 2. chains between branch nodes (and loops back to the same node)
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
    for u in range(n):
        if d[u] < 3:
            continue
        for k in range(ptr[u], ptr[u + 1]):
            e = inc[k]
            if not alive[e] or seen[e]:
                continue
            prev = u
            sy = 0.0
            sv = 0.0
            while True:
                seen[e] = True
                if a[e] == prev:
                    sy += y[e]
                    nxt = b[e]
                else:
                    sy -= y[e]
                    nxt = a[e]
                sv += v[e]
                if d[nxt] != 2:
                    break
                e = _other_alive(nxt, e, ptr, inc, alive)
                prev = nxt
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
        start = a[e0]
        prev = start
        e = e0
        sy = 0.0
        sv = 0.0
        while True:
            seen[e] = True
            if a[e] == prev:
                sy += y[e]
                nxt = b[e]
            else:
                sy -= y[e]
                nxt = a[e]
            sv += v[e]
            if nxt == start:
                break
            e = _other_alive(nxt, e, ptr, inc, alive)
            prev = nxt
        chi2 += sy * sy / sv
    if n_red == 0:
        return chi2, df, True
    # 4. the core: L x = rhs by diagonally preconditioned conjugate gradients
    diag = np.zeros(n_core)
    rhs = np.zeros(n_core)
    for j in range(n_red):
        t = rw[j] * ry[j]
        rhs[ra_[j]] += t
        rhs[rb_[j]] -= t
        diag[ra_[j]] += rw[j]
        diag[rb_[j]] += rw[j]
    x = np.zeros(n_core)
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
            x[i] += alpha * p[i]
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
        res = ry[j] - (x[ra_[j]] - x[rb_[j]])
        chi2 += rw[j] * res * res
    return chi2, df, converged
