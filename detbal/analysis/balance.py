"""Tests of detailed balance (METHOD.md section 3).

* :func:`triplet_test`: the paper's closed-path statistic on 3-cycles, exactly as
  published (variance 1/n_edge + 1/n_source per log T, chi^2 summed over
  triplets, ndf = triplets), kept for comparison with the published numbers.
* :func:`global_test`: all independent cycles at once.  For every pair observed
  both ways, y_fg = log T(g<-f) - log T(f<-g) is fitted by V_f - V_g by weighted
  least squares with the multinomial variance (1 - p)/n of each log count
  (source counts cancel in cycles, so they add nothing).  The residual chi^2 has
  df = pairs - states + components.
* p-values come from a parametric bootstrap: the fitted reversible kernel
  T~(g<-f) = sqrt(T(g<-f) T(f<-g)) exp((V_f - V_g)/2) (rows rescaled to stay
  <= 1, which keeps it reversible) is simulated with the same numbers of attempts
  per source, and both statistics are recomputed exactly as on the data.
* :func:`pair_test` and :func:`one_sided_test` hold a fitted potential against
  the pairs observed both ways and against the pairs seen in one direction only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve
from scipy.special import chdtrc

from detbal.analysis.counts import Kernel, reverse_index, reverse_pairs
from detbal.analysis.pvalues import BootstrapPValue, bootstrap_p_value
from detbal.analysis.resample import (
    SequentialStop,
    map_until,
    mc_p_value,
    replicate_seeds,
    row_pointer,
    sample_edge_counts,
)
from detbal.parallel import MapBackend
from detbal.progress import Progress


# -- the paper's triplet statistic --------------------------------------------
@dataclass(frozen=True)
class TripletTest:
    """The published closed-path test on 3-cycles f -> g -> h -> f."""

    n_triplets: int
    chi2: float
    chi2_per_ndf: float
    p_value: float
    triplets: np.ndarray
    L_fwd: np.ndarray
    L_bwd: np.ndarray
    sigma2_fwd: np.ndarray
    sigma2_bwd: np.ndarray
    min_count: float
    max_variance: float
    p: BootstrapPValue | None = None
    mc_se: float = math.nan

    def as_dict(self) -> dict[str, object]:
        return {
            "n_triplets": self.n_triplets, "chi2": self.chi2, "ndf": self.n_triplets,
            "chi2_per_ndf": self.chi2_per_ndf, "p_value_bootstrap": self.p_value,
            "min_count": self.min_count, "max_variance": self.max_variance,
            "p_simulated_mc_se": self.mc_se, **_p_details(self.p),
        }


def _edge_index(src: np.ndarray, dst: np.ndarray, n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Index in (src, dst) of every edge a -> b (all present; edges need not be sorted)."""
    key = src.astype(np.int64) * n + dst
    order = np.argsort(key, kind="stable")
    return order[np.searchsorted(key[order], np.asarray(a, dtype=np.int64) * n + b)]


