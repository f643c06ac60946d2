"""The least-action functional and its gradient, numba-compiled.

S[V] = (1 / n_sources) * sum_{edges f->g} T(g<-f) * K(V(f) - V(g))   (METHOD.md section 4)

with K(x) = exp(-beta x / 2) (``exp``) or K(x) = log(1 + exp(-beta x)) (``softplus``).
For ``exp`` the sum factorises as a^T T b with a = exp(-beta V / 2) and
b = exp(beta V / 2), so an edge costs one multiply and no transcendental call.
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
#: beyond |beta V / 2| of this the factorised exp path could overflow
_EXP_SAFE = 300.0


def k_zero(kernel: str) -> float:
    """K(0): 1 for ``exp``, log 2 for ``softplus``."""
    if kernel == "exp":
        return 1.0
    if kernel == "softplus":
        return math.log(2.0)
    raise ValueError(f"unknown kernel {kernel!r}: use one of {', '.join(KERNELS)}")


def kernel_value(kernel: str, x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """K(x) evaluated with numpy (figures, baselines)."""
    z = -beta * np.asarray(x, dtype=float)
    if kernel == "exp":
        return np.exp(np.minimum(z / 2.0, 700.0))
    if kernel == "softplus":
        return np.logaddexp(0.0, z)
    raise ValueError(f"unknown kernel {kernel!r}: use one of {', '.join(KERNELS)}")


@njit(cache=True, nogil=True)
def _exp_factorised(V, src, dst, w, beta, grad):  # pragma: no cover - compiled
    n = V.shape[0]
    a = np.empty(n)
    b = np.empty(n)
    for i in range(n):
        a[i] = math.exp(-0.5 * beta * V[i])
        b[i] = 1.0 / a[i]
        grad[i] = 0.0
    total = 0.0
    half = 0.5 * beta
    for e in range(src.shape[0]):
        s = src[e]
        d = dst[e]
        term = w[e] * a[s] * b[d]
        total += term
        grad[s] -= half * term
        grad[d] += half * term
    return total


@njit(cache=True, nogil=True)
def _exp_clipped(V, src, dst, w, beta, grad):  # pragma: no cover - compiled
    for i in range(V.shape[0]):
        grad[i] = 0.0
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
    return total


@njit(cache=True, nogil=True)
def _softplus_serial(V, src, dst, w, beta, grad):  # pragma: no cover - compiled
    for i in range(V.shape[0]):
        grad[i] = 0.0
    total = 0.0
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
    return total


@njit(cache=True, nogil=True, parallel=True)
def _exp_parallel(V, src, dst, w, beta, grad):  # pragma: no cover - compiled
    n = V.shape[0]
    m = src.shape[0]
    a = np.empty(n)
    b = np.empty(n)
    for i in prange(n):
        a[i] = math.exp(-0.5 * beta * V[i])
        b[i] = 1.0 / a[i]
    nchunk = numba.get_num_threads()
    local = np.zeros((nchunk, n))
    partial = np.zeros(nchunk)
    half = 0.5 * beta
    step = (m + nchunk - 1) // nchunk
    for c in prange(nchunk):
        lo = c * step
        hi = min(m, lo + step)
        acc = 0.0
        g = local[c]
        for e in range(lo, hi):
            s = src[e]
            d = dst[e]
            term = w[e] * a[s] * b[d]
            acc += term
            g[s] -= half * term
            g[d] += half * term
        partial[c] = acc
    for i in prange(n):
        t = 0.0
        for c in range(nchunk):
            t += local[c, i]
        grad[i] = t
    return partial.sum()


@njit(cache=True, nogil=True, parallel=True)
def _softplus_parallel(V, src, dst, w, beta, grad):  # pragma: no cover - compiled
    n = V.shape[0]
    m = src.shape[0]
    nchunk = numba.get_num_threads()
    local = np.zeros((nchunk, n))
    partial = np.zeros(nchunk)
    step = (m + nchunk - 1) // nchunk
    for c in prange(nchunk):
        lo = c * step
        hi = min(m, lo + step)
        acc = 0.0
        gl = local[c]
        for e in range(lo, hi):
            s = src[e]
            d = dst[e]
            z = -beta * (V[s] - V[d])
            if z > 0.0:
                ez = math.exp(-z)
                acc += w[e] * (z + math.log1p(ez))
                sig = 1.0 / (1.0 + ez)
            else:
                ez = math.exp(z)
                acc += w[e] * math.log1p(ez)
                sig = ez / (1.0 + ez)
            g = w[e] * beta * sig
            gl[s] -= g
            gl[d] += g
        partial[c] = acc
    for i in prange(n):
        t = 0.0
        for c in range(nchunk):
            t += local[c, i]
        grad[i] = t
    return partial.sum()


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
    """S[V] and dS/dV for edges ``src -> dst`` with weights T (divided by ``normalisation``)."""
    V = np.ascontiguousarray(V, dtype=np.float64)
    grad = np.empty_like(V) if grad_out is None else grad_out
    use_parallel = (len(src) >= PARALLEL_EDGES) if parallel is None else parallel
    if kernel == "exp":
        safe = V.size == 0 or 0.5 * abs(beta) * float(np.max(np.abs(V))) < _EXP_SAFE
        if not safe:
            total = _exp_clipped(V, src, dst, weight, beta, grad)
        elif use_parallel:
            total = _exp_parallel(V, src, dst, weight, beta, grad)
        else:
            total = _exp_factorised(V, src, dst, weight, beta, grad)
    elif kernel == "softplus":
        fn = _softplus_parallel if use_parallel else _softplus_serial
        total = fn(V, src, dst, weight, beta, grad)
    else:
        raise ValueError(f"unknown kernel {kernel!r}: use one of {', '.join(KERNELS)}")
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
