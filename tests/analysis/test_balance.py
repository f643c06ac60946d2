"""Detailed-balance tests against ground truth: calibration, power, the paper's statistic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from detbal.analysis.balance import (
    _triangles,
    balance_tests,
    one_sided_test,
    pair_test,
    reversible_fit,
    _wls,
)
from detbal.analysis.counts import TransitionCounts, estimate_kernel
from detbal.analysis.potential import LeastActionPotential
from detbal.systems import metropolis_chain, sample_agent


def _kernel(seed: int, drive: float = 0.0, n_states: int = 60, n_transitions: int = 3000):
    chain = metropolis_chain(n_states, mean_degree=5, potential_scale=1.0, drive=drive, seed=seed)
    return chain, estimate_kernel(sample_agent(chain, n_transitions, children=3, seed=1000 + seed))


def test_global_p_values_are_calibrated_on_reversible_chains() -> None:
    """Over many reversible chains the bootstrap p-values are close to uniform."""
    p = []
    for rep in range(40):
        _, k = _kernel(rep)
        p.append(balance_tests(k, bootstrap=49, seed=rep).global_test.p_value)
    p = np.array(p)
    assert np.all(np.isfinite(p))
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert np.mean(p < 0.05) <= 0.15
    assert 0.35 < p.mean() < 0.65


def test_asymptotic_p_of_paper_style_variances_is_not_what_we_report() -> None:
    """The asymptotic chi^2 p-value is miscalibrated on sparse counts; the bootstrap fixes it."""
    asym, boot = [], []
    for rep in range(25):
        _, k = _kernel(rep)
        g = balance_tests(k, bootstrap=49, seed=rep).global_test
        asym.append(g.p_asymptotic)
        boot.append(g.p_value)
    assert stats.kstest(boot, "uniform").pvalue > stats.kstest(asym, "uniform").pvalue


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_test_rejects_driven_chains(seed: int) -> None:
    _, k = _kernel(seed, drive=1.5, n_states=60, n_transitions=8000)
    g = balance_tests(k, bootstrap=99, seed=seed).global_test
    assert g.df > 0
    assert g.rejects
    assert g.chi2_per_df > 1.5


def test_same_seed_same_p_value() -> None:
    _, k = _kernel(3)
    a = balance_tests(k, bootstrap=29, seed=11)
    b = balance_tests(k, bootstrap=29, seed=11)
    assert a.global_test.p_value == b.global_test.p_value
    assert a.triplet.p_value == b.triplet.p_value


def test_wls_recovers_exact_potential_from_exact_counts() -> None:
    """Counts proportional to a reversible kernel give zero residual and the true V."""
    chain = metropolis_chain(30, mean_degree=4, seed=5)
    big = 1e6
    counts = TransitionCounts.from_arrays(
        chain.labels, chain.src, chain.dst, chain.p * big, np.full(30, big)
    )
    k = estimate_kernel(counts)
    w = _wls(k.src, k.dst, k.count, k.n0, k.n_states, 0.0)
    assert w.chi2 < 1e-12
    V = w.V - np.nanmean(w.V)
    assert np.allclose(V, chain.potential - chain.potential.mean(), atol=1e-8)
    assert w.df == len(w.f) - 30 + 1


def test_reversible_fit_is_reversible() -> None:
    _, k = _kernel(7, drive=1.0)
    w = _wls(k.src, k.dst, k.count, k.n0, k.n_states, 0.0)
    p = reversible_fit(k, w)
    e_fg, e_gf = k.pair_index()
    f, g = k.src[e_fg], k.dst[e_fg]
    # the driven data are not reversible, but the fitted null kernel is: its log-ratios are
    # potential differences (up to a per-row rescaling, itself a potential shift), so every
    # cycle of the pair graph carries zero affinity and the WLS residual vanishes
    logratio = np.log(p[e_fg] / p[e_gf])
    assert w.chi2 > 1.0
    exact = TransitionCounts.from_arrays(k.states, k.src, k.dst, p * 1e9, np.full(k.n_states, 1e9))
    w2 = _wls(exact.src, exact.dst, exact.count, np.full(k.n_states, 1e9), k.n_states, 0.0)
    assert w2.chi2 < 1e-6 * max(1, len(f))
    V2 = w2.V
    assert np.allclose(logratio, V2[f] - V2[g], atol=1e-6)
    assert np.all(np.bincount(k.src, weights=p, minlength=k.n_states) <= 1 + 1e-12)


def test_triangles_brute_force() -> None:
    rng = np.random.default_rng(0)
    n = 25
    edges = {tuple(sorted(rng.choice(n, 2, replace=False))) for _ in range(80)}
    f = np.array([a for a, _ in edges])
    g = np.array([b for _, b in edges])
    found = {tuple(t) for t in _triangles(f, g)}
    brute = {
        (a, b, c)
        for a in range(n) for b in range(a + 1, n) for c in range(b + 1, n)
        if {(a, b), (b, c), (a, c)} <= edges
    }
    assert found == brute


def test_triplet_statistic_by_hand() -> None:
    """One 3-cycle: chi^2 = (L_bwd - L_fwd)^2 / (sum of 1/n_edge + 1/n_source)."""
    rows = [
        ("a", "b", None, 10), ("b", "c", None, 20), ("c", "a", None, 30),
        ("a", "c", None, 5), ("c", "b", None, 8), ("b", "a", None, 12),
        ("a", None, "imported", 85), ("b", None, "imported", 68), ("c", None, "imported", 62),
    ]
    k = estimate_kernel(TransitionCounts.from_rows(rows))
    t = balance_tests(k, bootstrap=0).triplet
    n0 = {"a": 100, "b": 100, "c": 100}
    fwd = math.log(10 / 100) + math.log(20 / 100) + math.log(30 / 100)
    bwd = math.log(5 / 100) + math.log(8 / 100) + math.log(12 / 100)
    var = sum(1 / n for n in (10, 20, 30, 5, 8, 12)) + 6 / 100
    assert n0["a"] == k.n0[k.counts.index("a")]
    assert t.n_triplets == 1
    assert t.chi2 == pytest.approx((bwd - fwd) ** 2 / var)
    assert math.isnan(t.p_value)  # no bootstrap asked for


def test_triplet_count_cut() -> None:
    rows = [
        ("a", "b", None, 1), ("b", "c", None, 20), ("c", "a", None, 30),
        ("a", "c", None, 5), ("c", "b", None, 8), ("b", "a", None, 12),
    ]
    k = estimate_kernel(TransitionCounts.from_rows(rows), min_source_count=0)
    assert balance_tests(k, bootstrap=0, triplet_min_count=0).triplet.n_triplets == 1
    assert balance_tests(k, bootstrap=0, triplet_min_count=1).triplet.n_triplets == 0


def test_pair_test_against_true_potential_is_tight() -> None:
    chain, k = _kernel(4, n_states=40, n_transitions=20000)
    V = chain.potential
    p = pair_test(k, V)
    assert p.n_pairs > 20
    assert p.pearson_r > 0.9
    assert 0.5 < p.chi2_per_ndf < 2.0


def test_one_sided_bound_with_fitted_potential() -> None:
    _, k = _kernel(6, n_states=80, n_transitions=4000)
    fit = LeastActionPotential().fit(k)
    o = one_sided_test(k, fit.V)
    assert o.n_pairs > 0
    assert 0.0 <= o.fraction_within <= 1.0
    # by construction each pair's bound uses an unseen reverse direction from a real source
    assert np.all(np.isfinite(o.bound))
