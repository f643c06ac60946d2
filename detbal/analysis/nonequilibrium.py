"""How far from equilibrium: cycle affinities and the entropy-production rate.

* **Cycle affinities.** Around a cycle f_0 -> f_1 -> ... -> f_0,
  A = sum_i log[T(f_{i+1}<-f_i) / T(f_i<-f_{i+1})]; detailed balance holds iff
  every A = 0.  Only pairs observed in both directions have a finite log-ratio
  y_fg = log[T(g<-f)/T(f<-g)] (its N0 terms cancel around a cycle), with the
  multinomial variance (1 - p)/n of each log count.  Reported for every 3-cycle
  whose three pairs were observed both ways, and for a cycle basis (the
  fundamental cycles of a breadth-first spanning tree of those pairs: one per
  pair off the tree, pairs - states + components of them).
* **RMS affinity.** sqrt of the inverse-variance weighted mean of A^2 over the
  3-cycles.  A^2 carries the counting noise (about its variance), so the plug-in
  value is corrected by a noise floor: the mean of the same statistic over
  simulations of the fitted reversible (quasi-symmetric) kernel with the same
  attempts per source, where every true affinity is 0.  The interval is the
  estimate minus/plus the spread of a bootstrap (attempts resampled per source
  from the estimated kernel) about its mean, clipped at 0 before the square root.
  The estimand is the RMS affinity of the true kernel over the cycles observed,
  so it does not grow with noise and runs of different sizes compare.
* **Entropy production.** For the kernel on the largest component of pairs
  observed both ways (mass not on those pairs stays put: self-loops, escapes and
  one-way transitions), with stationary distribution pi and fluxes
  J_fg = pi_f T(g<-f), sigma = sum_{f,g} J_fg log(J_fg / J_gf) per step
  (>= 0, 0 iff detailed balance).  Noise-floor corrected and with an interval in
  the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from detbal.analysis.counts import Kernel, _rates, reverse_pairs
from detbal.analysis.resample import (
    map_replicates,
    replicate_seeds,
    row_pointer,
    sample_edge_counts,
)
from detbal.parallel import MapBackend
from detbal.progress import Progress


def _log_count_variance(count: np.ndarray, n0: np.ndarray) -> np.ndarray:
    from detbal.analysis.balance import _log_count_variance as var

    return var(count, n0)


@dataclass(frozen=True)
class _Pairs:
    """Pairs f < g observed both ways: log-ratio y_fg and its variance."""

    f: np.ndarray
    g: np.ndarray
    e_fg: np.ndarray
    e_gf: np.ndarray
    y: np.ndarray
    var: np.ndarray


def _pairs(kernel: Kernel, count: np.ndarray,
           index: tuple[np.ndarray, np.ndarray] | None = None) -> _Pairs:
    """``index``: ``kernel.pair_index()`` when the caller needs the pairs of many counts on
    the same kernel (the pairs with both counts > 0 are a subset of it, in the same order)."""
    if index is None:
        ok = np.flatnonzero(count > 0)
        a, b = reverse_pairs(kernel.src[ok], kernel.dst[ok], kernel.n_states)
        e_fg, e_gf = ok[a], ok[b]
    else:
        both = (count[index[0]] > 0) & (count[index[1]] > 0)
        e_fg, e_gf = index[0][both], index[1][both]
    f, g = kernel.src[e_fg], kernel.dst[e_fg]
    n0 = kernel.n0
    y = np.log(count[e_fg] / n0[f]) - np.log(count[e_gf] / n0[g])
    var = _log_count_variance(count[e_fg], n0[f]) + _log_count_variance(count[e_gf], n0[g])
    return _Pairs(f, g, e_fg, e_gf, y, var)


def _pair_lookup(n: int, f: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    key = f.astype(np.int64) * n + g
    order = np.argsort(key)
    return key[order], order


def _signed(n: int, keys: tuple[np.ndarray, np.ndarray], a: np.ndarray,
            b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the pair {a, b} and the sign of a -> b relative to its stored f -> g."""
    sorted_key, order = keys
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pos = np.searchsorted(sorted_key, lo.astype(np.int64) * n + hi)
    return order[pos], np.where(a < b, 1.0, -1.0)


