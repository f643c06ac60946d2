"""The potential by least action (METHOD.md section 4).

Minimise S[V] = (1/n_sources) sum_e T_e K(V(src_e) - V(dst_e)) with a compiled
truncated Newton-CG solver (the Hessian is a weighted graph Laplacian; see
:mod:`detbal.analysis._newton`), falling back to scipy's L-BFGS-B if it stalls.

S is convex, and its infimum splits over the strongly connected components of
the graph of observed edges: an edge between two components can be driven to
K -> 0 by pushing the components apart, so only edges inside a component
constrain V.  detbal therefore fits V on the edges inside components (the
reported action is the infimum) and flags every state outside the largest
component as beyond the measurable range instead of printing a run-away number:

* ``never_entered``: only ever left (V -> +inf);
* ``never_left``: only ever entered (V -> -inf);
* ``one_sided``: entered and left, but on no cycle (bounded on one side only);
* ``other_component``: on cycles, but not connected both ways to the main component;
* ``dropped``: removed by the N0 cut;
* ``beyond_range``: |beta V| from the main component's median exceeds log(total attempts).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from detbal.analysis.action import action_and_gradient, k_zero
from detbal.analysis.counts import Kernel
from detbal.analysis.resample import (
    map_replicates,
    replicate_seeds,
    row_pointer,
    sample_edge_counts,
)
from detbal.errors import DetbalError
from detbal.parallel import MapBackend
from detbal.progress import Progress

log = logging.getLogger(__name__)

SOLVERS: tuple[str, ...] = ("newton", "lbfgs")
Gauge = Literal["mean"] | str


@dataclass(frozen=True)
class PotentialFit:
    """Least-action potential; ``V`` is NaN wherever ``flags`` is non-empty."""

    states: tuple[str, ...]
    V: np.ndarray
    V_fit: np.ndarray
    stderr: np.ndarray
    flags: tuple[str, ...]
    component: np.ndarray
    sources: np.ndarray
    action: float
    k0: float
    kernel: str
    beta: float
    gauge: str
    n_sources: int
    converged: bool
    iterations: int
    bootstrap_V: np.ndarray | None = None
    #: the solver's V (NaN outside components, zero mean per component): the bootstrap's start
    _solution_V: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def penalty(self) -> str:
        """The action's K(x) (``"exp"`` or ``"softplus"``; stored as ``kernel``)."""
        return self.kernel

    @property
    def identifiable(self) -> np.ndarray:
        return np.array([f == "" for f in self.flags])

    def value(self, state: str) -> float:
        """V of ``state`` by name (NaN when the state is flagged: see :attr:`flags`)."""
        try:
            return float(self.V[self.states.index(state)])
        except ValueError:
            raise DetbalError(f"state {state!r} does not occur in the data") from None

    def __repr__(self) -> str:
        n_id = int(np.count_nonzero(np.isfinite(self.V)))
        return (f"PotentialFit({n_id} of {len(self.states)} states identifiable, action={self.action:.4g},"
                f" kernel={self.kernel!r}, beta={self.beta:g}, gauge={self.gauge!r})")

    def to_records(self) -> list[dict[str, object]]:
        """Rows ``state, V, stderr, sources, flag`` for potential.csv."""
        rows = []
        for i, s in enumerate(self.states):
            ok = self.flags[i] == ""
            rows.append({
                "state": s,
                "V": _fmt(self.V[i]) if ok else "",
                "stderr": _fmt(self.stderr[i]) if ok else "",
                "sources": int(self.sources[i]),
                "flag": self.flags[i],
            })
        return rows


def _fmt(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x:.6g}"


@dataclass(frozen=True)
class _Components:
    label: np.ndarray  # -1 outside any fitted component
    main: int
    fitted: np.ndarray  # states inside components of size >= 2
    edge_mask: np.ndarray  # kernel edges inside a component


