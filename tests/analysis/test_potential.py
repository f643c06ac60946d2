"""The least-action functional and the fitted potential (METHOD.md section 4)."""

from __future__ import annotations

import math

import numpy as np
import pytest


from detbal.analysis.action import action, action_and_gradient, k_zero, kernel_value
from detbal.analysis.counts import TransitionCounts, estimate_kernel
from detbal.analysis.potential import LeastActionPotential, fit_potential
from detbal.errors import DetbalError
from detbal.systems import driven_chain, metropolis_chain, sample_agent

KERNELS = ("exp", "softplus")


# -- the action --------------------------------------------------------------
def _random_problem(seed: int, n: int = 30, m: int = 150, scale: float = 1.5):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, n, size=m)
    dst = (src + 1 + rng.integers(0, n - 1, size=m)) % n
    V = rng.normal(0.0, scale, size=n)
    w = rng.uniform(0.01, 1.0, size=m)
    return V, src.astype(np.int32), dst.astype(np.int32), w


def _central_difference(fun, V: np.ndarray, h: float = 1e-5) -> np.ndarray:
    out = np.empty_like(V)
    for i in range(len(V)):
        up, down = V.copy(), V.copy()
        up[i] += h
        down[i] -= h
        out[i] = (fun(up) - fun(down)) / (2 * h)
    return out


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("beta, norm", [(1.0, 1.0), (0.37, 1.0), (2.5, 7.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_finite_differences(kernel, parallel, beta, norm, seed) -> None:
    V, src, dst, w = _random_problem(seed)

    def S(x: np.ndarray) -> float:
        return action_and_gradient(x, src, dst, w, kernel=kernel, beta=beta,
                                   normalisation=norm, parallel=parallel)[0]

    value, grad = action_and_gradient(V, src, dst, w, kernel=kernel, beta=beta,
                                      normalisation=norm, parallel=parallel)
    numeric = _central_difference(S, V)
    assert np.allclose(grad, numeric, rtol=1e-6, atol=1e-8 * max(1.0, value))
    # the numpy reference agrees with the compiled value
    assert value == pytest.approx(action(V, src, dst, w, kernel=kernel, beta=beta,
                                         normalisation=norm), rel=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_serial_and_parallel_agree(kernel) -> None:
    V, src, dst, w = _random_problem(3, n=500, m=20_000)
    s1, g1 = action_and_gradient(V, src, dst, w, kernel=kernel, beta=0.8, parallel=False)
    s2, g2 = action_and_gradient(V, src, dst, w, kernel=kernel, beta=0.8, parallel=True)
    s3, g3 = action_and_gradient(V, src, dst, w, kernel=kernel, beta=0.8)  # automatic choice
    assert s2 == pytest.approx(s1, rel=1e-12) and s3 == pytest.approx(s1, rel=1e-12)
    assert np.allclose(g1, g2, rtol=1e-10, atol=1e-14) and np.allclose(g1, g3, rtol=1e-10, atol=1e-14)
    # the gradient of a gauge-invariant functional sums to zero
    assert abs(g1.sum()) < 1e-9 * np.abs(g1).sum()


def test_grad_out_is_filled_in_place() -> None:
    V, src, dst, w = _random_problem(4)
    buf = np.full(len(V), 123.0)
    _, g = action_and_gradient(V, src, dst, w, grad_out=buf)
    assert g is buf
    assert np.allclose(buf, action_and_gradient(V, src, dst, w)[1])


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_values(kernel) -> None:
    x = np.array([-3.0, -0.5, 0.0, 0.4, 5.0])
    expected = np.exp(-x / 2) if kernel == "exp" else np.log1p(np.exp(-x))
    assert np.allclose(kernel_value(kernel, x), expected)
    assert kernel_value(kernel, np.array([0.0]))[0] == pytest.approx(k_zero(kernel))
    # convex and decreasing: downhill moves cost less than K(0)
    assert np.all(np.diff(kernel_value(kernel, x)) < 0)


def test_unknown_kernel() -> None:
    V, src, dst, w = _random_problem(0)
    with pytest.raises(ValueError):
        action_and_gradient(V, src, dst, w, kernel="gauss")
    with pytest.raises(ValueError):
        k_zero("gauss")
    with pytest.raises(ValueError):
        kernel_value("gauss", V)


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_exp_clipped_path_for_huge_potentials(beta) -> None:
    V, src, dst, w = _random_problem(5, scale=1.0)
    shift = 2000.0 / beta  # |beta V / 2| far beyond the factorised path's safe range
    s0, g0 = action_and_gradient(V, src, dst, w, beta=beta)
    s1, g1 = action_and_gradient(V + shift, src, dst, w, beta=beta)
    assert np.isfinite(s1) and np.all(np.isfinite(g1))
    assert s1 == pytest.approx(s0, rel=1e-10)  # S depends on differences only
    assert np.allclose(g1, g0, rtol=1e-8, atol=1e-12)
    # a genuine huge spread: finite, equal to the numpy value, clipped not overflowing
    V2 = V.copy()
    V2[0] = -5000.0
    s2, g2 = action_and_gradient(V2, src, dst, w, beta=beta)
    assert np.isfinite(s2) and np.all(np.isfinite(g2))
    assert s2 == pytest.approx(action(V2, src, dst, w, beta=beta), rel=1e-10)


# -- the Claude-4 worked example ---------------------------------------------
@pytest.fixture(scope="module")
def claude4(claude_counts):
    return estimate_kernel(claude_counts, "uniform", total_attempts=20000)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("gauge", ["ATTITUDE", "mean"])
def test_claude4_worked_example(claude4, kernel, gauge) -> None:
    assert np.all(claude4.n0 == 4000.0)
    fit = fit_potential(claude4, kernel=kernel, gauge=gauge)
    dv_personal = fit.value("PERSONAL") - fit.value("ATTITUDE")
    dv_problems = fit.value("PROBLEMS") - fit.value("ATTITUDE")
    assert dv_personal == pytest.approx(math.log(3879 / 66), abs=1e-4)
    assert dv_problems == pytest.approx(math.log(3558 / 20), abs=1e-4)
    assert round(dv_personal, 2) == 4.07 and round(dv_problems, 2) == 5.18
    flags = dict(zip(fit.states, fit.flags))
    assert flags["TURKEY"] and flags["BUZZY"]
    assert flags["BUZZY"] == "never_entered"
    assert flags["ATTITUDE"] == flags["PERSONAL"] == flags["PROBLEMS"] == ""
    assert math.isnan(fit.value("TURKEY")) and math.isnan(fit.value("BUZZY"))
    if gauge == "ATTITUDE":
        assert fit.value("ATTITUDE") == 0.0
    else:
        assert np.nanmean(fit.V) == pytest.approx(0.0, abs=1e-9)
    assert fit.gauge == gauge and fit.kernel == kernel and fit.k0 == k_zero(kernel)
    assert fit.converged
    assert 0 < fit.action < fit.k0  # downhill moves dominate
    records = {r["state"]: r for r in fit.to_records()}
    assert records["BUZZY"]["V"] == "" and records["BUZZY"]["flag"] == "never_entered"
    assert float(records["PERSONAL"]["V"]) == pytest.approx(fit.value("PERSONAL"), abs=1e-5)


def test_reference_state_off_every_cycle_is_refused(claude4) -> None:
    with pytest.raises(DetbalError, match="BUZZY"):
        fit_potential(claude4, gauge="BUZZY")
    with pytest.raises(DetbalError):
        fit_potential(claude4, gauge="NOT_A_STATE")


def test_bad_options() -> None:
    with pytest.raises(ValueError):
        LeastActionPotential(kernel="gauss")
    with pytest.raises(DetbalError):
        LeastActionPotential(beta=0.0)


# -- two states: the analytic solution -----------------------------------------
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("n_fg, n_gf", [(50, 5), (3, 300), (40, 40), (999, 1)])
@pytest.mark.parametrize("mode", ["empirical", "uniform"])
def test_two_state_pair(kernel, beta, n_fg, n_gf, mode) -> None:
    # f -> g n_fg times out of 1000 attempts, g -> f n_gf times out of 400
    rows = [("f", "g", None, n_fg), ("f", None, "empty", 1000 - n_fg),
            ("g", "f", None, n_gf), ("g", "g", None, 400 - n_gf)]
    k = estimate_kernel(TransitionCounts.from_rows(rows), mode)
    T = {(k.states[s], k.states[d]): t for s, d, t in zip(k.src, k.dst, k.T)}
    fit = fit_potential(k, kernel=kernel, beta=beta, gauge="g")
    expected = math.log(T[("f", "g")] / T[("g", "f")]) / beta
    assert fit.value("f") - fit.value("g") == pytest.approx(expected, abs=1e-5)
    assert fit.flags == ("", "")


# -- flags -------------------------------------------------------------------
def test_flags_for_states_outside_the_cycles() -> None:
    rows = [
        ("A", "B", None, 5), ("B", "C", None, 5), ("C", "A", None, 5), ("B", "A", None, 2),
        ("X", "A", None, 4),                        # only left: never entered
        ("A", "Y", None, 3), ("Y", None, "empty", 2),  # only entered: never left
        ("C", "P", None, 2), ("P", "Q", None, 2), ("Q", None, "empty", 2),  # P: a path, no cycle
        ("D", "E", None, 3), ("E", "D", None, 2),  # a cycle of its own
        ("Z", "A", None, 1),                        # N0 = 1: dropped
    ]
    k = estimate_kernel(TransitionCounts.from_rows(rows), "empirical")
    fit = fit_potential(k)
    flags = dict(zip(fit.states, fit.flags))
    assert flags == {
        "A": "", "B": "", "C": "", "X": "never_entered", "Y": "never_left", "P": "one_sided",
        "Q": "never_left", "D": "other_component", "E": "other_component", "Z": "dropped",
    }
    for s, f in flags.items():
        assert math.isnan(fit.value(s)) == bool(f)
    assert fit.identifiable.tolist() == [f == "" for f in fit.flags]
    assert np.nanmean(fit.V) == pytest.approx(0.0, abs=1e-9)


def test_beyond_measurable_range_is_flagged() -> None:
    # a ladder where each step is 60x more likely down than up: V spans ~4 log 60
    states = [f"s{i}" for i in range(5)]
    rows = []
    for i in range(4):
        rows += [(states[i], states[i + 1], None, 60), (states[i + 1], states[i], None, 1)]
    rows += [(s, None, "empty", 3) for s in states]
    k = estimate_kernel(TransitionCounts.from_rows(rows), "empirical")
    fit = fit_potential(k)
    flags = dict(zip(fit.states, fit.flags))
    # the top of the ladder is ~2 log 60 = 8.2 above the median state s2; log(total) = 5.6
    assert flags["s0"] == "beyond_range"
    assert flags["s2"] == ""
    assert math.isnan(fit.value("s0"))
    assert np.isfinite(fit.V_fit[k.counts.index("s0")])
    # the rule: |beta V - median| > log(total attempts), whatever the reporting gauge
    centre = np.median(fit.V_fit)
    expected = ["beyond_range" if abs(v - centre) > math.log(k.total_attempts) else "" for v in fit.V_fit]
    assert list(fit.flags) == expected
    # beta rescales the criterion: beta*V, not V, is bounded by log(total attempts)
    for beta in (0.1, 10.0):
        other = fit_potential(k, beta=beta)
        assert other.flags == fit.flags
        assert np.allclose(beta * other.V_fit, fit.V_fit, atol=1e-5)


# -- ground truth: reversible chains -------------------------------------------
@pytest.fixture(scope="module")
def reversible():
    chain = metropolis_chain(80, mean_degree=6.0, potential_scale=1.0, escape=0.1, seed=11)
    counts = sample_agent(chain, 25_000, seed=12)
    return chain, counts, estimate_kernel(counts)


@pytest.fixture(scope="module")
def reversible_fits(reversible):
    _, _, k = reversible
    return {name: fit_potential(k, kernel=name) for name in KERNELS}


@pytest.mark.parametrize("kernel", KERNELS)
def test_recovers_true_potential(reversible, reversible_fits, kernel) -> None:
    chain, counts, _ = reversible
    fit = reversible_fits[kernel]
    assert fit.converged
    use = fit.identifiable & (counts.attempts > 1)
    assert use.sum() >= 60
    r = np.corrcoef(fit.V[use], chain.potential[use])[0, 1]
    assert r > 0.95
    # beta V is identified, including its scale: slope near 1
    slope = np.polyfit(chain.potential[use], fit.V[use], 1)[0]
    assert 0.85 < slope < 1.15


def test_exp_and_softplus_agree(reversible, reversible_fits) -> None:
    a, b = reversible_fits["exp"], reversible_fits["softplus"]
    assert a.flags == b.flags
    ok = a.identifiable
    assert np.corrcoef(a.V[ok], b.V[ok])[0, 1] > 0.995
    assert np.max(np.abs(a.V[ok] - b.V[ok])) < 0.3


def test_beta_rescales_the_potential(reversible, reversible_fits) -> None:
    _, _, k = reversible
    fit2 = fit_potential(k, kernel="exp", beta=2.0)
    ok = reversible_fits["exp"].identifiable
    assert np.allclose(2.0 * fit2.V[ok], reversible_fits["exp"].V[ok], atol=1e-4)


def test_bootstrap_coverage_and_reproducibility(reversible) -> None:
    chain, counts, k = reversible
    fit = fit_potential(k, bootstrap=60, seed=5)
    ok = fit.identifiable & np.isfinite(fit.stderr)
    assert ok.sum() >= 60
    assert np.all(fit.stderr[ok] > 0)
    truth = chain.potential - chain.potential[fit.identifiable].mean()
    inside = np.abs(fit.V[ok] - truth[ok]) <= 1.96 * fit.stderr[ok]
    assert 0.85 <= inside.mean() <= 0.99
    assert fit.bootstrap_V is not None and fit.bootstrap_V.shape == (60, k.n_states)

    again = fit_potential(k, bootstrap=60, seed=5)
    np.testing.assert_array_equal(again.bootstrap_V, fit.bootstrap_V)
    np.testing.assert_array_equal(again.stderr, fit.stderr)


@pytest.mark.parametrize("gauge", ["mean", "s0"])
def test_bootstrap_parallel_equals_serial(reversible, gauge) -> None:
    _, _, k = reversible
    one = fit_potential(k, bootstrap=12, seed=9, n_jobs=1, gauge=gauge)
    two = fit_potential(k, bootstrap=12, seed=9, n_jobs=2, gauge=gauge)
    np.testing.assert_array_equal(one.bootstrap_V, two.bootstrap_V)
    np.testing.assert_array_equal(one.stderr, two.stderr)
    other = fit_potential(k, bootstrap=12, seed=10, gauge=gauge)
    assert not np.array_equal(other.bootstrap_V, one.bootstrap_V, equal_nan=True)


def test_bootstrap_progress_is_called(reversible) -> None:
    _, _, k = reversible
    calls: list[int] = []
    fit_potential(k, bootstrap=4, seed=1, progress=lambda n=1, **kw: calls.append(n))
    assert sum(calls) == 4


@pytest.mark.parametrize("kernel", KERNELS)
def test_driven_chain_still_fits(kernel) -> None:
    chain = driven_chain(60, drive=1.0, potential_scale=1.0, seed=21)
    counts = sample_agent(chain, 15_000, seed=22)
    fit = fit_potential(estimate_kernel(counts), kernel=kernel)
    ok = fit.identifiable
    assert ok.sum() >= 40
    assert np.all(np.isfinite(fit.V[ok]))
    assert np.all(np.isnan(fit.V[~ok]))
    assert np.isfinite(fit.action) and fit.action > 0
    assert all(f in {"", "never_entered", "never_left", "one_sided", "other_component",
                     "dropped", "beyond_range"} for f in fit.flags)


def test_claude4_bootstrap_matches_binomial_errors(claude4) -> None:
    fit = fit_potential(claude4, gauge="ATTITUDE", bootstrap=200, seed=2)
    se = dict(zip(fit.states, fit.stderr))
    assert se["ATTITUDE"] == 0.0
    # var log(n/N0) ~ (1 - n/N0)/n for a binomial count n out of N0 = 4000
    for state, n_in, n_out in (("PERSONAL", 66, 3879), ("PROBLEMS", 20, 3558)):
        expected = math.sqrt((1 - n_in / 4000) / n_in + (1 - n_out / 4000) / n_out)
        assert se[state] == pytest.approx(expected, rel=0.2)
    assert math.isnan(se["TURKEY"]) and math.isnan(se["BUZZY"])


@pytest.mark.parametrize("rows, flags", [
    ([("A", "B", None, 3), ("B", "C", None, 3), ("C", None, "empty", 3)],
     ("never_entered", "one_sided", "never_left")),
    ([("A", None, "empty", 3)], ("never_entered",)),
])
def test_no_cycle_at_all(rows, flags) -> None:
    k = estimate_kernel(TransitionCounts.from_rows(rows))
    fit = fit_potential(k, bootstrap=3)
    assert fit.flags == flags
    assert np.all(np.isnan(fit.V)) and np.all(np.isnan(fit.stderr))
    assert fit.action == 0.0