def _triangles(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """All triangles (a < b < c) of the undirected graph with edges f - g (f < g), sorted
    (compiled: sorted neighbour lists merged per pair)."""
    from detbal.analysis._wls import triangle_list

    f = np.asarray(f, dtype=np.int64)
    g = np.asarray(g, dtype=np.int64)
    if len(f) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    tri = triangle_list(f, g, int(max(f.max(), g.max())) + 1)
    return tri[np.lexsort((tri[:, 2], tri[:, 1], tri[:, 0]))]


def _triplet_statistic(src: np.ndarray, dst: np.ndarray, count: np.ndarray, n0: np.ndarray,
                       n: int, min_count: float, max_variance: float) -> dict[str, np.ndarray]:
    ok = count > min_count
    s, d, c = src[ok], dst[ok], count[ok]
    e_fg, _ = reverse_pairs(s, d, n)
    f, g = s[e_fg], d[e_fg]
    good = (n0[f] > min_count) & (n0[g] > min_count)
    tri = _triangles(f[good], g[good])

    def logs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cnt = c[_edge_index(s, d, n, a, b)]
        return np.log(cnt / n0[a]), 1.0 / cnt + 1.0 / n0[a]

    if len(tri) == 0:
        empty = np.zeros(0)
        return {"triplets": tri, "L_fwd": empty, "L_bwd": empty, "s2f": empty, "s2b": empty}
    a, b, h = tri[:, 0], tri[:, 1], tri[:, 2]
    l1, v1 = logs(a, b)
    l2, v2 = logs(b, h)
    l3, v3 = logs(h, a)
    m1, w1 = logs(a, h)
    m2, w2 = logs(h, b)
    m3, w3 = logs(b, a)
    L_fwd, s2f = l1 + l2 + l3, v1 + v2 + v3
    L_bwd, s2b = m1 + m2 + m3, w1 + w2 + w3
    keep = (s2f + s2b) < max_variance
    return {"triplets": tri[keep], "L_fwd": L_fwd[keep], "L_bwd": L_bwd[keep],
            "s2f": s2f[keep], "s2b": s2b[keep]}


def _triplet_chi2(parts: dict[str, np.ndarray]) -> tuple[float, int]:
    diff = parts["L_bwd"] - parts["L_fwd"]
    return float(np.sum(diff**2 / (parts["s2f"] + parts["s2b"]))), len(diff)


# -- the global weighted-least-squares test -----------------------------------
@dataclass(frozen=True)
class GlobalTest:
    """All independent cycles of the pair graph at once, with a calibrated p-value."""

    n_pairs: int
    n_states: int
    n_components: int
    df: int
    chi2: float
    chi2_per_df: float
    p_value: float
    p_asymptotic: float
    n_bootstrap: int
    V: np.ndarray
    residuals: np.ndarray = field(repr=False)
    p: BootstrapPValue | None = None
    simulations_planned: int = 0
    mc_se: float = math.nan

    @property
    def rejects(self) -> bool:
        """Detailed balance rejected at the 5% level."""
        return bool(self.p_value < 0.05)

    def as_dict(self) -> dict[str, object]:
        return {
            "n_pairs": self.n_pairs, "n_states": self.n_states,
            "n_components": self.n_components, "df": self.df, "chi2": self.chi2,
            "chi2_per_df": self.chi2_per_df, "p_value": self.p_value,
            "p_asymptotic": self.p_asymptotic, "n_bootstrap": self.n_bootstrap,
            "simulations_planned": self.simulations_planned, "p_simulated_mc_se": self.mc_se,
            **_p_details(self.p),
        }


def _p_details(p: BootstrapPValue | None) -> dict[str, object]:
    """How a bootstrap p-value was obtained: simulated, or (beyond the simulations) the
    bound 1/(R+1) and a scaled chi-squared tail estimate (:mod:`detbal.analysis.pvalues`)."""
    if p is None:
        return {}
    d = p.as_dict()
    d.pop("p_value")
    return d


@dataclass(frozen=True)
class _WLS:
    f: np.ndarray
    g: np.ndarray
    e_fg: np.ndarray
    e_gf: np.ndarray
    y: np.ndarray
    var: np.ndarray
    V: np.ndarray
    chi2: float
    df: int
    n_states: int
    n_components: int


def _log_count_variance(count: np.ndarray, n0: np.ndarray) -> np.ndarray:
    """Multinomial variance of log(n/N): (1 - p)/n with p = n/N (floored for p -> 1)."""
    p = np.minimum(count / n0, 1.0)
    return np.maximum(1.0 - p, 0.5 / np.maximum(n0, 1.0)) / count


#: pair graphs up to this many states are solved by sparse LU (0.1-0.3 s), larger ones by
#: the compiled reduction of :mod:`detbal.analysis._wls` (LU took 2.3 s at 1e5 states and
#: minutes at 1e6).  The two agree to ~1e-12, but the simulations' multinomial draws are
#: not continuous in p (a row's last edge drawn with q = 1 uses no random number), so
#: keeping LU where it is cheap keeps every earlier p-value bit for bit.
WLS_DIRECT_MAX_NODES = 50_000


def _wls(src: np.ndarray, dst: np.ndarray, count: np.ndarray, n0: np.ndarray, n: int,
         min_count: float) -> _WLS:
    """Weighted least squares of pair log-ratios by potential differences."""
    ok = np.flatnonzero(count > min_count)
    e_fg_local, e_gf_local = reverse_pairs(src[ok], dst[ok], n)
    e_fg, e_gf = ok[e_fg_local], ok[e_gf_local]
    f, g = src[e_fg], dst[e_fg]
    y = np.log(count[e_fg] / n0[f]) - np.log(count[e_gf] / n0[g])
    var = _log_count_variance(count[e_fg], n0[f]) + _log_count_variance(count[e_gf], n0[g])
    V = np.full(n, np.nan)
    if len(f) == 0:
        return _WLS(f, g, e_fg, e_gf, y, var, V, 0.0, 0, 0, 0)
    nodes = np.unique(np.concatenate([f, g]))
    local = np.full(n, -1, dtype=np.int64)
    local[nodes] = np.arange(len(nodes))
    a, b = local[f], local[g]
    m = len(nodes)
    w = 1.0 / var
    if m > WLS_DIRECT_MAX_NODES:
        # compiled exact reduction (leaves, chains, CG on the core; the same gauge as
        # below): a sparse LU's fill grows about quadratically on random pair graphs
        from detbal.analysis._wls import wls_solve

        sol, _, df, converged = wls_solve(a.astype(np.int64), b.astype(np.int64), y, var, m)
        if converged:
            resid = y - (sol[a] - sol[b])
            V[nodes] = sol
            return _WLS(f, g, e_fg, e_gf, y, var, V, float(np.sum(w * resid**2)), int(df), m,
                        int(df) - len(f) + m)
    graph = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(m, m))
    n_comp, labels = connected_components(graph, directed=False)
    # weighted Laplacian, grounded at the first node of each component
    rows = np.concatenate([a, b, a, b])
    cols = np.concatenate([a, b, b, a])
    vals = np.concatenate([w, w, -w, -w])
    ground = np.unique(labels, return_index=True)[1]
    rows = np.concatenate([rows, ground])
    cols = np.concatenate([cols, ground])
    vals = np.concatenate([vals, np.ones(len(ground))])
    L = sparse.csc_matrix((vals, (rows, cols)), shape=(m, m))
    rhs = np.bincount(a, weights=w * y, minlength=m) - np.bincount(b, weights=w * y, minlength=m)
    sol = np.atleast_1d(spsolve(L, rhs))
    resid = y - (sol[a] - sol[b])
    chi2 = float(np.sum(w * resid**2))
    V[nodes] = sol
    return _WLS(f, g, e_fg, e_gf, y, var, V, chi2, len(f) - m + n_comp, m, n_comp)


