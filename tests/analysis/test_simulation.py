"""The fast simulation machinery gives the numbers of the direct definitions.

* the compiled, graph-reducing chi^2 of the global test (``_wls.wls_chi2``)
  equals the weighted least squares of ``balance._wls`` (Laplacian solve);
* ``CycleSimulator.statistics`` equals both statistics recomputed from scratch on
  the same simulated counts;
* threads (``n_jobs``) do not change any number.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from detbal.analysis.balance import (
    CycleSimulator,
    _triplet_chi2,
    _triplet_statistic,
    _wls,
    balance_tests,
    reversible_fit,
)
from detbal.analysis.counts import TransitionCounts, estimate_kernel
from detbal.analysis.resample import SequentialStop, map_replicates, map_until, mc_p_value, replicate_seeds
from detbal.analysis._wls import wls_chi2
from detbal.systems import driven_chain, metropolis_chain, sample_agent, sample_fixed


def _direct(a: np.ndarray, b: np.ndarray, y: np.ndarray, v: np.ndarray, n: int) -> tuple[float, int]:
    """chi^2 and df of the same weighted least squares, solved densely (lstsq)."""
    nodes = np.unique(np.concatenate([a, b]))
    local = {int(x): i for i, x in enumerate(nodes)}
    m = len(nodes)
    A = np.zeros((len(a), m))
    for e, (f, g) in enumerate(zip(a, b)):
        A[e, local[int(f)]] = 1.0
        A[e, local[int(g)]] = -1.0
    w = 1.0 / np.sqrt(v)
    x, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    resid = (y - A @ x) * w
    rank = np.linalg.matrix_rank(A)
    return float(resid @ resid), len(a) - rank


def _graph(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    if kind == "ring":
        n = 200
        i = np.arange(n)
        return i, (i + 1) % n, n
    if kind == "tree_plus_cycles":  # long chains, dangling trees, loops at branch nodes
        n = 120
        a = list(range(1, n))
        b = [int(rng.integers(0, k)) for k in range(1, n)]
        extra = rng.integers(0, n, size=(15, 2))
        for f, g in extra:
            if f != g:
                a.append(int(f))
                b.append(int(g))
        return np.array(a), np.array(b), n
    if kind == "two_components":
        ring = np.arange(30)
        a = np.concatenate([ring, 40 + np.arange(10)])
        b = np.concatenate([(ring + 1) % 30, 40 + (np.arange(10) + 3) % 10])
        return a, b, 60
    if kind == "dense":
        n = 40
        a, b = np.triu_indices(n, 1)
        keep = rng.random(len(a)) < 0.3
        return a[keep], b[keep], n
    if kind == "loops":  # cycles hanging from one branch node, a path to a K4 core
        a = [0, 1, 2, 0, 3, 4, 0, 5, 6, 0, 11, 7, 7, 7, 8, 8, 9]
        b = [1, 2, 0, 3, 4, 0, 5, 6, 0, 11, 7, 8, 9, 10, 9, 10, 10]
        return np.array(a), np.array(b), 12
    if kind == "forest":  # no cycle at all: df = 0
        n = 50
        a = np.arange(1, n)
        return a, a // 2, n
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["ring", "tree_plus_cycles", "two_components", "dense", "loops",
                                  "forest"])
def test_reduced_chi2_equals_least_squares(kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    a, b, n = _graph(kind, rng)
    # drop duplicate unordered pairs (the test's pairs are distinct by construction)
    key = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    a, b = key // n, key % n
    flip = rng.random(len(a)) < 0.5  # orientation must not matter beyond the sign of y
    a, b = np.where(flip, b, a), np.where(flip, a, b)
    y = rng.normal(0.0, 1.0, len(a))
    v = rng.uniform(0.1, 3.0, len(a))
    chi2, df, ok = wls_chi2(a.astype(np.int64), b.astype(np.int64), y, v, n)
    ref_chi2, ref_df = _direct(a, b, y, v, n)
    assert ok
    assert df == ref_df
    if df > 0:
        assert chi2 == pytest.approx(ref_chi2, rel=1e-10)


def test_ring_alone_is_one_cycle() -> None:
    n = 10_000
    i = np.arange(n, dtype=np.int64)
    y = np.full(n, 0.01)
    v = np.full(n, 2.0)
    chi2, df, ok = wls_chi2(i, (i + 1) % n, y, v, n)
    assert (df, ok) == (1, True)
    assert chi2 == pytest.approx((0.01 * n) ** 2 / (2.0 * n), rel=1e-12)


def _kernels():
    out = []
    for seed in range(3):
        ch = metropolis_chain(40, mean_degree=6, seed=seed)
        out.append((estimate_kernel(sample_agent(ch, 6000, seed=seed)), 0.0))
        ch = driven_chain(50, drive=0.5, seed=seed)
        out.append((estimate_kernel(sample_fixed(ch, 60, seed=seed)), 1.0))
    return out


@pytest.mark.parametrize("case", range(6))
def test_simulator_matches_direct_statistics(case: int) -> None:
    k, tmin = _kernels()[case]
    n = k.n_states
    wls = _wls(k.src, k.dst, k.count, k.n0, n, 0.0)
    sim = CycleSimulator(k, reversible_fit(k, wls), triplet_min_count=tmin)
    assert len(sim.tri_edges) > 0  # the cases exercise the triplet path too
    for s in replicate_seeds(case, 8):
        got = sim.statistics(s)
        c = sim.counts(s)
        present = c > 0
        direct = _wls(k.src[present], k.dst[present], c[present], k.n0, n, 0.0)
        parts = _triplet_statistic(k.src[present], k.dst[present], c[present], k.n0, n, tmin, 100.0)
        t_chi2, t_n = _triplet_chi2(parts)
        assert got.df == direct.df
        assert got.chi2 == pytest.approx(direct.chi2, rel=1e-9, abs=1e-9)
        assert (got.triplet_chi2, got.n_triplets) == (t_chi2, t_n)  # same arithmetic, bit for bit


def test_threads_give_the_same_p_values() -> None:
    k, _ = _kernels()[1]
    one = balance_tests(k, bootstrap=40, seed=4, triplet_min_count=1.0)
    two = balance_tests(k, bootstrap=40, seed=4, triplet_min_count=1.0, n_jobs=2)
    assert one.global_test.as_dict() == two.global_test.as_dict()
    assert one.triplet.as_dict() == two.triplet.as_dict() or math.isnan(one.triplet.p_value)


def test_map_replicates_keeps_order_and_reports_progress() -> None:
    ticks: list[int] = []
    seeds = list(range(20))
    assert map_replicates(lambda s: s * s, seeds, n_jobs=3, progress=ticks.append) == [s * s for s in seeds]
    assert ticks == [1] * 20


def test_no_pair_no_simulation() -> None:
    counts = TransitionCounts.from_rows([("a", "b", None, 5), ("b", "c", None, 4)])
    k = estimate_kernel(counts)
    t = balance_tests(k, bootstrap=10)
    assert t.global_test.n_bootstrap == 0 and math.isnan(t.global_test.p_value)


def _decision_cases():
    cases = []
    for seed in range(8):
        ch = metropolis_chain(40, mean_degree=6, seed=100 + seed)
        cases.append(estimate_kernel(sample_agent(ch, 5000, seed=seed)))
        ch = driven_chain(40, drive=0.25 + 0.05 * seed, seed=200 + seed)
        cases.append(estimate_kernel(sample_fixed(ch, 80, seed=seed)))
    return cases


def test_sequential_stop_keeps_the_decision_and_states_its_error() -> None:
    """Early stopping ends on a prefix of the full run's simulations, agrees with the full
    run's decision at alpha = 0.05, and reports the Monte-Carlo error of what it used."""
    rule = SequentialStop()
    stopped_early = 0
    for k in _decision_cases():
        full = balance_tests(k, bootstrap=200, seed=7).global_test
        seq = balance_tests(k, bootstrap=200, seed=7, stop=rule).global_test
        if math.isnan(full.p_value):
            continue
        assert (seq.p_value < 0.05) == (full.p_value < 0.05)
        assert seq.simulations_planned == 200 and seq.n_bootstrap <= full.n_bootstrap
        p, se = mc_p_value(seq.p.n_as_extreme, seq.p.n_simulations)
        assert seq.mc_se == pytest.approx(se)
        if seq.n_bootstrap < full.n_bootstrap:
            stopped_early += 1
            assert abs(p - rule.alpha) > rule.z * se  # it stopped because the decision was settled
        else:
            assert seq.p_value == full.p_value  # ran to the end: the same number
    assert stopped_early >= 4  # the rule does save simulations on clear cases