def _components(kernel: Kernel, src: np.ndarray, dst: np.ndarray, positive: np.ndarray,
                reference: int | None) -> _Components:
    n = kernel.n_states
    s, d = src[positive], dst[positive]
    if len(s) > 1 and np.any(s[1:] < s[:-1]):
        order = np.argsort(s, kind="stable")
        s, d = s[order], d[order]
    # edges sorted by source (Kernel's order) give the CSR structure directly
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(s, minlength=n), out=indptr[1:])
    graph = csr_matrix((np.ones(len(s), dtype=np.int8), d, indptr), shape=(n, n))
    _, labels = connected_components(graph, directed=True, connection="strong")
    sizes = np.bincount(labels, minlength=labels.max() + 1 if n else 0)
    big = sizes >= 2
    in_big = big[labels] & kernel.kept
    label = np.where(in_big, labels, -1)
    if reference is not None:
        main = int(label[reference])
        if main < 0:
            raise DetbalError(
                f"reference state {kernel.states[reference]!r} is beyond the measurable"
                " range (on no observed cycle); choose another gauge state or gauge='mean'"
            )
    elif np.any(in_big):
        weight = np.bincount(label[in_big], minlength=len(sizes)).astype(float)
        weight += 1e-9 * np.bincount(
            label[in_big], weights=kernel.counts.attempts[in_big], minlength=len(sizes)
        )
        main = int(np.argmax(weight))
    else:
        main = -1
    edge_mask = positive & (label[src] >= 0) & (label[src] == label[dst])
    return _Components(label=label, main=main, fitted=np.flatnonzero(in_big), edge_mask=edge_mask)


def _minimise(
    n: int, src: np.ndarray, dst: np.ndarray, w: np.ndarray, kernel_name: str, beta: float,
    V0: np.ndarray, tol: float, max_iter: int, solver: str = "newton", *,
    gtol: float | None = None, threads: bool = True,
) -> tuple[np.ndarray, float, bool, int]:
    """Minimise the un-normalised action (gradients of order T, not T/n).

    Truncated Newton-CG, compiled (:mod:`detbal.analysis._newton`): the Hessian is
    the weighted graph Laplacian sum_e T_e K''(x_e) (e_f - e_g)(e_f - e_g)^T.  Stops on
    L-BFGS-B's tests (relative decrease <= tol, or max |grad| <= 100 tol); should it
    fail, L-BFGS-B continues from where it stopped.  Threads are used above
    ``PARALLEL_EDGES`` edges, and only from the main thread (bootstrap workers
    run in threads of their own).  ``gtol``: the gradient test (default 100 tol);
    ``threads=False`` keeps every evaluation serial.
    """
    if n == 0 or len(src) == 0:
        return np.zeros(n), 0.0, True, 0
    import threading

    from detbal.analysis._newton import CONVERGED_F, CONVERGED_G, minimise_action
    from detbal.analysis.action import kernel_code, thread_count

    gtol = tol * 1e2 if gtol is None else gtol
    nthreads = thread_count(len(src), None)
    if not threads or threading.current_thread() is not threading.main_thread():
        nthreads = 1
    x, nit = V0, 0
    if solver == "newton":
        x, value, status, nit, _, _ = minimise_action(
            src, dst, w, kernel_code(kernel_name), beta, V0, ftol=tol, gtol=gtol,
            max_iter=max_iter, nthreads=nthreads,
        )
        if status in (CONVERGED_F, CONVERGED_G):
            return x, value, True, nit
        log.debug("Newton-CG stopped (status %d after %d steps); continuing with L-BFGS-B", status, nit)
    grad = np.empty(n)

    def fun(V: np.ndarray) -> tuple[float, np.ndarray]:
        value, g = action_and_gradient(V, src, dst, w, kernel=kernel_name, beta=beta, grad_out=grad,
                                       parallel=nthreads > 1)
        return value, g.copy()

    from scipy import optimize  # only for this fallback (importing it costs ~0.1 s)

    res = optimize.minimize(
        fun, x, jac=True, method="L-BFGS-B",
        options={"maxiter": max_iter, "maxcor": 20, "ftol": tol, "gtol": gtol,
                 "maxfun": 4 * max_iter},
    )
    return res.x, float(res.fun), bool(res.success), nit + int(res.nit)


def _state_flags(kernel: Kernel, comps: _Components, positive: np.ndarray, V: np.ndarray) -> list[str]:
    """Flag per state; ``V`` is beta*V.

    ``beyond_range`` is measured from the median of the main component, so it
    does not depend on the gauge chosen for reporting.
    """
    n = kernel.n_states
    s, d = kernel.src[positive], kernel.dst[positive]
    outdeg = np.bincount(s, minlength=n)
    indeg = np.bincount(d, minlength=n)
    bound = math.log(max(kernel.total_attempts, 2.0))
    main = (comps.label == comps.main) & (comps.main >= 0)
    centre = float(np.median(V[main])) if main.any() else 0.0
    flags = np.select(
        [~kernel.kept, main & (np.abs(V - centre) > bound), main, comps.label >= 0,
         indeg == 0, outdeg == 0],
        ["dropped", "beyond_range", "", "other_component", "never_entered", "never_left"],
        default="one_sided",
    )
    return flags.tolist()


