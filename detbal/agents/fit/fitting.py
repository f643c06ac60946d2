"""Parameter fitting (many random starts of L-BFGS-B) and the score of METHOD.md.

For an ansatz f(x; p) with K parameters the fit minimises
``MSE(p) = mean_i (f(x_i; p) - y_i)^2`` over the box ``[-10, 10]^K`` from ``starts``
uniform random points and keeps the best finite result.  Gradients are exact
(reverse mode over the compiled tape, :meth:`CompiledAnsatz.mse_and_gradient`):
``dMSE/dp_j = 2 mean_i (f_i - y_i) df_i/dp_j``.

All starts advance in lock step: SciPy's L-BFGS-B kernel ``setulb`` is driven by
reverse communication, one workspace per start, and every round of function
requests is evaluated for all waiting starts in one vectorised call.  Where that
private kernel is missing or has another calling convention (SciPy < 1.15) the
starts run one after another through :func:`scipy.optimize.minimize` instead (same
algorithm, same result up to rounding, slower).

Score: ``clip(20 + 60 * log(MSE_base / MSE) / log(1e4), 0, 100)``, so the baseline
scores 20 and a 10^4-fold smaller MSE scores 80.
"""

from __future__ import annotations

import contextlib
import logging
import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from detbal.agents.fit.ansatz import CompiledAnsatz

log = logging.getLogger(__name__)

BOUNDS = (-10.0, 10.0)
#: objective value given to the line search where f or its gradient is not finite
_PENALTY = 1e100


class FitFailed(ValueError):
    """No start produced a finite MSE; ``reason`` is one line for ``escape_detail``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class FitResult:
    """Best parameters, their MSE, and how the starts fared."""

    params: tuple[float, ...]
    mse: float
    n_starts: int
    n_finite: int
    n_evaluations: int


def score_from_mse(mse: float, mse_base: float) -> float:
    """``clip(20 + 60 log(MSE_base/MSE) / log(1e4), 0, 100)``; 100 for MSE = 0, NaN if not finite."""
    if not (math.isfinite(mse) and math.isfinite(mse_base)) or mse < 0 or mse_base <= 0:
        return math.nan
    if mse == 0.0:
        return 100.0
    s = 20.0 + 60.0 * math.log(mse_base / mse) / math.log(1e4)
    return float(min(100.0, max(0.0, s)))


def fit_seed(text: str, seed: int) -> list[int]:
    """Seed sequence for an ansatz's random starts: the run seed and a CRC of the text."""
    return [int(seed), zlib.crc32(text.encode("utf-8"))]


