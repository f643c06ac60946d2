"""Cycle affinities, RMS affinity and entropy production against chains with known drive."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detbal.analysis.counts import TransitionCounts, estimate_kernel
from detbal.analysis.nonequilibrium import (
    entropy_production,
    nonequilibrium,
    stationary_distribution,
)
from detbal.systems import driven_ring, metropolis_chain, sample_fixed


def _exact_kernel(chain, attempts: float = 1e6):
    """The kernel an endless run would estimate: counts = P * N0 on every chain edge."""
    n = chain.n_states
    counts = TransitionCounts.from_arrays(chain.labels, chain.src, chain.dst, chain.p * attempts,
                                          np.full(n, attempts))
    return estimate_kernel(counts)


def test_three_cycles_and_basis_of_an_exact_driven_ring() -> None:
    ring = driven_ring(50, affinity=0.6, potential_scale=1.0, seed=0)
    ne = nonequilibrium(_exact_kernel(ring), bootstrap=0)
    t = ne.triangles
    assert len(t.affinity) == 50
    # oriented a < b < c: i -> i+1 -> i+2 -> i carries +0.6, the wrap-around ones -0.6
    assert np.allclose(np.abs(t.affinity), 0.6, atol=1e-9)
    assert np.all(t.sigma < 0.02)  # counts of 1e6 x P
    b = ne.basis
    assert len(b.affinity) == 100 - 50 + 1  # pairs - states + components
    assert np.all(b.length >= 3)
    # every basis affinity is a sum of triangle affinities and (once) the loop's n a / 2
    assert np.allclose(np.round(b.affinity / 0.3), b.affinity / 0.3, atol=1e-6)


def test_reversible_exact_kernel_has_no_affinity_and_no_entropy_production() -> None:
    chain = metropolis_chain(80, mean_degree=5, potential_scale=1.5, seed=2)
    ne = nonequilibrium(_exact_kernel(chain), bootstrap=0)
    assert len(ne.basis.affinity) > 10
    assert np.max(np.abs(ne.basis.affinity)) < 1e-9
    assert np.max(np.abs(ne.triangles.affinity)) < 1e-9
    assert entropy_production(chain.n_states, chain.src, chain.dst, chain.p) == pytest.approx(0, abs=1e-12)
    pi = stationary_distribution(chain.n_states, chain.src, chain.dst, chain.p)
    boltzmann = np.exp(-chain.potential) / np.exp(-chain.potential).sum()
    assert np.allclose(pi, boltzmann, rtol=1e-8)


def test_entropy_production_of_a_three_state_cycle() -> None:
    a, b = 0.5, 0.2  # P(i -> i+1), P(i -> i-1): uniform pi, sigma = (a - b) log(a / b)
    src = np.array([0, 0, 1, 1, 2, 2])
    dst = np.array([1, 2, 2, 0, 0, 1])
    p = np.array([a, b, a, b, a, b])
    assert entropy_production(3, src, dst, p) == pytest.approx((a - b) * math.log(a / b), rel=1e-12)
    with pytest.raises(ValueError, match="reverse"):
        entropy_production(3, src[:5], dst[:5], p[:5])


@pytest.mark.parametrize("attempts", [40, 120])
def test_driven_ring_rms_affinity_and_entropy_production(attempts: int) -> None:
    """About 0.6 on the ring at either run size; entropy production within its interval."""
    ring = driven_ring(1000, affinity=0.6, potential_scale=0.0, seed=0)
    ne = nonequilibrium(estimate_kernel(sample_fixed(ring, attempts, seed=1)), bootstrap=60, seed=0)
    rms = ne.rms_affinity
    assert 0.4 < rms.estimate < 0.8
    assert rms.ci_low < 0.6 < rms.ci_high
    assert rms.ci_low > 0.0
    assert rms.plug_in > rms.estimate  # the plug-in carries the counting noise
    truth = entropy_production(ring.n_states, ring.src, ring.dst, ring.p)
    ep = ne.entropy_production
    assert ep.ci_low <= truth <= ep.ci_high
    assert abs(ep.estimate - truth) < abs(ep.plug_in - truth)


def test_reversible_ring_intervals_reach_zero() -> None:
    ring = driven_ring(1000, affinity=0.0, potential_scale=0.5, seed=3)
    ne = nonequilibrium(estimate_kernel(sample_fixed(ring, 40, seed=4)), bootstrap=60, seed=0)
    assert ne.rms_affinity.ci_low == 0.0
    assert ne.rms_affinity.estimate < 0.3
    assert ne.entropy_production.ci_low == 0.0
    d = ne.as_dict()
    assert set(d["cycle_affinity_rms"]) >= {"estimate", "ci_low", "ci_high"}
    top = ne.top_cycles(5)
    assert len(top) == 5 and all(r["sigma"] > 0 for r in top)


def test_entropy_production_of_a_driven_random_graph_within_its_interval() -> None:
    chain = metropolis_chain(600, mean_degree=6, drive=0.3, potential_scale=1.0, seed=4)
    truth = entropy_production(chain.n_states, chain.src, chain.dst, chain.p)
    ne = nonequilibrium(estimate_kernel(sample_fixed(chain, 300, seed=1)), bootstrap=40, seed=0)
    ep = ne.entropy_production
    assert ep.ci_low <= truth <= ep.ci_high
    assert ep.estimate == pytest.approx(truth, rel=0.3)


def test_entropy_production_beyond_the_direct_solve_is_left_out_and_the_rest_is_unchanged(monkeypatch) -> None:
    """A component over the size limit: no stationary solve at all (a 10^6-state chain would take
    hours), the reason is reported, and the cycle affinities are those of a full run."""
    from detbal.analysis import nonequilibrium as NE

    ring = driven_ring(300, affinity=0.6, potential_scale=0.0, seed=0)
    k = estimate_kernel(sample_fixed(ring, 40, seed=1))
    full = nonequilibrium(k, bootstrap=20, seed=0)
    solves = []
    real = NE.stationary_distribution
    monkeypatch.setattr(NE, "stationary_distribution", lambda *a: solves.append(1) or real(*a))
    capped = nonequilibrium(k, bootstrap=20, seed=0, entropy_max_states=100)
    assert solves == []
    assert math.isnan(capped.entropy_production.estimate) and capped.entropy_states == full.entropy_states
    assert "300 states, more than the 100" in capped.entropy_skipped
    assert capped.rms_affinity == full.rms_affinity
    assert full.entropy_skipped is None and math.isfinite(full.entropy_production.estimate)
    assert capped.as_dict()["entropy_production_skipped"] == capped.entropy_skipped
    monkeypatch.setattr(NE, "ENTROPY_MAX_STATES", 100)  # the default limit is the module's
    assert nonequilibrium(k, bootstrap=0).entropy_skipped == capped.entropy_skipped


def test_driven_ring_through_the_cli(tmp_path) -> None:
    """synth --ring-affinity 0.6 (1,000 states x 40 attempts), then analyze: the deviance test
    says 'very unlikely' beyond its simulations and the RMS affinity comes out near 0.6."""
    import json

    from detbal.cli import main

    data = tmp_path / "ring.csv"
    assert main(["-q", "synth", "--out", str(data), "--states", "1000", "--transitions", "40000",
                 "--ring-affinity", "0.6", "--scale", "0", "--sampling", "fixed"]) == 0
    out = tmp_path / "out"
    assert main(["-q", "analyze", str(data), "--out", str(out), "--no-figures", "--bootstrap", "40",
                 "--test-simulations", "60", "--jobs", "1", "--deviance"]) == 0
    s = json.loads((out / "summary.json").read_text())
    d = s["detailed_balance"]["deviance"]
    assert d["p_value_method"] == "scaled_chi2_tail" and d["p_value"] < 1e-6
    assert d["p_upper_bound"] == pytest.approx(1 / 61)
    rms = s["nonequilibrium"]["cycle_affinity_rms"]
    assert rms["ci_low"] < 0.6 < rms["ci_high"] and 0.4 < rms["estimate"] < 0.8
    assert s["nonequilibrium"]["top_cycles"][0]["states"][0].startswith("s")


def test_cycle_basis_tree_is_scipys_breadth_first_forest_and_replicate_pairs_match() -> None:
    """The compiled forest gives scipy's breadth-first tree of every component (roots in
    index order), on sparse counts with many components; pairs masked from the kernel's
    pair index equal pairs found afresh."""
    from scipy import sparse
    from scipy.sparse.csgraph import breadth_first_order

    from detbal.analysis.nonequilibrium import _cycle_basis, _pairs
    from detbal.analysis.resample import sample_edge_counts

    kernel = estimate_kernel(sample_fixed(metropolis_chain(3000, mean_degree=4.0, seed=5), 3, seed=6))
    pairs = _pairs(kernel, kernel.count)
    n = kernel.n_states
    _, parent = _cycle_basis(n, pairs)
    graph = sparse.coo_matrix((np.ones(len(pairs.f)), (pairs.f, pairs.g)), shape=(n, n)).tocsr()
    graph = graph + graph.T
    expected = np.full(n, -1)
    done = np.zeros(n, dtype=bool)
    roots = 0
    for root in np.unique(np.concatenate([pairs.f, pairs.g])):
        if not done[root]:
            order, pred = breadth_first_order(graph, root, directed=False, return_predecessors=True)
            done[order] = True
            expected[order[1:]] = pred[order[1:]]
            roots += 1
    assert roots > 50
    assert np.array_equal(parent, expected)
    index = kernel.pair_index()
    for s in range(3):
        cnt = sample_edge_counts(kernel.src, kernel.T, kernel.trials, s).astype(float)
        a, b = _pairs(kernel, cnt), _pairs(kernel, cnt, index)
        assert np.array_equal(a.e_fg, b.e_fg) and np.array_equal(a.e_gf, b.e_gf)
        assert np.array_equal(a.y, b.y) and np.array_equal(a.var, b.var)