def _p_asymptotic(chi2: float, df: int) -> float:
    # chdtrc is what scipy.stats.chi2.sf evaluates, without importing scipy.stats (0.5 s)
    return float(chdtrc(df, chi2)) if df > 0 else math.nan


def reversible_fit(kernel: Kernel, wls: _WLS) -> np.ndarray:
    """Edge probabilities of the fitted reversible kernel (same edges as ``kernel``)."""
    p = kernel.T.copy()
    if len(wls.f):
        conductance = np.sqrt(kernel.T[wls.e_fg] * kernel.T[wls.e_gf])
        dv = wls.V[wls.f] - wls.V[wls.g]
        p[wls.e_fg] = conductance * np.exp(dv / 2.0)
        p[wls.e_gf] = conductance * np.exp(-dv / 2.0)
    row = np.bincount(kernel.src, weights=p, minlength=kernel.n_states)
    with np.errstate(divide="ignore", invalid="ignore"):
        loops = np.where(kernel.n0 > 0, kernel.counts.self_loops / kernel.n0, 0.0)
    budget = np.clip(1.0 - loops, 1e-12, 1.0)
    scale = np.where(row > budget, budget / np.where(row > 0, row, 1.0), 1.0)
    return p * scale[kernel.src]


@dataclass(frozen=True)
class SimulatedStatistics:
    """Both cycle statistics of one simulated data set."""

    chi2: float
    df: int
    triplet_chi2: float
    n_triplets: int


