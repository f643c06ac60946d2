"""The least-action functional and its gradient, numba-compiled.

S[V] = (1 / n_sources) * sum_{edges f->g} T(g<-f) * K(V(f) - V(g))   (METHOD.md section 4)

with K(x) = exp(-beta x / 2) (``exp``) or K(x) = log(1 + exp(-beta x)) (``softplus``).

Both kernels are evaluated in factorised form while |beta V| is moderate:

* ``exp``: K = a_f b_g with a = exp(-beta V / 2), b = 1 / a, so
  S = sum_f a_f r_f with r_f = sum_{f->g} T b_g, and
  dS/dV_i = (beta / 2) (b_i c_i - a_i r_i) with c_i = sum_{f->i} T a_f.
  An edge costs two multiplies and no transcendental call; r (a gather along the
  rows, summed in a register while the source repeats) and c (a scatter) are two
  separate streaming passes over the edges, which is faster than one fused pass
  that gathers and scatters at the same random index.
* ``softplus``: exp(-beta x) = A_f B_g with A = exp(-beta V), B = 1 / A, so an
  edge costs one ``log1p`` and one division: K = log1p(z), K'(x) = -beta z / (1 + z).

Outside the safe range the direct (clipped / stable) forms are used.  The
``*_fg`` kernels also return the diagonal of the Hessian (a weighted graph
Laplacian, H = sum_e T_e K''(x_e) (e_f - e_g)(e_f - e_g)^T) when ``diag`` has
length n; the solver (:mod:`detbal.analysis._lbfgs`) uses it as a preconditioner.
"""

from __future__ import annotations

import math
from typing import Literal

import numba
import numpy as np
from numba import njit, prange

KernelName = Literal["exp", "softplus"]
KERNELS: tuple[str, ...] = ("exp", "softplus")

#: edges above which the threaded variants are used
PARALLEL_EDGES = 200_000
#: beyond |beta V| of this the factorised paths could overflow
_EXP_SAFE = 300.0

EXP, SOFTPLUS = 0, 1


def k_zero(kernel: str) -> float:
    """K(0): 1 for ``exp``, log 2 for ``softplus``."""
    if kernel == "exp":
        return 1.0
    if kernel == "softplus":
        return math.log(2.0)
    raise ValueError(f"unknown kernel {kernel!r}: use one of {', '.join(KERNELS)}")


def kernel_code(kernel: str) -> int:
    """Integer code of a kernel name for the compiled functions."""
    k_zero(kernel)
    return EXP if kernel == "exp" else SOFTPLUS