@dataclass(frozen=True)
class _Solution:
    V: np.ndarray  # NaN outside components, gauge-fixed per component
    action: float
    comps: _Components
    converged: bool
    iterations: int


def _solve(kernel: Kernel, weights: np.ndarray, kernel_name: str, beta: float,
           reference: int | None, V0: np.ndarray | None, tol: float, max_iter: int,
           solver: str = "newton") -> _Solution:
    positive = weights > 0
    comps = _components(kernel, kernel.src, kernel.dst, positive, reference)
    fitted = comps.fitted
    local = np.full(kernel.n_states, -1, dtype=np.int64)
    local[fitted] = np.arange(len(fitted))
    m = comps.edge_mask
    src = local[kernel.src[m]].astype(np.int32)
    dst = local[kernel.dst[m]].astype(np.int32)
    w = weights[m]
    start = np.zeros(len(fitted)) if V0 is None else np.nan_to_num(V0[fitted])
    Vc, total, ok, nit = _minimise(len(fitted), src, dst, w, kernel_name, beta, start, tol,
                                   max_iter, solver)
    # gauge: zero mean per component; the reference state (if any) = 0 in the main one
    labels = comps.label[fitted]
    n_labels = int(labels.max()) + 1 if len(labels) else 0
    sums = np.bincount(labels, weights=Vc, minlength=n_labels)
    sizes = np.bincount(labels, minlength=n_labels)
    shift = sums / np.maximum(sizes, 1)
    if reference is not None and comps.main >= 0:
        shift[comps.main] = Vc[local[reference]]
    V = np.full(kernel.n_states, np.nan)
    V[fitted] = Vc - shift[labels]
    n_sources = max(kernel.n_sources, 1)
    return _Solution(V=V, action=total / n_sources, comps=comps, converged=ok, iterations=nit)