class CycleSimulator:
    """Simulations of a null kernel for both cycle tests, with the work they share done once.

    ``statistics(seed)`` draws edge counts from ``p_null`` with the kernel's
    trials (:func:`sample_edge_counts`) and recomputes both statistics exactly as
    :func:`_wls` and :func:`_triplet_statistic` do on the data.  Simulated edges
    are a subset of the kernel's, so the pairs and the triangles (with their six
    edge indices) are found once on the kernel and only masked per simulation;
    the global chi^2 comes from the compiled reduction of
    :func:`detbal.analysis._wls.wls_chi2`.
    """

    def __init__(self, kernel: Kernel, p_null: np.ndarray, *, min_count: float = 0.0,
                 triplet_min_count: float = 0.0, max_variance: float = 100.0) -> None:
        self.kernel = kernel
        self.p_null = np.ascontiguousarray(p_null, dtype=np.float64)
        self.trials = np.ascontiguousarray(np.rint(kernel.trials), dtype=np.int64)
        self.ptr = row_pointer(kernel.src, kernel.n_states)
        self.min_count = float(min_count)
        self.tmin = float(triplet_min_count)
        self.max_variance = float(max_variance)
        n0 = kernel.n0
        e_fg, e_gf = kernel.pair_index()
        self.e_fg, self.e_gf = e_fg, e_gf
        f, g = kernel.src[e_fg], kernel.dst[e_fg]
        self.n0_f, self.n0_g = n0[f], n0[g]
        nodes, inverse = np.unique(np.concatenate([f, g]), return_inverse=True)
        self.n_nodes = len(nodes)
        self.a = inverse[:len(f)].astype(np.int64)
        self.b = inverse[len(f):].astype(np.int64)
        # every triangle a < b < h whose three pairs could be seen both ways, with its
        # edges in the order of _triplet_statistic: a->b, b->h, h->a, a->h, h->b, b->a
        good = (n0[f] > self.tmin) & (n0[g] > self.tmin)
        tri = _triangles(f[good], g[good])
        if len(tri):
            n = kernel.n_states
            ta, tb, th = tri[:, 0], tri[:, 1], tri[:, 2]
            order = [(ta, tb), (tb, th), (th, ta), (ta, th), (th, tb), (tb, ta)]
            self.tri_edges = np.stack([_edge_index(kernel.src, kernel.dst, n, u, v)
                                       for u, v in order], axis=1)
            self.tri_n0 = np.stack([n0[u] for u, _ in order], axis=1)
        else:
            self.tri_edges = np.zeros((0, 6), dtype=np.int64)
            self.tri_n0 = np.zeros((0, 6))

    def counts(self, seed: int) -> np.ndarray:
        """Simulated edge counts (float) on the kernel's edges."""
        return sample_edge_counts(self.kernel.src, self.p_null, self.trials, seed,
                                  ptr=self.ptr).astype(float)

    def statistics(self, seed: int) -> SimulatedStatistics:
        from detbal.analysis._wls import wls_chi2

        c = self.counts(seed)
        c_fg, c_gf = c[self.e_fg], c[self.e_gf]
        on = (c_fg > 0) & (c_gf > 0) & (c_fg > self.min_count) & (c_gf > self.min_count)
        c_fg, c_gf, n0_f, n0_g = c_fg[on], c_gf[on], self.n0_f[on], self.n0_g[on]
        y = np.log(c_fg / n0_f) - np.log(c_gf / n0_g)
        var = _log_count_variance(c_fg, n0_f) + _log_count_variance(c_gf, n0_g)
        chi2, df, converged = wls_chi2(self.a[on], self.b[on], y, var, self.n_nodes)
        if not converged:  # the core's iterative solve fell short: solve it directly
            k = self.kernel
            present = c > 0
            full = _wls(k.src[present], k.dst[present], c[present], k.n0, k.n_states, self.min_count)
            chi2, df = full.chi2, full.df
        t_chi2, t_n = 0.0, 0
        if len(self.tri_edges):
            cnt = c[self.tri_edges]
            valid = np.all((cnt > 0) & (cnt > self.tmin), axis=1)
            cnt, n0s = cnt[valid], self.tri_n0[valid]
            logs = np.log(cnt / n0s)
            var3 = 1.0 / cnt + 1.0 / n0s
            parts = {"L_fwd": logs[:, 0] + logs[:, 1] + logs[:, 2],
                     "s2f": var3[:, 0] + var3[:, 1] + var3[:, 2],
                     "L_bwd": logs[:, 3] + logs[:, 4] + logs[:, 5],
                     "s2b": var3[:, 3] + var3[:, 4] + var3[:, 5]}
            keep = (parts["s2f"] + parts["s2b"]) < self.max_variance
            t_chi2, t_n = _triplet_chi2({k: v[keep] for k, v in parts.items()})
        return SimulatedStatistics(chi2=float(chi2), df=int(df), triplet_chi2=t_chi2, n_triplets=t_n)


@dataclass(frozen=True)
class BalanceTests:
    """Both cycle tests from one shared parametric bootstrap."""

    global_test: GlobalTest
    triplet: TripletTest


