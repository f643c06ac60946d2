"""Synthetic ground-truth chains and the agent-style samplers."""

from __future__ import annotations

import numpy as np
import pytest

from detbal.analysis.counts import reverse_pairs
from detbal.systems import driven_chain, metropolis_chain, sample_agent, sample_fixed

SIZES = [(2, 2.0), (12, 4.0), (150, 6.0)]


def _row_sums(chain) -> np.ndarray:
    return np.bincount(chain.src, weights=chain.p, minlength=chain.n_states)


def _cycle_residual(chain) -> float:
    """Largest |log ratio - (V_f - V_g)| after the best potential fit (0 iff reversible)."""
    e_fg, e_gf = reverse_pairs(chain.src, chain.dst, chain.n_states)
    assert len(e_fg) * 2 == len(chain.src)  # every edge has its reverse
    y = np.log(chain.p[e_fg] / chain.p[e_gf])
    A = np.zeros((len(e_fg), chain.n_states))
    A[np.arange(len(e_fg)), chain.src[e_fg]] = 1.0
    A[np.arange(len(e_fg)), chain.dst[e_fg]] = -1.0
    V, *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(np.max(np.abs(A @ V - y)))


@pytest.mark.parametrize("n, degree", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("escape", [0.0, 0.3])
def test_metropolis_detailed_balance(n, degree, seed, escape) -> None:
    chain = metropolis_chain(n, mean_degree=degree, potential_scale=2.0, escape=escape, seed=seed)
    assert chain.reversible
    assert chain.n_states == n and chain.labels[0] == "s0"
    assert np.all(chain.p > 0) and np.all(chain.src != chain.dst)
    assert np.all(_row_sums(chain) <= 1.0 - escape + 1e-12)
    pi = np.exp(-chain.potential)
    e_fg, e_gf = reverse_pairs(chain.src, chain.dst, n)
    flow_fg = pi[chain.src[e_fg]] * chain.p[e_fg]
    flow_gf = pi[chain.src[e_gf]] * chain.p[e_gf]
    np.testing.assert_allclose(flow_fg, flow_gf, rtol=1e-12)
    # log[P(g|f) / P(f|g)] = V_f - V_g exactly
    f, g = chain.src[e_fg], chain.dst[e_fg]
    np.testing.assert_allclose(np.log(chain.p[e_fg] / chain.p[e_gf]),
                               chain.potential[f] - chain.potential[g], atol=1e-10)
    assert abs(chain.potential.mean()) < 1e-12
    # edges sorted by (source, target), undirected graph connected
    key = chain.src.astype(np.int64) * n + chain.dst
    assert np.all(np.diff(key) > 0)
    _assert_connected(chain)


def _assert_connected(chain) -> None:
    seen = {0}
    frontier = [0]
    nbrs: dict[int, list[int]] = {}
    for s, d in zip(chain.src.tolist(), chain.dst.tolist()):
        nbrs.setdefault(s, []).append(d)
    while frontier:
        nxt = frontier.pop()
        for d in nbrs.get(nxt, []):
            if d not in seen:
                seen.add(d)
                frontier.append(d)
    assert len(seen) == chain.n_states


def test_metropolis_is_reproducible() -> None:
    a = metropolis_chain(40, seed=5)
    b = metropolis_chain(40, seed=5)
    c = metropolis_chain(40, seed=6)
    np.testing.assert_array_equal(a.p, b.p)
    np.testing.assert_array_equal(a.potential, b.potential)
    assert not np.array_equal(a.potential, c.potential)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("drive", [0.5, 1.5])
def test_driven_chain_breaks_detailed_balance(seed, drive) -> None:
    chain = driven_chain(40, drive=drive, mean_degree=5.0, seed=seed, escape=0.1)
    assert not chain.reversible
    assert np.all(_row_sums(chain) <= 0.9 + 1e-12)
    assert np.all(chain.p > 0)
    # some cycle carries affinity: no potential reproduces every log ratio
    assert _cycle_residual(chain) > 0.05 * drive
    assert _cycle_residual(metropolis_chain(40, mean_degree=5.0, seed=seed, escape=0.1)) < 1e-9


def _chain() -> object:
    return metropolis_chain(50, mean_degree=5.0, potential_scale=1.0, escape=0.2, seed=7)


@pytest.mark.parametrize("n_transitions, children", [(1, 3), (10, 3), (1000, 3), (1001, 4), (500, 1)])
def test_sample_agent_makes_exactly_n_attempts(n_transitions, children) -> None:
    chain = _chain()
    counts = sample_agent(chain, n_transitions, children=children, seed=1)
    assert counts.total_attempts == n_transitions
    moved = np.bincount(counts.src, weights=counts.count, minlength=counts.n_states)
    np.testing.assert_allclose(moved + counts.self_loops + counts.escapes, counts.attempts)
    assert counts.states == chain.labels


def test_sample_agent_sources_come_from_the_found_set() -> None:
    chain = _chain()
    counts = sample_agent(chain, 3000, start=4, seed=2)
    sources = set(np.flatnonzero(counts.attempts > 0).tolist())
    entered = set(counts.dst.tolist())
    assert 4 in sources
    # a state can only be a prompt once it was found: the start state or a target
    assert sources <= entered | {4}
    # every observed edge is an edge of the chain
    chain_edges = set(zip(chain.src.tolist(), chain.dst.tolist()))
    assert set(zip(counts.src.tolist(), counts.dst.tolist())) <= chain_edges


def test_sample_agent_frequencies_follow_the_kernel() -> None:
    chain = metropolis_chain(6, mean_degree=3.0, potential_scale=0.5, escape=0.25, seed=3)
    counts = sample_agent(chain, 60_000, seed=4)
    assert counts.escapes.sum() / counts.total_attempts == pytest.approx(0.25, abs=0.01)
    T_hat = counts.count / counts.attempts[counts.src]
    p = {(s, d): q for s, d, q in zip(chain.src.tolist(), chain.dst.tolist(), chain.p)}
    for s, d, t in zip(counts.src.tolist(), counts.dst.tolist(), T_hat):
        assert t == pytest.approx(p[(s, d)], abs=0.02)


def test_sample_agent_reproducible() -> None:
    chain = _chain()
    a = sample_agent(chain, 2000, seed=9)
    b = sample_agent(chain, 2000, seed=9)
    c = sample_agent(chain, 2000, seed=10)
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_array_equal(a.attempts, b.attempts)
    assert not np.array_equal(a.attempts, c.attempts)


@pytest.mark.parametrize("per_state", [1, 50])
def test_sample_fixed(per_state) -> None:
    chain = _chain()
    counts = sample_fixed(chain, per_state, seed=3)
    assert np.all(counts.attempts == per_state)
    moved = np.bincount(counts.src, weights=counts.count, minlength=counts.n_states)
    np.testing.assert_allclose(moved + counts.self_loops + counts.escapes, counts.attempts)
    assert np.all(counts.self_loops >= 0) and np.all(counts.escapes >= 0)
    again = sample_fixed(chain, per_state, seed=3)
    np.testing.assert_array_equal(again.count, counts.count)
    np.testing.assert_array_equal(again.escapes, counts.escapes)


def test_sample_fixed_rates_and_unseeded_draws() -> None:
    chain = _chain()
    counts = sample_fixed(chain, 4000, seed=1)
    assert counts.escapes.sum() / counts.total_attempts == pytest.approx(0.2, abs=0.01)
    # seed=None gives fresh draws each call, not a fixed stream
    a = sample_fixed(chain, 200, seed=None)
    b = sample_fixed(chain, 200, seed=None)
    assert not (np.array_equal(a.src, b.src) and np.array_equal(a.count, b.count))