def kernel_value(kernel: str, x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """K(x) evaluated with numpy (figures, baselines)."""
    z = -beta * np.asarray(x, dtype=float)
    if kernel == "exp":
        return np.exp(np.minimum(z / 2.0, 700.0))
    if kernel == "softplus":
        return np.logaddexp(0.0, z)
    raise ValueError(f"unknown kernel {kernel!r}: use one of {', '.join(KERNELS)}")


# -- building blocks -------------------------------------------------------------
@njit(cache=True, nogil=True)
def _row_gather(src, dst, w, b, r, lo, hi):  # pragma: no cover - compiled
    """r[src_e] += w_e b[dst_e] for e in [lo, hi); summed in a register per source run."""
    if hi <= lo:
        return
    s0 = src[lo]
    acc = 0.0
    for e in range(lo, hi):
        s = src[e]
        if s != s0:
            r[s0] += acc
            acc = 0.0
            s0 = s
        acc += w[e] * b[dst[e]]
    r[s0] += acc


@njit(cache=True, nogil=True)
def _col_scatter(src, dst, w, a, c, lo, hi):  # pragma: no cover - compiled
    """c[dst_e] += w_e a[src_e] for e in [lo, hi)."""
    for e in range(lo, hi):
        c[dst[e]] += w[e] * a[src[e]]


@njit(cache=True, nogil=True)
def _max_abs(V):  # pragma: no cover - compiled
    m = 0.0
    for i in range(V.shape[0]):
        x = abs(V[i])
        if x > m or x != x:
            m = x
    return m


# -- exp kernel --------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _exp_fg(V, src, dst, w, beta, grad, diag, a, b, r):  # pragma: no cover - compiled
    """Factorised exp kernel (serial); ``grad`` doubles as the column sums c."""
    n = V.shape[0]
    half = 0.5 * beta
    for i in range(n):
        ai = math.exp(-half * V[i])
        a[i] = ai
        b[i] = 1.0 / ai
        r[i] = 0.0
        grad[i] = 0.0
    m = src.shape[0]
    _row_gather(src, dst, w, b, r, 0, m)
    _col_scatter(src, dst, w, a, grad, 0, m)
    total = 0.0
    want_diag = diag.shape[0] == n
    q = half * half
    for i in range(n):
        ar = a[i] * r[i]
        bc = b[i] * grad[i]
        total += ar
        grad[i] = half * (bc - ar)
        if want_diag:
            diag[i] = q * (ar + bc)
    return total


@njit(cache=True, nogil=True, parallel=True)
def _split_gather_scatter(src, dst, w, b, a, r, c, nthreads):  # pragma: no cover - compiled
    """r[src_e] += w_e b[dst_e] and c[dst_e] += w_e a[src_e] over all edges, threaded.

    Of nt = max(2, nthreads) tasks, 0..ng-1 (ng = nt // 2) gather rows of edge
    chunks and ng..nt-1 scatter edge chunks, side by side.  Task 0 adds into ``r``
    and task ng into ``c`` directly, the others into private buffers, returned as
    ``(extra_r, extra_c)`` with one row per such task (none with two threads) for
    the caller to add in.
    """
    n = r.shape[0]
    m = src.shape[0]
    nt = max(2, nthreads)
    ng = nt // 2
    ns = nt - ng
    extra_r = np.zeros((ng - 1, n))
    extra_c = np.zeros((ns - 1, n))
    gstep = (m + ng - 1) // ng
    sstep = (m + ns - 1) // ns
    for t in prange(nt):
        if t < ng:
            lo = t * gstep
            hi = min(m, lo + gstep)
            if t == 0:
                _row_gather(src, dst, w, b, r, lo, hi)
            else:
                _row_gather(src, dst, w, b, extra_r[t - 1], lo, hi)
        else:
            k = t - ng
            lo = k * sstep
            hi = min(m, lo + sstep)
            if k == 0:
                _col_scatter(src, dst, w, a, c, lo, hi)
            else:
                _col_scatter(src, dst, w, a, extra_c[k - 1], lo, hi)
    return extra_r, extra_c


@njit(cache=True, nogil=True, parallel=True)
def _exp_fg_parallel(V, src, dst, w, beta, grad, diag, a, b, r, nthreads):  # pragma: no cover
    """Threaded factorised exp kernel: gather and scatter passes run side by side
    (:func:`_split_gather_scatter`); ``grad`` doubles as the column sums c."""
    n = V.shape[0]
    half = 0.5 * beta
    for i in prange(n):
        ai = math.exp(-half * V[i])
        a[i] = ai
        b[i] = 1.0 / ai
        r[i] = 0.0
        grad[i] = 0.0
    extra_r, extra_c = _split_gather_scatter(src, dst, w, b, a, r, grad, nthreads)
    want_diag = diag.shape[0] == n
    q = half * half
    total = 0.0
    for i in prange(n):
        ri = r[i]
        for k in range(extra_r.shape[0]):
            ri += extra_r[k, i]
        ci = grad[i]
        for k in range(extra_c.shape[0]):
            ci += extra_c[k, i]
        ar = a[i] * ri
        bc = b[i] * ci
        total += ar
        grad[i] = half * (bc - ar)
        if want_diag:
            diag[i] = q * (ar + bc)
    return total


@njit(cache=True, nogil=True)
def _exp_clipped(V, src, dst, w, beta, grad, diag):  # pragma: no cover - compiled
    """Direct exp kernel with the exponent clipped at 700 (huge spreads of V)."""
    n = V.shape[0]
    want_diag = diag.shape[0] == n
    for i in range(n):
        grad[i] = 0.0
        if want_diag:
            diag[i] = 0.0
    total = 0.0
    half = 0.5 * beta
    for e in range(src.shape[0]):
        s = src[e]
        d = dst[e]
        z = -half * (V[s] - V[d])
        if z > 700.0:
            z = 700.0
        term = w[e] * math.exp(z)
        total += term
        grad[s] -= half * term
        grad[d] += half * term
        if want_diag:
            diag[s] += half * half * term
            diag[d] += half * half * term
    return total


# -- softplus kernel -----------------------------------------------------------------
@njit(cache=True, nogil=True)
def _softplus_chunk(src, dst, w, A, B, r, c, dr, dc, lo, hi, want_diag):  # pragma: no cover
    """Edges [lo, hi): returns sum w log1p(z); r/c get w z/(1+z) by source/target."""
    if hi <= lo:
        return 0.0
    total = 0.0
    s0 = src[lo]
    acc = 0.0
    accd = 0.0
    for e in range(lo, hi):
        s = src[e]
        if s != s0:
            r[s0] += acc
            acc = 0.0
            if want_diag:
                dr[s0] += accd
                accd = 0.0
            s0 = s
        d = dst[e]
        z = A[s] * B[d]
        opz = 1.0 + z
        we = w[e]
        total += we * math.log1p(z)
        t = we * z / opz
        acc += t
        c[d] += t
        if want_diag:
            k2 = t / opz
            accd += k2
            dc[d] += k2
    r[s0] += acc
    if want_diag:
        dr[s0] += accd
    return total


@njit(cache=True, nogil=True)
def _softplus_fg(V, src, dst, w, beta, grad, diag, A, B, r):  # pragma: no cover - compiled
    """Factorised softplus kernel (serial); ``grad`` doubles as the column sums c."""
    n = V.shape[0]
    want_diag = diag.shape[0] == n
    for i in range(n):
        Ai = math.exp(-beta * V[i])
        A[i] = Ai
        B[i] = 1.0 / Ai
        r[i] = 0.0
        grad[i] = 0.0
        if want_diag:
            diag[i] = 0.0
    dr = np.zeros(n if want_diag else 0)
    total = _softplus_chunk(src, dst, w, A, B, r, grad, dr, diag, 0, src.shape[0], want_diag)
    bb = beta * beta
    for i in range(n):
        grad[i] = beta * (grad[i] - r[i])
        if want_diag:
            diag[i] = bb * (diag[i] + dr[i])
    return total


@njit(cache=True, nogil=True, parallel=True)
def _softplus_fg_parallel(V, src, dst, w, beta, grad, diag, A, B, r, nthreads):  # pragma: no cover
    n = V.shape[0]
    m = src.shape[0]
    nt = max(1, nthreads)
    want_diag = diag.shape[0] == n
    for i in prange(n):
        Ai = math.exp(-beta * V[i])
        A[i] = Ai
        B[i] = 1.0 / Ai
    nd = n if want_diag else 0
    lr = np.zeros((nt, n))
    lc = np.zeros((nt, n))
    ldr = np.zeros((nt, nd))
    ldc = np.zeros((nt, nd))
    partial = np.zeros(nt)
    step = (m + nt - 1) // nt
    for t in prange(nt):
        lo = t * step
        hi = min(m, lo + step)
        partial[t] = _softplus_chunk(src, dst, w, A, B, lr[t], lc[t], ldr[t], ldc[t], lo, hi,
                                     want_diag)
    bb = beta * beta
    for i in prange(n):
        ri = 0.0
        ci = 0.0
        for t in range(nt):
            ri += lr[t, i]
            ci += lc[t, i]
        grad[i] = beta * (ci - ri)
        r[i] = ri
        if want_diag:
            di = 0.0
            for t in range(nt):
                di += ldr[t, i] + ldc[t, i]
            diag[i] = bb * di
    return partial.sum()


@njit(cache=True, nogil=True)
def _softplus_direct(V, src, dst, w, beta, grad, diag):  # pragma: no cover - compiled
    """Numerically stable softplus for any spread of V (no factorisation)."""
    n = V.shape[0]
    want_diag = diag.shape[0] == n
    for i in range(n):
        grad[i] = 0.0
        if want_diag:
            diag[i] = 0.0
    total = 0.0
    bb = beta * beta
    for e in range(src.shape[0]):
        s = src[e]
        d = dst[e]
        z = -beta * (V[s] - V[d])
        if z > 0.0:
            ez = math.exp(-z)
            total += w[e] * (z + math.log1p(ez))
            sig = 1.0 / (1.0 + ez)
        else:
            ez = math.exp(z)
            total += w[e] * math.log1p(ez)
            sig = ez / (1.0 + ez)
        g = w[e] * beta * sig
        grad[s] -= g
        grad[d] += g
        if want_diag:
            h = w[e] * bb * sig * (1.0 - sig)
            diag[s] += h
            diag[d] += h
    return total


# -- dispatch ------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def evaluate(kind, V, src, dst, w, beta, grad, diag, s1, s2, s3, nthreads):  # pragma: no cover
    """S and dS/dV (into ``grad``; Hessian diagonal into ``diag`` if it has length n).

    ``s1, s2, s3`` are scratch arrays of length n; ``nthreads`` > 1 selects the
    threaded kernels.  The single entry point of the solver.
    """
    spread = abs(beta) * _max_abs(V)
    if kind == 0:
        if not spread < 2.0 * _EXP_SAFE:
            return _exp_clipped(V, src, dst, w, beta, grad, diag)
        if nthreads > 1:
            return _exp_fg_parallel(V, src, dst, w, beta, grad, diag, s1, s2, s3, nthreads)
        return _exp_fg(V, src, dst, w, beta, grad, diag, s1, s2, s3)
    if not spread < _EXP_SAFE:
        return _softplus_direct(V, src, dst, w, beta, grad, diag)
    if nthreads > 1:
        return _softplus_fg_parallel(V, src, dst, w, beta, grad, diag, s1, s2, s3, nthreads)
    return _softplus_fg(V, src, dst, w, beta, grad, diag, s1, s2, s3)


def thread_count(n_edges: int, parallel: bool | None) -> int:
    """Threads for a problem with ``n_edges`` edges (1 below :data:`PARALLEL_EDGES`)."""
    use = (n_edges >= PARALLEL_EDGES) if parallel is None else parallel
    return max(2, numba.get_num_threads()) if use else 1


def action_and_gradient(
    V: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    weight: np.ndarray,
    *,
    kernel: str = "exp",
    beta: float = 1.0,
    normalisation: float = 1.0,
    grad_out: np.ndarray | None = None,
    parallel: bool | None = None,
) -> tuple[float, np.ndarray]:
    """S[V] and dS/dV for edges ``src -> dst`` with weights T (divided by ``normalisation``).

    Any edge order is accepted; edges sorted by source (as :class:`Kernel` stores
    them) are the fast case.
    """
    kind = kernel_code(kernel) if kernel in KERNELS else None
    if kind is None:
        raise ValueError(f"unknown kernel {kernel!r}: use one of {', '.join(KERNELS)}")
    V = np.ascontiguousarray(V, dtype=np.float64)
    n = V.shape[0]
    grad = np.empty_like(V) if grad_out is None else grad_out
    src = np.ascontiguousarray(src)
    dst = np.ascontiguousarray(dst)
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    s1, s2, s3 = np.empty(n), np.empty(n), np.empty(n)
    total = evaluate(kind, V, src, dst, weight, float(beta), grad, np.empty(0), s1, s2, s3,
                     thread_count(len(src), parallel))
    if normalisation != 1.0:
        grad /= normalisation
        total /= normalisation
    return float(total), grad


def action(
    V: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    weight: np.ndarray,
    *,
    kernel: str = "exp",
    beta: float = 1.0,
    normalisation: float = 1.0,
) -> float:
    """S[V] alone (numpy; for reporting and cross-checks)."""
    x = np.asarray(V)[src] - np.asarray(V)[dst]
    return float(np.sum(weight * kernel_value(kernel, x, beta)) / normalisation)


# -- the Hessian: a weighted graph Laplacian -------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _hw_factor(kind, beta, V, s1, s2, i):  # pragma: no cover - compiled
    e = math.exp((-0.5 if kind == 0 else -1.0) * beta * V[i])
    s1[i] = e
    s2[i] = 1.0 / e


@njit(cache=True, nogil=True, inline="always")
def _hw_edge(kind, beta, safe, V, src, dst, w, s1, s2, e):  # pragma: no cover - compiled
    s = src[e]
    d = dst[e]
    if kind == 0:
        if safe:
            k = s1[s] * s2[d]
        else:
            k = math.exp(min(-0.5 * beta * (V[s] - V[d]), 700.0))
        return 0.25 * beta * beta * w[e] * k
    if safe:
        z = s1[s] * s2[d]
        opz = 1.0 + z
        return beta * beta * w[e] * (z / opz) / opz
    ez = math.exp(-abs(beta * (V[s] - V[d])))
    return beta * beta * w[e] * ez / ((1.0 + ez) * (1.0 + ez))


@njit(cache=True, nogil=True)
def _hw_safe(kind, beta, V):  # pragma: no cover - compiled
    limit = 2.0 * _EXP_SAFE if kind == 0 else _EXP_SAFE
    return abs(beta) * _max_abs(V) < limit


@njit(cache=True, nogil=True)
def _hessian_weights_serial(kind, V, src, dst, w, beta, c, s1, s2):  # pragma: no cover
    safe = _hw_safe(kind, beta, V)
    if safe:
        for i in range(V.shape[0]):
            _hw_factor(kind, beta, V, s1, s2, i)
    for e in range(src.shape[0]):
        c[e] = _hw_edge(kind, beta, safe, V, src, dst, w, s1, s2, e)


@njit(cache=True, nogil=True, parallel=True)
def _hessian_weights_parallel(kind, V, src, dst, w, beta, c, s1, s2):  # pragma: no cover
    safe = _hw_safe(kind, beta, V)
    if safe:
        for i in prange(V.shape[0]):
            _hw_factor(kind, beta, V, s1, s2, i)
    for e in prange(src.shape[0]):
        c[e] = _hw_edge(kind, beta, safe, V, src, dst, w, s1, s2, e)


@njit(cache=True, nogil=True)
def hessian_weights(kind, V, src, dst, w, beta, c, s1, s2, nthreads):  # pragma: no cover
    """c_e = T_e K''(x_e), so that H = sum_e c_e (e_f - e_g)(e_f - e_g)^T."""
    if nthreads > 1:
        _hessian_weights_parallel(kind, V, src, dst, w, beta, c, s1, s2)
    else:
        _hessian_weights_serial(kind, V, src, dst, w, beta, c, s1, s2)


@njit(cache=True, nogil=True)
def _laplacian_serial(src, dst, c, diag, v, out, r):  # pragma: no cover - compiled
    n = v.shape[0]
    for i in range(n):
        r[i] = 0.0
        out[i] = 0.0
    m = src.shape[0]
    _row_gather(src, dst, c, v, r, 0, m)
    _col_scatter(src, dst, c, v, out, 0, m)
    for i in range(n):
        out[i] = diag[i] * v[i] - r[i] - out[i]


@njit(cache=True, nogil=True, parallel=True)
def _laplacian_parallel(src, dst, c, diag, v, out, r, nthreads):  # pragma: no cover
    n = v.shape[0]
    for i in prange(n):
        r[i] = 0.0
        out[i] = 0.0
    extra_r, extra_c = _split_gather_scatter(src, dst, c, v, v, r, out, nthreads)
    for i in prange(n):
        acc = r[i] + out[i]
        for k in range(extra_r.shape[0]):
            acc += extra_r[k, i]
        for k in range(extra_c.shape[0]):
            acc += extra_c[k, i]
        out[i] = diag[i] * v[i] - acc


@njit(cache=True, nogil=True)
def laplacian_product(src, dst, c, diag, v, out, r, nthreads):  # pragma: no cover - compiled
    """out = H v for H = sum_e c_e (e_f - e_g)(e_f - e_g)^T with diagonal ``diag``."""
    if nthreads > 1:
        _laplacian_parallel(src, dst, c, diag, v, out, r, nthreads)
    else:
        _laplacian_serial(src, dst, c, diag, v, out, r)