def balance_tests(
    kernel: Kernel,
    *,
    bootstrap: int = 200,
    seed: int | None = 0,
    min_count: float = 0.0,
    triplet_min_count: float | None = None,
    max_variance: float = 100.0,
    progress: Progress | None = None,
    n_jobs: int = 1,
    stop: SequentialStop | None = None,
    backend: MapBackend | None = None,
) -> BalanceTests:
    """Global test and the paper's triplet test with bootstrap p-values.

    ``min_count`` applies to the global test's pair counts; ``triplet_min_count``
    is the paper's cut (0 for words, 1 for the fitting agent; default
    ``min_count``).  ``n_jobs`` > 1 runs the simulations in threads (same
    numbers: every simulation has its own seed); ``backend`` (:mod:`detbal.parallel`,
    e.g. a Dask cluster) runs them instead.  ``stop``: end the simulations
    early once the global test's decision is settled (:class:`SequentialStop`; the
    simulations done are the first of the full run's, and each test states its
    Monte-Carlo standard error).
    """
    n = kernel.n_states
    tmin = min_count if triplet_min_count is None else triplet_min_count
    wls = _wls(kernel.src, kernel.dst, kernel.count, kernel.n0, n, min_count)
    parts = _triplet_statistic(kernel.src, kernel.dst, kernel.count, kernel.n0, n, tmin, max_variance)
    t_chi2, t_ndf = _triplet_chi2(parts)
    p_glob = _p_asymptotic(wls.chi2, wls.df)
    p_trip = _p_asymptotic(t_chi2, t_ndf)
    sims_glob: list[float] = []
    sims_trip: list[float] = []
    chi2_glob: list[float] = []  # simulated chi^2 on the data's df, for the tail beyond them
    chi2_trip: list[float] = []
    if bootstrap > 0 and (wls.df > 0 or t_ndf > 0):
        sim = CycleSimulator(kernel, reversible_fit(kernel, wls), min_count=min_count,
                             triplet_min_count=tmin, max_variance=max_variance)

        def extreme(stat: SimulatedStatistics) -> bool | None:
            p_sim = _p_asymptotic(stat.chi2, stat.df)
            return None if math.isnan(p_sim) or math.isnan(p_glob) else p_sim <= p_glob

        for stat in map_until(sim.statistics, replicate_seeds(seed, bootstrap), extreme, stop,
                              n_jobs=n_jobs, progress=progress, backend=backend):
            sims_glob.append(_p_asymptotic(stat.chi2, stat.df))
            sims_trip.append(_p_asymptotic(stat.triplet_chi2, stat.n_triplets))
            chi2_glob.append(stat.chi2 * wls.df / stat.df if stat.df > 0 else math.nan)
            chi2_trip.append(stat.triplet_chi2 * t_ndf / stat.n_triplets if stat.n_triplets else math.nan)
    pv_glob = bootstrap_p_value(wls.chi2, chi2_glob, extreme=sims_glob, observed_extreme=p_glob)
    pv_trip = bootstrap_p_value(t_chi2, chi2_trip, extreme=sims_trip, observed_extreme=p_trip)
    glob = GlobalTest(
        n_pairs=len(wls.f), n_states=wls.n_states, n_components=wls.n_components, df=wls.df,
        chi2=wls.chi2, chi2_per_df=wls.chi2 / wls.df if wls.df > 0 else math.nan,
        p_value=pv_glob.value, p_asymptotic=p_glob,
        n_bootstrap=len(sims_glob), V=wls.V,
        residuals=wls.y - (wls.V[wls.f] - wls.V[wls.g]) if len(wls.f) else np.zeros(0),
        p=pv_glob, simulations_planned=bootstrap, mc_se=_mc_se(pv_glob),
    )
    trip = TripletTest(
        n_triplets=t_ndf, chi2=t_chi2, chi2_per_ndf=t_chi2 / t_ndf if t_ndf else math.nan,
        p_value=pv_trip.value, triplets=parts["triplets"],
        L_fwd=parts["L_fwd"], L_bwd=parts["L_bwd"], sigma2_fwd=parts["s2f"],
        sigma2_bwd=parts["s2b"], min_count=tmin, max_variance=max_variance, p=pv_trip,
        mc_se=_mc_se(pv_trip),
    )
    return BalanceTests(global_test=glob, triplet=trip)


def _mc_se(p: BootstrapPValue) -> float:
    """Monte-Carlo standard error of the simulated p-value (1 + k)/(1 + R)."""
    return mc_p_value(p.n_as_extreme, p.n_simulations)[1] if p.n_simulations > 0 else math.nan


