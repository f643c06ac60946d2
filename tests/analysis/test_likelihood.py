"""Likelihood potential, deviance test of quasi-symmetry and bootstrap p-value tails,
against chains with known potentials (detbal/systems.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats


from detbal.analysis._newton import CONVERGED_F, CONVERGED_G, minimise_action
from detbal.analysis.action import SOFTPLUS
from detbal.analysis.counts import TransitionCounts, estimate_kernel
from detbal.analysis.likelihood import (
    LikelihoodPotential,
    _domain,
    _problem,
    deviance_test,
    information_matrix,
    pair_data,
    quasi_symmetry,
)
from detbal.analysis.potential import LeastActionPotential
from detbal.analysis.pvalues import SIMULATED, TAIL, bootstrap_p_value, scaled_chi2_fit
from detbal.errors import DetbalError
from detbal.systems import driven_ring, metropolis_chain, sample_agent, sample_fixed


def _agent_kernel(seed: int, n: int = 300, attempts: int = 20000, scale: float = 1.5):
    chain = metropolis_chain(n, mean_degree=6.0, potential_scale=scale, seed=seed)
    return chain, estimate_kernel(sample_agent(chain, attempts, children=3, seed=seed + 100))


def _coverage(fit, truth: np.ndarray, stderr: np.ndarray) -> np.ndarray:
    V = fit.potential.V
    ok = np.isfinite(V) & np.isfinite(stderr)
    centred = truth - truth[np.isfinite(V)].mean()  # the fit's gauge: zero mean over fitted states
    return np.abs(V[ok] - centred[ok]) <= 1.96 * stderr[ok]


# -- the solver with a Gaussian prior ------------------------------------------------
def test_newton_with_prior_reaches_the_penalised_minimum() -> None:
    rng = np.random.default_rng(0)
    n, m = 40, 200
    src = rng.integers(0, n, m).astype(np.int32)
    dst = ((src + 1 + rng.integers(0, n - 1, m)) % n).astype(np.int32)
    w = rng.uniform(0.5, 3.0, m)
    centre = rng.normal(0, 1, n)
    ridge = 0.7
    W, _, status, _, _, _ = minimise_action(src, dst, w, SOFTPLUS, 1.0, np.zeros(n), ftol=1e-14,
                                            gtol=1e-10, max_iter=200, ridge=ridge, centre=centre)
    assert status in (CONVERGED_F, CONVERGED_G)
    z = W[src] - W[dst]
    s = 1.0 / (1.0 + np.exp(-z))
    grad = np.bincount(src, w * (s - 1), n) - np.bincount(dst, w * (s - 1), n) + ridge * (W - centre)
    assert np.max(np.abs(grad)) < 1e-6


# -- the likelihood potential ----------------------------------------------------------
def test_likelihood_potential_recovers_the_truth_with_calibrated_errors() -> None:
    """On well-sampled chains the Laplace intervals cover 95% of the true potentials."""
    inside, r = [], []
    for seed in (1, 2, 3):
        chain = metropolis_chain(250, mean_degree=6.0, potential_scale=1.5, seed=seed)
        k = estimate_kernel(sample_agent(chain, 25000, children=3, seed=seed + 100))
        fit = LikelihoodPotential().fit(k)
        assert 1.0 < fit.prior_width < 2.2  # empirical Bayes finds the width of the truth (1.5)
        inside.append(_coverage(fit, chain.potential, fit.stderr_laplace))
        ok = fit.potential.identifiable
        r.append(np.corrcoef(fit.potential.V[ok], chain.potential[ok])[0, 1])
    cover = np.concatenate(inside).mean()
    assert 0.92 <= cover <= 0.98, cover
    assert min(r) > 0.95


def test_likelihood_beats_least_action_on_sparse_agent_data() -> None:
    wins = 0
    for seed in (4, 5, 6):
        chain, k = _agent_kernel(seed, n=1500, attempts=9000)
        la = LeastActionPotential().fit(k)
        lik = LikelihoodPotential().fit(k).potential
        use = la.identifiable & lik.identifiable
        r_la = np.corrcoef(la.V[use], chain.potential[use])[0, 1]
        r_lik = np.corrcoef(lik.V[use], chain.potential[use])[0, 1]
        wins += r_lik > r_la
        # and it speaks for states least action must leave out
        assert lik.identifiable.sum() > la.identifiable.sum()
    assert wins == 3


def test_states_never_sampled_as_a_source_get_no_number() -> None:
    _, k = _agent_kernel(7, n=400, attempts=3000)
    fit = LikelihoodPotential().fit(k).potential
    never = k.counts.attempts == 0
    assert never.any()
    assert np.all(np.isnan(fit.V[never]))
    assert {fit.flags[i] for i in np.flatnonzero(never)} == {"not_sampled"}
    assert np.all(np.isnan(fit.stderr[never]))
    numbered = np.isfinite(fit.V)
    assert all(fit.flags[i] == "" for i in np.flatnonzero(numbered))
    # every numbered state shares a transition with another sampled source
    data = pair_data(k)
    touched = np.zeros(k.n_states, dtype=bool)
    touched[data.src] = True
    touched[data.dst] = True
    assert np.all(touched[numbered])


def test_bootstrap_errors_and_reference_gauge() -> None:
    _, k = _agent_kernel(8, n=150, attempts=12000)
    ref = k.states[int(np.flatnonzero(k.counts.attempts > 0)[0])]
    fit = LikelihoodPotential(bootstrap=30, seed=3, gauge=ref).fit(k)
    pot = fit.potential
    assert pot.value(ref) == 0.0
    ok = pot.identifiable
    assert np.isfinite(fit.stderr_bootstrap[ok]).mean() > 0.9
    # shrinkage: the bootstrap spread of the estimate sits below the posterior error
    assert np.nanmedian(fit.stderr_bootstrap[ok]) < np.nanmedian(fit.stderr_laplace[ok])
    assert np.isnan(fit.stderr_laplace[k.counts.index(ref)]) or \
        fit.stderr_laplace[k.counts.index(ref)] < 1e-6


def test_information_matrix_is_the_hessian() -> None:
    _, k = _agent_kernel(9, n=60, attempts=3000)
    data = pair_data(k)
    prob = _problem(data, _domain(data))
    W = np.random.default_rng(0).normal(0, 1, prob.m)

    def grad(x: np.ndarray) -> np.ndarray:
        s = 1.0 / (1.0 + np.exp(-(x[prob.src] - x[prob.dst])))
        c = prob.count * (s - 1.0)
        return np.bincount(prob.src, c, prob.m) - np.bincount(prob.dst, c, prob.m)

    H = information_matrix(prob, W).toarray()
    h = 1e-6
    for i in range(0, prob.m, 7):
        e = np.zeros(prob.m)
        e[i] = h
        assert np.allclose((grad(W + e) - grad(W - e)) / (2 * h), H[:, i], atol=1e-5)


def test_no_pairs_is_a_clear_error() -> None:
    counts = TransitionCounts.from_rows([("a", "b", None, 3), ("a", None, "bad", 2)])
    k = estimate_kernel(counts, min_source_count=0)
    with pytest.raises(DetbalError, match="likelihood potential"):
        LikelihoodPotential().fit(k)


# -- the deviance test -----------------------------------------------------------------------
def test_deviance_p_values_are_calibrated_on_reversible_chains() -> None:
    p = []
    for rep in range(40):
        chain = metropolis_chain(60, mean_degree=5, potential_scale=1.0, seed=rep)
        k = estimate_kernel(sample_agent(chain, 3000, children=3, seed=1000 + rep))
        test = deviance_test(k, simulations=49, seed=rep)
        assert test.df > 0
        p.append(test.p_value)
    p = np.array(p)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert np.mean(p < 0.05) <= 0.15


def test_deviance_df_counts_independent_cycles() -> None:
    chain = metropolis_chain(40, mean_degree=4, seed=0)
    k = estimate_kernel(sample_fixed(chain, 400, seed=1))
    qs = quasi_symmetry(pair_data(k))
    # dense sampling: every chain edge seen both ways, one component
    assert qs.n_states == 40 and qs.n_components == 1
    assert qs.n_pairs == len(chain.src) // 2
    assert qs.df == qs.n_pairs - 40 + 1


def test_driven_ring_is_very_unlikely_under_detailed_balance() -> None:
    """Affinity 0.6 per 3-cycle, 1,000 states, 40 attempts each: p far below the simulated floor."""
    ring = driven_ring(1000, affinity=0.6, potential_scale=0.0, seed=0)
    k = estimate_kernel(sample_fixed(ring, 40, seed=1))
    test = deviance_test(k, simulations=100, seed=0)
    assert test.p.method == TAIL
    assert test.p.bound == pytest.approx(1 / 101)
    assert test.p_value < 1e-6
    # the global test of balance.py reports a tail beyond its simulations too
    from detbal.analysis.balance import balance_tests

    g = balance_tests(k, bootstrap=50, seed=0).global_test
    assert g.p.method == TAIL and g.p_value < 1e-6 and g.as_dict()["p_upper_bound"] == pytest.approx(1 / 51)
    flat = driven_ring(1000, affinity=0.0, potential_scale=0.0, seed=0)
    rev = deviance_test(estimate_kernel(sample_fixed(flat, 40, seed=1)), simulations=100, seed=0)
    assert rev.p_value > 0.01 and rev.p.method == SIMULATED


# -- p-value tails --------------------------------------------------------------------------
def test_bootstrap_p_value_reports_bound_and_tail_beyond_the_simulations() -> None:
    rng = np.random.default_rng(0)
    sims = 2.0 * rng.chisquare(10, size=400)
    a, nu = scaled_chi2_fit(sims)
    assert a == pytest.approx(2.0, rel=0.15) and nu == pytest.approx(10, rel=0.2)
    far = 2.0 * stats.chi2.isf(1e-8, 10)
    p = bootstrap_p_value(far, sims)
    assert p.method == TAIL and p.n_as_extreme == 0
    assert p.bound == pytest.approx(1 / 401)
    assert 1e-10 < p.value < 1e-6  # the true tail is 1e-8
    near = bootstrap_p_value(float(np.median(sims)), sims)
    assert near.method == SIMULATED and near.bound is None
    assert near.value == pytest.approx(0.5, abs=0.05)
    assert math.isnan(bootstrap_p_value(1.0, []).value)


# -- through analyze -------------------------------------------------------------------------
def test_analyze_with_the_likelihood_estimator_reports_both_side_by_side(tmp_path) -> None:
    import csv
    import json

    from detbal.analysis.pipeline import analyze
    from detbal.io import export_table

    chain = metropolis_chain(120, mean_degree=5, potential_scale=1.0, drive=0.8, seed=5)
    counts = sample_agent(chain, 8000, children=3, seed=6)
    rows = [{"source": counts.states[s], "target": counts.states[d], "count": int(n)}
            for s, d, n in zip(counts.src, counts.dst, counts.count)]
    data = tmp_path / "driven.csv"
    export_table(rows, ["source", "target", "count"], data)
    la = analyze(data, tmp_path / "la", bootstrap=10, test_simulations=19, n_jobs=1, figures=False)
    lik = analyze(data, tmp_path / "lik", bootstrap=10, test_simulations=19, n_jobs=1,
                  estimator="likelihood")
    # the least-action numbers do not move when the likelihood potential is added
    assert la["potential"] == lik["potential"]
    assert "likelihood_potential" not in la and lik["likelihood_potential"]["prior_width_beta_V"] > 0
    for s in (la, lik):
        rms = s["nonequilibrium"]["cycle_affinity_rms"]
        assert set(rms) >= {"estimate", "ci_low", "ci_high"}
    # the deviance test's simulations refit the likelihood model: run with that estimator only
    assert la["detailed_balance"]["deviance"] is None and la["settings"]["deviance_test"] is False
    assert lik["detailed_balance"]["deviance"]["p_value_method"] in (SIMULATED, TAIL)
    with open(tmp_path / "lik" / "potential.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header[:4] == ["state", "V", "stderr", "stderr_bootstrap"] and "V_least_action" in header
    with open(tmp_path / "la" / "potential.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["state", "V", "stderr", "sources", "flag"]
    report = (tmp_path / "lik" / "report.md").read_text()
    assert "both estimators side by side" in report and "How far from equilibrium" in report
    assert json.loads((tmp_path / "lik" / "summary.json").read_text())["settings"]["estimator"] == "likelihood"
    with pytest.raises(DetbalError, match="estimator"):
        analyze(data, tmp_path / "x", estimator="magic")


@pytest.mark.parametrize("dense_limit", [3000, 10])
def test_inverse_diagonal_with_leaves_eliminated_is_exact(monkeypatch, dense_limit: int) -> None:
    from detbal.analysis import likelihood

    monkeypatch.setattr(likelihood, "_DENSE_LIMIT", dense_limit)
    _, k = _agent_kernel(11, n=200, attempts=1500)  # sparse: many leaves and chains
    data = pair_data(k)
    prob = _problem(data, _domain(data))
    H = information_matrix(prob, np.random.default_rng(1).normal(0, 1, prob.m), ridge=0.8)
    got = likelihood._inverse_diagonal(H)
    assert np.allclose(got, np.diag(np.linalg.inv(H.toarray())), rtol=1e-10)


def test_deviance_test_stops_early_with_the_same_decision() -> None:
    from detbal.analysis.resample import SequentialStop

    ring = driven_ring(400, affinity=0.6, potential_scale=0.0, seed=2)
    k = estimate_kernel(sample_fixed(ring, 40, seed=3))
    full = deviance_test(k, simulations=200, seed=0)
    early = deviance_test(k, simulations=200, seed=0, stop=SequentialStop())
    assert early.p.n_simulations < full.p.n_simulations
    assert early.rejects == full.rejects


def test_claude4_worked_example_with_the_likelihood_potential(claude_counts) -> None:
    """The paper's Claude-4 counts (uniform N0 = 4000): PERSONAL 4.07 and PROBLEMS 5.18 above
    ATTITUDE, as least action gives; the one-way states get numbers with wide errors."""
    k = estimate_kernel(claude_counts, "uniform", total_attempts=20000)
    fit = LikelihoodPotential(gauge="ATTITUDE").fit(k)
    pot = fit.potential
    assert pot.value("PERSONAL") == pytest.approx(math.log(3879 / 66), abs=0.01)
    assert pot.value("PROBLEMS") == pytest.approx(math.log(3558 / 20), abs=0.01)
    se = dict(zip(pot.states, fit.stderr_laplace))
    assert se["PERSONAL"] < 0.2 and se["TURKEY"] > 1.0 and se["BUZZY"] > 1.0


def test_quasi_symmetry_fit_recovers_where_newton_stops_early() -> None:
    """On this sparse chain Newton-CG stops on a failed line search two steps in (one pair's
    fitted mean was 0 and the deviance inf); L-BFGS-B takes over, and the fit reproduces
    every state's observed out-count (the likelihood equations)."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    from detbal.analysis.likelihood import pair_data, quasi_symmetry

    kernel = estimate_kernel(sample_agent(metropolis_chain(23_000, mean_degree=6.0, seed=1), 100_000, seed=2))
    data = pair_data(kernel)
    n = data.n_states
    graph = sparse.coo_matrix((np.ones(len(data.src)), (data.src, data.dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=True, connection="strong")
    sizes = np.bincount(labels)
    inside = (labels[data.src] == labels[data.dst]) & (sizes[labels[data.src]] >= 2)
    s, d, c = data.src[inside], data.dst[inside], data.count[inside]
    states = np.unique(np.concatenate([s, d]))
    local = np.full(n, -1)
    local[states] = np.arange(len(states))
    *_, status = minimise_action(local[s].astype(np.int32), local[d].astype(np.int32), c, SOFTPLUS, 1.0,
                                 data.offset[states], ftol=1e-12, gtol=1e-9, max_iter=1000)[:3]
    assert status not in (CONVERGED_F, CONVERGED_G)  # the case this test is about
    qs = quasi_symmetry(data)
    assert math.isfinite(qs.deviance)
    assert np.all(qs.mu > 0)
    # fitted out-count: observed edges plus the fitted reverse of one-way pairs
    one_way = ~qs.has_reverse
    fitted = np.bincount(qs.src, qs.mu, minlength=n) + np.bincount(qs.dst[one_way], qs.mu_reverse[one_way],
                                                                      minlength=n)
    assert np.allclose(fitted, np.bincount(qs.src, c, minlength=n), atol=1e-3)