def test_sequential_stop_runs_a_prefix_of_the_seeds() -> None:
    calls: list[int] = []
    seeds = list(range(100))

    def fn(s: int) -> int:
        calls.append(s)
        return s

    out = map_until(fn, seeds, lambda s: False, SequentialStop(first=10, step=5))  # p -> 0: settles
    assert out == seeds[:len(out)] and len(out) < 100 and sorted(calls) == out
    assert map_until(fn, seeds, lambda s: None, SequentialStop()) == seeds  # nothing usable: all run
    assert map_until(fn, seeds, lambda s: False, None) == seeds


@pytest.mark.parametrize("kind", ["ring", "tree_plus_cycles", "two_components", "dense", "loops",
                                  "forest"])
def test_reduced_solution_equals_least_squares(kind: str) -> None:
    """wls_solve's x is the least-squares fit, with the lowest node of each component at 0."""
    from detbal.analysis._wls import wls_solve

    rng = np.random.default_rng(7 + len(kind))
    a, b, n = _graph(kind, rng)
    key = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    a, b = key // n, key % n
    y = rng.normal(0.0, 1.0, len(a))
    v = rng.uniform(0.1, 3.0, len(a))
    x, chi2, df, ok = wls_solve(a.astype(np.int64), b.astype(np.int64), y, v, n)
    used = np.zeros(n, dtype=bool)
    used[a] = used[b] = True
    assert ok and np.all(np.isnan(x[~used])) and np.all(np.isfinite(x[used]))
    # residual normal equations: sum_w resid at every node is 0 (the least-squares optimum)
    w = 1.0 / v
    r = w * (y - (x[a] - x[b]))
    grad = np.bincount(a, weights=r, minlength=n) - np.bincount(b, weights=r, minlength=n)
    assert np.max(np.abs(grad)) < 1e-8
    assert float(np.sum(w * (y - (x[a] - x[b])) ** 2)) == pytest.approx(chi2, rel=1e-9, abs=1e-9)
    # gauge: per component the lowest-numbered node is 0
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    _, lab = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    for c in np.unique(lab[used]):
        first = np.flatnonzero(used & (lab == c))[0]
        assert x[first] == 0.0