def triplet_test(kernel: Kernel, *, min_count: float = 0.0, max_variance: float = 100.0,
                 bootstrap: int = 0, seed: int | None = 0) -> TripletTest:
    """The paper's statistic alone (``bootstrap`` > 0 adds a calibrated p-value)."""
    return balance_tests(kernel, bootstrap=bootstrap, seed=seed, triplet_min_count=min_count,
                         max_variance=max_variance).triplet


def global_test(kernel: Kernel, *, bootstrap: int = 200, seed: int | None = 0,
                min_count: float = 0.0) -> GlobalTest:
    """The global cycle test alone."""
    return balance_tests(kernel, bootstrap=bootstrap, seed=seed, min_count=min_count).global_test


# -- tests against a fitted potential -------------------------------------------
def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r as scipy.stats.pearsonr computes it (centred, scaled, unit vectors)."""
    xm = x - x.mean()
    ym = y - y.mean()
    xm = xm / np.max(np.abs(xm))
    ym = ym / np.max(np.abs(ym))
    r = float(np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym)))
    return max(-1.0, min(1.0, r))


@dataclass(frozen=True)
class PairTest:
    """log[T(g<-f)/T(f<-g)] against V(f) - V(g) over pairs observed both ways."""

    n_pairs: int
    pearson_r: float
    chi2_per_ndf: float
    n_beyond_range: int
    dV: np.ndarray
    log_ratio: np.ndarray
    sigma: np.ndarray

    def as_dict(self) -> dict[str, object]:
        return {"n_pairs": self.n_pairs, "pearson_r": self.pearson_r,
                "chi2_per_ndf": self.chi2_per_ndf, "n_beyond_range": self.n_beyond_range}


def pair_test(kernel: Kernel, V: np.ndarray, beta: float = 1.0) -> PairTest:
    """Pearson r and variance-weighted chi^2/ndf of the log-ratio against beta*dV.

    Pairs with |beta dV| > log(total attempts) are outside the measurable range
    and counted separately, not used.
    """
    e_fg, e_gf = kernel.pair_index()
    f, g = kernel.src[e_fg], kernel.dst[e_fg]
    ok = np.isfinite(V[f]) & np.isfinite(V[g])
    f, g, e_fg, e_gf = f[ok], g[ok], e_fg[ok], e_gf[ok]
    dV = beta * (V[f] - V[g])
    y = np.log(kernel.T[e_fg] / kernel.T[e_gf])
    var = _log_count_variance(kernel.count[e_fg], kernel.n0[f]) + \
        _log_count_variance(kernel.count[e_gf], kernel.n0[g])
    inside = np.abs(dV) <= math.log(max(kernel.total_attempts, 2.0))
    dV, y, var = dV[inside], y[inside], var[inside]
    r = pearson_r(dV, y) if len(dV) > 2 and np.std(dV) > 0 and np.std(y) > 0 else math.nan
    chi2 = float(np.mean((y - dV) ** 2 / var)) if len(dV) else math.nan
    return PairTest(n_pairs=len(dV), pearson_r=r, chi2_per_ndf=chi2,
                    n_beyond_range=int(np.count_nonzero(~inside)), dV=dV, log_ratio=y,
                    sigma=np.sqrt(var))


@dataclass(frozen=True)
class OneSidedTest:
    """Pairs seen one way only: the unseen T(f<-g) < 1/N0(g) bounds V(f) - V(g)."""

    n_pairs: int
    fraction_within: float
    dV: np.ndarray
    bound: np.ndarray

    def as_dict(self) -> dict[str, object]:
        return {"n_pairs": self.n_pairs, "fraction_within_bound": self.fraction_within}


def one_sided_test(kernel: Kernel, V: np.ndarray, beta: float = 1.0) -> OneSidedTest:
    """Fraction of one-sided pairs f -> g with beta(V_f - V_g) >= log(T(g<-f) N0(g)).

    Only pairs whose unseen direction had a chance (g was a source) and whose
    potentials are both identifiable count.
    """
    f, g = kernel.src, kernel.dst
    one_way = reverse_index(f, g, kernel.n_states) < 0
    ok = one_way & (kernel.counts.attempts[g] > 0) & kernel.kept[g] \
        & np.isfinite(V[f]) & np.isfinite(V[g])
    dV = beta * (V[f[ok]] - V[g[ok]])
    bound = np.log(kernel.T[ok] * kernel.n0[g[ok]])
    frac = float(np.mean(dV >= bound)) if len(dV) else math.nan
    return OneSidedTest(n_pairs=len(dV), fraction_within=frac, dV=dV, bound=bound)