def _objective(
    compiled: CompiledAnsatz, X: np.ndarray, y: np.ndarray, P: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """MSE (shape ``(S,)``) and its gradient (shape ``(S, K)``) at ``S`` parameter vectors."""
    mse, grad = compiled.mse_and_gradient(X, y, P)
    bad = ~(np.isfinite(mse) & np.all(np.isfinite(grad), axis=1))
    mse = np.where(bad, _PENALTY, mse)
    grad[bad] = 0.0
    return mse, grad


def _mse_at(compiled: CompiledAnsatz, X: np.ndarray, y: np.ndarray, P: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        r = compiled.value(X, P) - y
        out = np.mean(r * r, axis=1)
    return np.where(np.isfinite(out), out, np.inf)


@lru_cache(maxsize=1)
def _setulb() -> Any:
    """SciPy's reverse-communication L-BFGS-B kernel if its calling convention is the known one."""
    try:
        from scipy.optimize import _lbfgsb  # type: ignore[attr-defined]

        setulb = _lbfgsb.setulb
        # a quadratic in 2-D with one active bound: must converge to (1, -0.5)
        st = _LbfgsbState(np.array([3.0, 3.0]), m=10)
        lo, hi, nbd = np.array([-10.0, -0.5]), np.array([10.0, 10.0]), np.array([2, 2], np.int32)
        for _ in range(200):
            st.call(setulb, lo, hi, nbd)
            if st.task[0] == 3:
                x = st.x
                st.f = float((x[0] - 1) ** 2 + (x[1] + 2) ** 2)
                st.g = np.array([2 * (x[0] - 1), 2 * (x[1] + 2)])
            elif st.task[0] != 1:
                break
        if st.task[0] == 4 and np.allclose(st.x, [1.0, -0.5], atol=1e-6):
            return setulb
    except Exception as exc:  # noqa: BLE001 (any failure means: use the fallback)
        log.debug("lock-step L-BFGS-B unavailable (%s); starts run sequentially", exc)
    return None


class _LbfgsbState:
    """One start's L-BFGS-B workspace (layout of SciPy >= 1.15)."""

    __slots__ = ("m", "x", "f", "g", "wa", "iwa", "task", "ln_task", "lsave", "isave", "dsave",
                 "nit")

    def __init__(self, x0: np.ndarray, m: int) -> None:
        n = x0.shape[0]
        self.m = m
        self.x = np.array(x0, dtype=np.float64)
        self.f = 0.0
        self.g = np.zeros(n, dtype=np.float64)
        self.wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, dtype=np.float64)
        self.iwa = np.zeros(3 * n, dtype=np.int32)
        self.task = np.zeros(2, dtype=np.int32)
        self.ln_task = np.zeros(2, dtype=np.int32)
        self.lsave = np.zeros(4, dtype=np.int32)
        self.isave = np.zeros(44, dtype=np.int32)
        self.dsave = np.zeros(29, dtype=np.float64)
        self.nit = 0

    def call(self, setulb: Any, lo: np.ndarray, hi: np.ndarray, nbd: np.ndarray,
             factr: float = 1e7, pgtol: float = 1e-5, maxls: int = 20) -> None:
        setulb(self.m, self.x, lo, hi, nbd, self.f, self.g, factr, pgtol, self.wa, self.iwa,
               self.task, self.lsave, self.isave, self.dsave, maxls, self.ln_task)


@lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """A threadpoolctl controller (after SciPy's BLAS is loaded), or None without threadpoolctl."""
    try:
        from scipy.optimize import _lbfgsb  # type: ignore[attr-defined]  # noqa: F401 (loads BLAS)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        log.debug("threadpoolctl missing: set OPENBLAS_NUM_THREADS=1 for fast fits")
        return None
    return ThreadpoolController()


def _one_blas_thread() -> Any:
    """Context: BLAS on one thread.  L-BFGS-B's tiny BLAS calls are ~400x slower multi-threaded."""
    ctl = _blas_controller()
    return ctl.limit(limits=1, user_api="blas") if ctl is not None else contextlib.nullcontext()


def _lockstep(
    setulb: Any, compiled: CompiledAnsatz, X: np.ndarray, y: np.ndarray, P0: np.ndarray,
    lo: float, hi: float, maxiter: int, maxfun: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Run L-BFGS-B from every row of ``P0`` in lock step; best (params, mse) seen per start."""
    S, K = P0.shape
    lob, hib = np.full(K, lo), np.full(K, hi)
    nbd = np.full(K, 2, dtype=np.int32)
    best_f = np.full(S, np.inf)
    best_x = P0.copy()
    f0, g0 = _objective(compiled, X, y, P0)
    n_eval = S
    states: list[_LbfgsbState | None] = []
    for s in range(S):
        if f0[s] >= _PENALTY:  # not finite at the start: this start has failed
            states.append(None)
            continue
        st = _LbfgsbState(P0[s], m=10)
        st.call(setulb, lob, hib, nbd)  # START -> asks for f, g at x0
        st.f, st.g = float(f0[s]), g0[s].copy()
        best_f[s] = f0[s]
        states.append(st)
    active = [s for s in range(S) if states[s] is not None]
    nfev = np.ones(S, dtype=int)
    while active:
        waiting = []
        for s in active:
            st = states[s]
            assert st is not None
            while True:
                st.call(setulb, lob, hib, nbd)
                t = st.task[0]
                if t == 3:
                    waiting.append(s)
                    break
                if t == 1:
                    st.nit += 1
                    if st.nit >= maxiter or nfev[s] >= maxfun:
                        break
                    continue
                break  # converged, stopped or abnormal
        if not waiting:
            break
        idx = np.array(waiting)
        Pw = np.array([states[s].x for s in waiting])  # type: ignore[union-attr]
        fw, gw = _objective(compiled, X, y, Pw)
        n_eval += len(waiting)
        nfev[idx] += 1
        for i, s in enumerate(waiting):
            st = states[s]
            assert st is not None
            st.f, st.g = float(fw[i]), gw[i].copy()
            if fw[i] < best_f[s]:
                best_f[s], best_x[s] = fw[i], Pw[i]
        active = waiting
    return best_x, best_f, n_eval


def _sequential(
    compiled: CompiledAnsatz, X: np.ndarray, y: np.ndarray, P0: np.ndarray,
    lo: float, hi: float, maxiter: int, maxfun: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    from scipy.optimize import minimize

    S, K = P0.shape
    best_x = P0.copy()
    best_f = np.full(S, np.inf)
    n_eval = 0
    for s in range(S):
        seen: dict[str, Any] = {"f": np.inf, "x": P0[s].copy(), "n": 0}

        def fun(p: np.ndarray) -> tuple[float, np.ndarray]:
            f, g = _objective(compiled, X, y, p[None, :])
            seen["n"] += 1
            if f[0] < seen["f"]:
                seen["f"], seen["x"] = float(f[0]), p.copy()
            return float(f[0]), g[0]

        f0, _ = fun(P0[s])
        if f0 < _PENALTY:
            minimize(fun, P0[s], jac=True, method="L-BFGS-B", bounds=[(lo, hi)] * K,
                     options={"maxiter": maxiter, "maxfun": maxfun})
        best_x[s], best_f[s] = seen["x"], seen["f"]
        n_eval += seen["n"]
    return best_x, best_f, n_eval


def fit_parameters(
    compiled: CompiledAnsatz,
    X: np.ndarray,
    y: np.ndarray,
    *,
    starts: int = 100,
    seed: int | list[int] = 0,
    bounds: tuple[float, float] = BOUNDS,
    maxiter: int = 300,
    maxfun: int | None = None,
    lockstep: bool | None = None,
) -> FitResult:
    """Best of ``starts`` L-BFGS-B runs from uniform points in ``bounds``; raise :class:`FitFailed` if none is finite.

    ``maxiter`` bounds each start's iterations and ``maxfun`` (default ``3 * maxiter``)
    its function evaluations; ``lockstep=None`` uses the vectorised lock-step driver
    when available.
    """
    maxfun = 3 * maxiter if maxfun is None else maxfun
    X = np.atleast_2d(np.asarray(X, dtype=float))
    y = np.asarray(y, dtype=float)
    K = compiled.n_params
    lo, hi = bounds
    if K == 0:
        mse = float(_mse_at(compiled, X, y, np.zeros((1, 0)))[0])
        if not math.isfinite(mse):
            raise FitFailed("the ansatz is not finite on the data")
        return FitResult(params=(), mse=mse, n_starts=1, n_finite=1, n_evaluations=1)
    rng = np.random.default_rng(seed)
    P0 = rng.uniform(lo, hi, size=(starts, K))
    with _one_blas_thread():
        setulb = _setulb() if lockstep in (None, True) else None
        if lockstep and setulb is None:
            raise RuntimeError("the lock-step L-BFGS-B driver is not available with this SciPy")
        if setulb is not None:
            best_x, _, n_eval = _lockstep(setulb, compiled, X, y, P0, lo, hi, maxiter, maxfun)
        else:
            best_x, _, n_eval = _sequential(compiled, X, y, P0, lo, hi, maxiter, maxfun)
    best_x = np.clip(best_x, lo, hi)
    mse = _mse_at(compiled, X, y, best_x)  # recomputed plainly at each start's best point
    n_finite = int(np.sum(np.isfinite(mse)))
    if n_finite == 0:
        raise FitFailed(f"MSE not finite at any of {starts} starts")
    b = int(np.argmin(mse))
    return FitResult(
        params=tuple(float(v) for v in best_x[b]), mse=float(mse[b]),
        n_starts=starts, n_finite=n_finite, n_evaluations=int(n_eval),
    )