def test_wls_matches_the_direct_solve_on_sampled_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    """balance._wls through the reduction (used above WLS_DIRECT_MAX_NODES) gives the
    sparse-LU solution."""
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    import detbal.analysis.balance as balance

    monkeypatch.setattr(balance, "WLS_DIRECT_MAX_NODES", 0)
    for k, _ in _kernels():
        w = _wls(k.src, k.dst, k.count, k.n0, k.n_states, 0.0)
        nodes = np.unique(np.concatenate([w.f, w.g]))
        loc = {int(s): i for i, s in enumerate(nodes)}
        a = np.array([loc[int(s)] for s in w.f])
        b = np.array([loc[int(s)] for s in w.g])
        m, wt = len(nodes), 1.0 / w.var
        L = sparse.coo_matrix((np.concatenate([wt, wt, -wt, -wt, [1.0]]),
                               (np.concatenate([a, b, a, b, [0]]), np.concatenate([a, b, b, a, [0]]))),
                              shape=(m, m)).tocsc()
        rhs = np.bincount(a, weights=wt * w.y, minlength=m) - np.bincount(b, weights=wt * w.y, minlength=m)
        ref = spsolve(L, rhs)
        assert w.n_components == 1  # one component here: ground at its first node
        np.testing.assert_allclose(w.V[nodes], ref, atol=1e-9)
        assert w.chi2 == pytest.approx(float(np.sum(wt * (w.y - (ref[a] - ref[b])) ** 2)), rel=1e-10)