# -- 3-cycles -----------------------------------------------------------------------
@dataclass(frozen=True)
class TriangleAffinities:
    """A = y_ab + y_bc + y_ca for every 3-cycle a -> b -> c -> a (a < b < c) observed both ways."""

    triangles: np.ndarray  # (k, 3) state indices
    affinity: np.ndarray
    sigma: np.ndarray

    @property
    def z(self) -> np.ndarray:
        return self.affinity / self.sigma


def _triangle_index(kernel: Kernel, pairs: _Pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from detbal.analysis.balance import _triangles

    tri = _triangles(pairs.f, pairs.g)
    keys = _pair_lookup(kernel.n_states, pairs.f, pairs.g)
    if len(tri) == 0:
        z = np.zeros((0, 3), dtype=np.int64)
        return tri, z, z.astype(float)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    idx, sign = zip(*(_signed(kernel.n_states, keys, x, y) for x, y in ((a, b), (b, c), (c, a))))
    return tri, np.stack(idx, axis=1), np.stack(sign, axis=1)


def _triangle_values(y: np.ndarray, var: np.ndarray, idx: np.ndarray,
                     sign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.sum(sign * y[idx], axis=1), np.sum(var[idx], axis=1)


# -- a cycle basis --------------------------------------------------------------------
@dataclass(frozen=True)
class CycleBasis:
    """Fundamental cycles of a breadth-first spanning tree of the pairs observed both ways.

    Cycle k closes the off-tree pair (f_k, g_k) with the tree path from g_k back to
    f_k; ``length`` counts its pairs.
    """

    f: np.ndarray
    g: np.ndarray
    length: np.ndarray
    affinity: np.ndarray
    sigma: np.ndarray

    @property
    def z(self) -> np.ndarray:
        return self.affinity / self.sigma


@njit(cache=True, nogil=True)
def _bfs_forest(indptr, nbr, pair, in_graph, y, var, parent, phi, cvar, depth, tree):  # pragma: no cover - compiled
    """Breadth-first spanning forest of the pair graph, roots in increasing index, neighbours
    in increasing index (what scipy's ``breadth_first_order`` gives one component at a time),
    with phi, the cumulative variance and the depth along it."""
    n = len(in_graph)
    done = np.zeros(n, dtype=np.bool_)
    queue = np.empty(n, dtype=np.int64)
    for root in range(n):
        if not in_graph[root] or done[root]:
            continue
        done[root] = True
        head, tail = 0, 1
        queue[0] = root
        while head < tail:
            u = queue[head]
            head += 1
            for k in range(indptr[u], indptr[u + 1]):
                w = nbr[k]
                if done[w]:
                    continue
                done[w] = True
                queue[tail] = w
                tail += 1
                i = pair[k]
                parent[w] = u
                tree[i] = True
                s = 1.0 if u < w else -1.0
                phi[w] = phi[u] - s * y[i]
                cvar[w] = cvar[u] + var[i]
                depth[w] = depth[u] + 1


def _cycle_basis(n: int, pairs: _Pairs) -> tuple[CycleBasis, np.ndarray]:
    """Cycle basis and the BFS parent array (-1 at roots and outside the pair graph)."""
    f, g, y, var = pairs.f, pairs.g, pairs.y, pairs.var
    empty = CycleBasis(*(np.zeros(0, dtype=np.int64),) * 3, np.zeros(0), np.zeros(0))
    parent = np.full(n, -1, dtype=np.int64)
    if len(f) == 0:
        return empty, parent
    # both directions of every pair, sorted by (state, neighbour): a CSR adjacency list
    # that remembers the pair of each entry
    u = np.concatenate([f, g]).astype(np.int64)
    w = np.concatenate([g, f]).astype(np.int64)
    pair = np.concatenate([np.arange(len(f))] * 2)
    order = np.lexsort((w, u))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(u, minlength=n), out=indptr[1:])
    in_graph = np.zeros(n, dtype=np.bool_)
    in_graph[u] = True
    # potential phi along the tree (phi_child = phi_parent - y_{parent -> child}),
    # cumulative variance and depth from each root
    phi = np.zeros(n)
    cvar = np.zeros(n)
    depth = np.zeros(n, dtype=np.int64)
    tree = np.zeros(len(f), dtype=np.bool_)
    _bfs_forest(indptr, w[order], pair[order], in_graph, np.ascontiguousarray(y, dtype=np.float64),
                np.ascontiguousarray(var, dtype=np.float64), parent, phi, cvar, depth, tree)
    off = np.flatnonzero(~tree)
    a, b = f[off].copy(), g[off].copy()
    # lowest common ancestor by climbing the deeper end
    u, v = a.copy(), b.copy()
    length = np.ones(len(off), dtype=np.int64)
    while True:
        diff = u != v
        if not diff.any():
            break
        du, dv = depth[u], depth[v]
        up_u = diff & (du >= dv)
        up_v = diff & (dv > du)
        u[up_u] = parent[u[up_u]]
        v[up_v] = parent[v[up_v]]
        length += up_u + up_v
    lca = u
    affinity = y[off] - (phi[a] - phi[b])
    sigma = np.sqrt(var[off] + cvar[a] + cvar[b] - 2.0 * cvar[lca])
    return CycleBasis(a, b, length, affinity, sigma), parent


# -- entropy production ---------------------------------------------------------------
def stationary_distribution(n: int, src: np.ndarray, dst: np.ndarray, p: np.ndarray) -> np.ndarray:
    """pi of the chain with P(g|f) = p on the edges and the rest of each row staying put.

    The chain must be irreducible on the states it touches; states it does not
    touch get pi = 0.
    """
    from scipy.sparse.linalg import spsolve

    used = np.zeros(n, dtype=bool)
    used[src] = True
    used[dst] = True
    states = np.flatnonzero(used)
    local = np.full(n, -1, dtype=np.int64)
    local[states] = np.arange(len(states))
    m = len(states)
    s, d = local[src], local[dst]
    # pi Q = 0 with Q = P - I (generator of the jump part); replace one equation (row 0 of
    # Q^T) by sum pi = 1; built straight in CSC (no LIL row assignment)
    out_rate = np.bincount(s, weights=p, minlength=m)
    diag = np.arange(m)
    row = np.concatenate([d, diag])
    col = np.concatenate([s, diag])
    val = np.concatenate([p, -out_rate])
    keep = row != 0
    Qt = sparse.coo_matrix((np.concatenate([val[keep], np.ones(m)]),
                            (np.concatenate([row[keep], np.zeros(m, dtype=row.dtype)]),
                             np.concatenate([col[keep], diag]))), shape=(m, m)).tocsc()
    rhs = np.zeros(m)
    rhs[0] = 1.0
    pi_local = np.atleast_1d(spsolve(Qt, rhs))
    pi = np.zeros(n)
    pi[states] = np.clip(pi_local, 0.0, None) / np.clip(pi_local, 0.0, None).sum()
    return pi


def entropy_production(n: int, src: np.ndarray, dst: np.ndarray, p: np.ndarray) -> float:
    """sigma = sum J_fg log(J_fg / J_gf) per step at stationarity, J_fg = pi_f p(f -> g).

    Every edge needs its reverse (use the pairs observed both ways); the chain must
    be irreducible on its states (use one connected component).
    """
    from detbal.analysis.counts import reverse_index

    if len(src) == 0:
        return math.nan
    rev = reverse_index(src, dst, n)
    if np.any(rev < 0):
        raise ValueError("every edge needs its reverse for a finite entropy production")
    return _entropy_production(n, src, dst, p, rev)


def _entropy_production(n: int, src: np.ndarray, dst: np.ndarray, p: np.ndarray,
                        rev: np.ndarray) -> float:
    pi = stationary_distribution(n, src, dst, p)
    J = pi[src] * p
    Jr = J[rev]
    ok = (J > 0) & (Jr > 0)
    return float(np.sum(J[ok] * np.log(J[ok] / Jr[ok])))


def _main_pair_component(n: int, pairs: _Pairs) -> np.ndarray:
    """Mask over pairs: those in the largest connected component of the pair graph."""
    if len(pairs.f) == 0:
        return np.zeros(0, dtype=bool)
    graph = sparse.coo_matrix((np.ones(len(pairs.f)), (pairs.f, pairs.g)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels[pairs.f], minlength=labels.max() + 1)
    return labels[pairs.f] == int(np.argmax(sizes))


#: largest component whose stationary distribution is solved directly (SuperLU); beyond it
#: the entropy production is not computed: at 580,791 states one solve took over 16
#: CPU-minutes and 3 GiB, and the bootstrap needs one a replicate (docs/performance.md)
ENTROPY_MAX_STATES = 200_000


def _kernel_entropy(kernel: Kernel, count: np.ndarray, pairs: _Pairs,
                    max_states: int | None = None) -> tuple[float, int]:
    """Entropy production on the largest component of pairs seen both ways, and its number of
    states; NaN when there is none or it has more than ``max_states`` states."""
    main = _main_pair_component(kernel.n_states, pairs)
    if not main.any():
        return math.nan, 0
    both = np.concatenate([pairs.e_fg[main], pairs.e_gf[main]])
    order = np.argsort(both, kind="stable")
    e = both[order]
    # the reverse of every edge is its pair's other edge: its position in e
    m = int(np.count_nonzero(main))
    position = np.empty(2 * m, dtype=np.int64)
    position[order] = np.arange(2 * m)
    partner = np.concatenate([np.arange(m, 2 * m), np.arange(m)])
    rev = position[partner[order]]
    rates = _rates(count[e], kernel.n0[kernel.src[e]], kernel.mode)
    src = kernel.src[e]
    states = int(np.count_nonzero(np.diff(src)) + 1)
    if max_states is not None and states > max_states:
        return math.nan, states
    return _entropy_production(kernel.n_states, src, kernel.dst[e], rates, rev), states


# -- everything, with the bootstrap ---------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """A noise-corrected estimate with its interval and the uncorrected plug-in value."""

    estimate: float
    ci_low: float
    ci_high: float
    plug_in: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "plug_in": self.plug_in}


@dataclass(frozen=True)
class Nonequilibrium:
    """Cycle affinities, the RMS affinity and the entropy-production rate of one kernel."""

    triangles: TriangleAffinities
    basis: CycleBasis
    rms_affinity: Interval
    entropy_production: Interval
    entropy_states: int
    n_bootstrap: int
    level: float
    #: why the entropy production was not computed (None when it was, or had no pairs)
    entropy_skipped: str | None = None

    def as_dict(self) -> dict[str, object]:
        t, b = self.triangles, self.basis
        return {
            "cycle_affinity_rms": self.rms_affinity.as_dict(),
            "entropy_production_per_step": self.entropy_production.as_dict(),
            "entropy_production_states": self.entropy_states,
            "entropy_production_skipped": self.entropy_skipped,
            "three_cycles": len(t.affinity),
            "three_cycles_beyond_3_sigma": int(np.count_nonzero(np.abs(t.z) > 3)) if len(t.z) else 0,
            "basis_cycles": len(b.affinity),
            "basis_cycles_beyond_3_sigma": int(np.count_nonzero(np.abs(b.z) > 3)) if len(b.z) else 0,
            "bootstrap": self.n_bootstrap, "interval_level": self.level,
            "method": "plug-in on the estimated kernel minus its mean over simulations of the"
                      " fitted reversible kernel (noise floor); interval from the spread of a"
                      " bootstrap of the attempts, clipped at 0",
        }

    def top_cycles(self, k: int = 10, states: Sequence[str] | None = None) -> list[dict[str, object]]:
        """The cycles that break detailed balance most (largest |A| / sigma), 3-cycles and basis;
        ``states`` names the state indices."""

        def name(i: int) -> object:
            return states[i] if states is not None else i

        rows: list[dict[str, object]] = []
        t = self.triangles
        for i in range(len(t.affinity)):
            rows.append({"kind": "3-cycle", "states": [name(int(x)) for x in t.triangles[i]],
                         "length": 3, "affinity": float(t.affinity[i]), "sigma": float(t.sigma[i])})
        b = self.basis
        for i in range(len(b.affinity)):
            rows.append({"kind": "basis", "states": [name(int(b.f[i])), name(int(b.g[i]))],
                         "length": int(b.length[i]), "affinity": float(b.affinity[i]),
                         "sigma": float(b.sigma[i])})
        rows.sort(key=lambda r: -abs(r["affinity"]) / r["sigma"] if r["sigma"] > 0 else 0.0)
        return rows[:k]


def _weighted_ms(affinity: np.ndarray, weight: np.ndarray) -> float:
    ok = np.isfinite(affinity)
    w = weight[ok]
    return float(np.sum(w * affinity[ok] ** 2) / np.sum(w)) if w.sum() > 0 else math.nan


def _edge_positions(src: np.ndarray, dst: np.ndarray, n: int, qs: np.ndarray, qd: np.ndarray) -> np.ndarray:
    """Positions of edges (qs, qd) in the (src, dst) list sorted by (src, dst)."""
    key = src.astype(np.int64) * n + dst
    return np.searchsorted(key, qs.astype(np.int64) * n + qd)


def _log_ratios(cnt_fg: np.ndarray, cnt_gf: np.ndarray, n0_f: np.ndarray, n0_g: np.ndarray) -> np.ndarray:
    y = np.full(len(cnt_fg), np.nan)
    both = (cnt_fg > 0) & (cnt_gf > 0)
    y[both] = np.log(cnt_fg[both] / n0_f[both]) - np.log(cnt_gf[both] / n0_g[both])
    return y


def nonequilibrium(kernel: Kernel, *, bootstrap: int = 200, seed: int | None = 0,
                   level: float = 0.95, n_jobs: int = 1,
                   progress: Progress | None = None,
                   backend: MapBackend | None = None,
                   entropy_max_states: int | None = None) -> Nonequilibrium:
    """Affinities of 3-cycles and of a cycle basis, RMS affinity and entropy production.

    ``bootstrap`` replicates are drawn twice: from the estimated kernel (the spread
    of every estimate, and the bias correction of the entropy production) and from
    the fitted reversible kernel (the noise floor of the mean square affinity); in
    ``n_jobs`` threads, or on ``backend`` (:mod:`detbal.parallel`), same numbers.
    The entropy production is left out (NaN, with the reason in ``entropy_skipped``)
    when its component has more than ``entropy_max_states`` states (default
    :data:`ENTROPY_MAX_STATES`), so that the rest finishes on very large chains.
    """
    limit = ENTROPY_MAX_STATES if entropy_max_states is None else int(entropy_max_states)
    from detbal.analysis.likelihood import (
        pair_data,
        quasi_symmetric_kernel,
        quasi_symmetry,
    )

    index = kernel.pair_index()  # every replicate's pairs are a subset of these
    pairs = _pairs(kernel, kernel.count, index)
    tri, idx, sign = _triangle_index(kernel, pairs)
    A, v = _triangle_values(pairs.y, pairs.var, idx, sign)
    weight = 1.0 / v if len(v) else np.zeros(0)
    basis, _ = _cycle_basis(kernel.n_states, pairs)
    ms = _weighted_ms(A, weight) if len(A) else math.nan
    ep, ep_states = _kernel_entropy(kernel, kernel.count, pairs, limit)
    skipped = None
    if ep_states > limit:
        skipped = (f"its component has {ep_states:,} states, more than the {limit:,} whose"
                   " stationary distribution is solved directly")
    ms_boot, ep_boot, ms_null, ep_null = [], [], [], []
    n0 = kernel.n0
    if bootstrap > 0:
        seeds = replicate_seeds(seed, 2 * bootstrap)
        ptr = row_pointer(kernel.src, kernel.n_states)

        def resample(s: int) -> tuple[float, float]:
            cnt = sample_edge_counts(kernel.src, kernel.T, kernel.trials, s, ptr=ptr).astype(float)
            ms_b = math.nan
            if len(A):
                y = _log_ratios(cnt[pairs.e_fg], cnt[pairs.e_gf], n0[pairs.f], n0[pairs.g])
                ms_b = _weighted_ms(_triangle_values(y, pairs.var, idx, sign)[0], weight)
            ep_b = math.nan if skipped else _kernel_entropy(kernel, cnt, _pairs(kernel, cnt, index), limit)[0]
            return ms_b, ep_b

        for ms_b, ep_b in map_replicates(resample, seeds[:bootstrap], n_jobs=n_jobs, progress=progress,
                                         backend=backend):
            ms_boot.append(ms_b)
            ep_boot.append(ep_b)
        qs = quasi_symmetry(pair_data(kernel))
        src, dst, p = quasi_symmetric_kernel(kernel, qs)
        pos_fg = _edge_positions(src, dst, kernel.n_states, pairs.f, pairs.g)
        pos_gf = _edge_positions(src, dst, kernel.n_states, pairs.g, pairs.f)
        pos_kernel = _edge_positions(src, dst, kernel.n_states, kernel.src, kernel.dst)
        ptr_null = row_pointer(src, kernel.n_states)

        def null(s: int) -> tuple[float, float]:
            cnt = sample_edge_counts(src, p, kernel.trials, s, ptr=ptr_null).astype(float)
            ms_n = math.nan
            if len(A):
                y = _log_ratios(cnt[pos_fg], cnt[pos_gf], n0[pairs.f], n0[pairs.g])
                ms_n = _weighted_ms(_triangle_values(y, pairs.var, idx, sign)[0], weight)
            if skipped:
                return ms_n, math.nan
            on_kernel = cnt[pos_kernel]
            return ms_n, _kernel_entropy(kernel, on_kernel, _pairs(kernel, on_kernel, index), limit)[0]

        for ms_n, ep_n in map_replicates(null, seeds[bootstrap:], n_jobs=n_jobs, backend=backend):
            ms_null.append(ms_n)
            ep_null.append(ep_n)
    rms = _floor_interval(ms, np.array(ms_boot), np.array(ms_null), level, root=True)
    ep_iv = _floor_interval(ep, np.array(ep_boot), np.array(ep_null), level)
    return Nonequilibrium(
        triangles=TriangleAffinities(tri, A, np.sqrt(v)), basis=basis, rms_affinity=rms,
        entropy_production=ep_iv, entropy_states=ep_states, n_bootstrap=bootstrap, level=level,
        entropy_skipped=skipped,
    )


def _floor_interval(theta: float, boot: np.ndarray, null: np.ndarray, level: float,
                    root: bool = False) -> Interval:
    """theta - noise floor, the floor being the mean of theta over simulations of the fitted
    reversible kernel (where the true value is 0); the interval takes the bootstrap's
    spread about its mean; clipped at 0 (then square-rooted with ``root``)."""
    def out(x: float) -> float:
        return math.sqrt(max(x, 0.0)) if root else max(x, 0.0)

    plug = out(theta) if math.isfinite(theta) else math.nan
    b, z = boot[np.isfinite(boot)], null[np.isfinite(null)]
    if not math.isfinite(theta) or len(b) < 2 or len(z) < 2:
        return Interval(math.nan, math.nan, math.nan, plug)
    alpha = (1.0 - level) / 2.0
    est = theta - float(z.mean())
    lo = est - (float(np.quantile(b, 1.0 - alpha)) - float(b.mean()))
    hi = est + (float(b.mean()) - float(np.quantile(b, alpha)))
    return Interval(out(est), out(lo), out(hi), plug)