class LeastActionPotential:
    """Estimator: ``LeastActionPotential(penalty="exp").fit(kernel) -> PotentialFit``.

    ``penalty`` is the action's K(x): ``"exp"`` (exp(-beta x / 2), the paper's) or
    ``"softplus"``; ``kernel=`` is accepted as its former name (the transition kernel is
    what :meth:`fit` takes).
    """

    def __init__(
        self,
        penalty: str = "exp",
        beta: float = 1.0,
        gauge: Gauge = "mean",
        bootstrap: int = 0,
        seed: int | None = 0,
        n_jobs: int = 1,
        tol: float = 1e-12,
        max_iter: int = 20000,
        solver: str = "newton",
        *,
        kernel: str | None = None,
        backend: MapBackend | None = None,
    ) -> None:
        """``solver``: ``newton`` (compiled truncated Newton-CG, default) or ``lbfgs``
        (scipy L-BFGS-B with the analytic numba gradient); both reach the same minimum.
        ``backend`` (:mod:`detbal.parallel`, e.g. a Dask cluster) runs the bootstrap
        replicates instead of ``n_jobs`` threads; same numbers."""
        penalty = penalty if kernel is None else kernel
        k_zero(penalty)  # validates the name
        if solver not in SOLVERS:
            raise DetbalError(f"unknown solver {solver!r}: use one of {', '.join(SOLVERS)}")
        self.solver = solver
        if beta <= 0:
            raise DetbalError(f"beta must be positive, got {beta}")
        self.penalty = self.kernel = penalty
        self.beta = float(beta)
        self.gauge = gauge
        self.bootstrap = int(bootstrap)
        self.seed = seed
        self.n_jobs = max(1, int(n_jobs))
        self.backend = backend
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, kernel: Kernel, progress: Progress | None = None, *, errors: bool = True) -> PotentialFit:
        """The least-action potential; with ``errors`` (default) and ``bootstrap`` > 0, also
        its bootstrap standard errors (:meth:`add_errors`)."""
        fit = self._point_fit(kernel)
        if errors and self.bootstrap > 0:
            fit = self.add_errors(kernel, fit, progress)
        return fit

    def add_errors(self, kernel: Kernel, fit: PotentialFit, progress: Progress | None = None) -> PotentialFit:
        """``fit`` (from :meth:`fit` with ``errors=False``) with ``self.bootstrap`` bootstrap
        replicates: ``stderr`` and ``bootstrap_V`` filled in, everything else unchanged."""
        ok = fit.identifiable
        if self.bootstrap <= 0 or not ok.any():
            return fit
        reference = None if fit.gauge == "mean" else kernel.counts.index(fit.gauge)
        start = fit._solution_V if fit._solution_V is not None else self._point_fit(kernel)._solution_V
        boot = self._bootstrap(kernel, start, ok, reference, progress)
        stderr = np.full(kernel.n_states, np.nan)
        valid = np.sum(np.isfinite(boot), axis=0)
        enough = valid >= max(2, boot.shape[0] // 2)
        if enough.any():
            stderr[enough] = np.nanstd(boot[:, enough], axis=0, ddof=1)
        return dataclasses.replace(fit, stderr=stderr, bootstrap_V=boot)

    def _point_fit(self, kernel: Kernel) -> PotentialFit:
        reference = None if self.gauge == "mean" else kernel.counts.index(str(self.gauge))
        sol = _solve(kernel, kernel.T, self.kernel, self.beta, reference, None, self.tol,
                     self.max_iter, self.solver)
        if not sol.converged:
            log.warning("L-BFGS-B stopped before converging (%d iterations)", sol.iterations)
        main = sol.comps.main
        V = sol.V.copy()
        main_members = np.flatnonzero(sol.comps.label == main) if main >= 0 else np.zeros(0, int)
        positive = kernel.T > 0
        # the measurable range bounds beta*V (log of the samples), not V itself
        flags = _state_flags(kernel, sol.comps, positive, self.beta * np.nan_to_num(V))
        ok = np.array([f == "" for f in flags])
        if reference is None and main >= 0:
            # zero mean over the identifiable states of the main component
            V[main_members] -= V[ok].mean() if ok.any() else 0.0
        V_report = np.where(ok, V, np.nan)
        sources = kernel.counts.attempts
        return PotentialFit(
            states=kernel.states, V=V_report, V_fit=V, stderr=np.full(kernel.n_states, np.nan),
            flags=tuple(flags), component=sol.comps.label, sources=sources, action=sol.action,
            k0=k_zero(self.kernel), kernel=self.kernel, beta=self.beta,
            gauge="mean" if reference is None else kernel.states[reference],
            n_sources=kernel.n_sources, converged=sol.converged, iterations=sol.iterations,
            bootstrap_V=None, _solution_V=sol.V,
        )

    def _bootstrap(self, kernel: Kernel, V_fit: np.ndarray, ok: np.ndarray,
                   reference: int | None, progress: Progress | None) -> np.ndarray:
        """Resample attempts per source, refit from the fitted potential, align the gauge
        on shared states; ``n_jobs`` threads (the solver releases the GIL)."""
        trials = np.ascontiguousarray(np.rint(kernel.trials), dtype=np.int64)
        ptr = row_pointer(kernel.src, kernel.n_states)
        seeds = replicate_seeds(self.seed, self.bootstrap)
        # locals, not self: the replicate function is pickled to a backend's workers
        penalty, beta, tol, max_iter, solver = self.kernel, self.beta, self.tol, self.max_iter, self.solver

        def one(seed: int) -> np.ndarray:
            T = kernel.rates(sample_edge_counts(kernel.src, kernel.T, trials, seed, ptr=ptr))
            try:
                sol = _solve(kernel, T, penalty, beta, reference, V_fit, tol, max_iter, solver)
            except DetbalError:  # reference fell off the main component in this resample
                return np.full(kernel.n_states, np.nan)
            V = np.where(sol.comps.label == sol.comps.main, sol.V, np.nan)
            shared = ok & np.isfinite(V)
            if reference is None and shared.any():
                V = V - V[shared].mean() + V_fit[shared].mean() - V_fit[ok].mean()
            return V

        rows = map_replicates(one, seeds, n_jobs=self.n_jobs, progress=progress, backend=self.backend)
        return np.stack(rows) if rows else np.empty((0, kernel.n_states))


def fit_potential(kernel: Kernel, /, **options: object) -> PotentialFit:
    """Functional form of :class:`LeastActionPotential` (``fit_potential(k, penalty="softplus")``)."""
    progress = options.pop("progress", None)
    return LeastActionPotential(**options).fit(kernel, progress=progress)  # type: ignore[arg-type]


__all__: Sequence[str] = ["LeastActionPotential", "PotentialFit", "fit_potential"]
