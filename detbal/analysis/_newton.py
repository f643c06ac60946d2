"""Compiled truncated-Newton solver for the least-action fit (behind ``potential._minimise``).

S[V] = sum_e T_e K(V(src_e) - V(dst_e)) is convex and its Hessian is a weighted
graph Laplacian, H = sum_e c_e (e_f - e_g)(e_f - e_g)^T with c_e = T_e K''(x_e),
so a Hessian-vector product costs one pass over the edges and no transcendental
call.  Each Newton step solves H p = -grad S approximately with conjugate
gradients preconditioned by diag(H) (forcing term eta = min(0.1, sqrt(|g|/|g0|))),
then backtracks on the Armijo condition from the full step.  On the paper-scale
problems it takes 7-10 Newton steps and ~200 Laplacian products instead of ~100
L-BFGS iterations, and the whole loop runs in numba (no Python per iteration).

Stopping rules are L-BFGS-B's: (S_k - S_k+1) / max(|S_k|, |S_k+1|, 1) <= ftol, or
max |dS/dV| <= gtol; the constant (gauge) direction of each component is left to
the caller, unless a Gaussian prior (``ridge``) is added, as the likelihood
potential does (:mod:`detbal.analysis.likelihood`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from detbal.analysis.action import evaluate, hessian_weights, laplacian_product

#: status codes
CONVERGED_F, CONVERGED_G, MAX_ITER, LINE_SEARCH_FAILED = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def _add_prior(x, centre, ridge, g, diag):  # pragma: no cover - compiled
    """Gaussian prior (ridge / 2) |x - centre|^2: adds to g and diag, returns its value."""
    if not ridge > 0.0:
        return 0.0
    total = 0.0
    for i in range(x.shape[0]):
        dx = x[i] - centre[i]
        total += dx * dx
        g[i] += ridge * dx
        diag[i] += ridge
    return 0.5 * ridge * total


@njit(cache=True, nogil=True)
def _newton_cg(kind, src, dst, w, beta, x, ftol, gtol, max_iter, max_cg,
               nthreads, ridge, centre):  # pragma: no cover - compiled
    n = x.shape[0]
    m = src.shape[0]
    g = np.empty(n)
    gn = np.empty(n)
    diag = np.empty(n)
    diag_n = np.empty(n)
    dinv = np.empty(n)
    xn = np.empty(n)
    p = np.empty(n)
    res = np.empty(n)
    z = np.empty(n)
    d = np.empty(n)
    hd = np.empty(n)
    c = np.empty(m)
    s1 = np.empty(n)
    s2 = np.empty(n)
    s3 = np.empty(n)
    f = evaluate(kind, x, src, dst, w, beta, g, diag, s1, s2, s3, nthreads)
    f += _add_prior(x, centre, ridge, g, diag)
    nfev = 1
    ncg = 0
    g0 = 0.0
    for i in range(n):
        g0 += g[i] * g[i]
    g0 = math.sqrt(g0)
    status = MAX_ITER
    it = 0
    while it < max_iter:
        gmax = 0.0
        gnorm = 0.0
        for i in range(n):
            gi = abs(g[i])
            gnorm += gi * gi
            if gi > gmax:
                gmax = gi
        gnorm = math.sqrt(gnorm)
        if gmax <= gtol:
            status = CONVERGED_G
            break
        # Newton direction: PCG on H p = -g from p = 0
        hessian_weights(kind, x, src, dst, w, beta, c, s1, s2, nthreads)
        dmax = 0.0
        for i in range(n):
            if diag[i] > dmax:
                dmax = diag[i]
        floor = 1e-14 * dmax if dmax > 0.0 else 1.0
        for i in range(n):
            di = diag[i]
            dinv[i] = 1.0 / (di if di > floor else floor)
        eta = min(0.1, math.sqrt(gnorm / g0)) if g0 > 0.0 else 0.1
        target = eta * gnorm
        rz = 0.0
        for i in range(n):
            p[i] = 0.0
            res[i] = -g[i]
            z[i] = dinv[i] * res[i]
            d[i] = z[i]
            rz += res[i] * z[i]
        for k in range(max_cg):
            laplacian_product(src, dst, c, diag, d, hd, s3, nthreads)
            ncg += 1
            dhd = 0.0
            for i in range(n):
                dhd += d[i] * hd[i]
            if not dhd > 0.0:  # flat direction (gauge) or round-off: keep what we have
                if k == 0:
                    for i in range(n):
                        p[i] = d[i]
                break
            a = rz / dhd
            rr = 0.0
            for i in range(n):
                p[i] += a * d[i]
                res[i] -= a * hd[i]
                rr += res[i] * res[i]
            if math.sqrt(rr) <= target:
                break
            rz_new = 0.0
            for i in range(n):
                z[i] = dinv[i] * res[i]
                rz_new += res[i] * z[i]
            bk = rz_new / rz
            rz = rz_new
            for i in range(n):
                d[i] = z[i] + bk * d[i]
        gp = 0.0
        for i in range(n):
            gp += g[i] * p[i]
        if not gp < 0.0:  # cannot happen for a PSD H and exact arithmetic; fall back
            gp = 0.0
            for i in range(n):
                p[i] = -g[i] * dinv[i]
                gp += g[i] * p[i]
        # backtracking line search from the Newton step
        t = 1.0
        fn = f
        ok = False
        for _ in range(60):
            for i in range(n):
                xn[i] = x[i] + t * p[i]
            fn = evaluate(kind, xn, src, dst, w, beta, gn, diag_n, s1, s2, s3, nthreads)
            fn += _add_prior(xn, centre, ridge, gn, diag_n)
            nfev += 1
            if fn <= f + 1e-4 * t * gp:
                ok = True
                break
            denom = 2.0 * (fn - f - gp * t)
            tq = -gp * t * t / denom if denom > 0.0 else 0.5 * t
            if not tq >= 0.1 * t:
                tq = 0.1 * t
            elif tq > 0.5 * t:
                tq = 0.5 * t
            t = tq
        if not ok:
            status = LINE_SEARCH_FAILED
            break
        it += 1
        rel = (f - fn) / max(abs(f), abs(fn), 1.0)
        for i in range(n):
            x[i] = xn[i]
            g[i] = gn[i]
            diag[i] = diag_n[i]
        f = fn
        if rel <= ftol:
            status = CONVERGED_F
            break
    return f, status, it, nfev, ncg


def minimise_action(
    src: np.ndarray,
    dst: np.ndarray,
    w: np.ndarray,
    kind: int,
    beta: float,
    V0: np.ndarray,
    *,
    ftol: float,
    gtol: float,
    max_iter: int,
    max_cg: int = 2000,
    nthreads: int = 1,
    ridge: float = 0.0,
    centre: np.ndarray | None = None,
) -> tuple[np.ndarray, float, int, int, int, int]:
    """``(V, S, status, newton_steps, evaluations, laplacian_products)``; V0 is not modified.

    ``ridge`` > 0 adds a Gaussian prior (ridge / 2) |V - centre|^2 (centre 0 by
    default): the Hessian becomes the Laplacian plus ridge times the identity, which
    also fixes the gauge.
    """
    x = np.array(V0, dtype=np.float64, copy=True)
    mid = np.zeros(x.shape[0]) if centre is None else np.ascontiguousarray(centre, dtype=np.float64)
    if mid.shape != x.shape:
        raise ValueError(f"centre has shape {mid.shape}, expected {x.shape}")
    f, status, nit, nfev, ncg = _newton_cg(
        int(kind), np.ascontiguousarray(src), np.ascontiguousarray(dst),
        np.ascontiguousarray(w, dtype=np.float64), float(beta), x, float(ftol), float(gtol),
        int(max_iter), int(max_cg), int(nthreads), float(ridge), mid,
    )
    return x, float(f), int(status), int(nit), int(nfev), int(ncg)
