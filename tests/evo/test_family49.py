"""The 49-parameter family: defaults, vectorised vs reference, fit, direction statistic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detbal.analysis.counts import TransitionCounts, estimate_kernel
from detbal.errors import DetbalError
from detbal.evo.family49 import (
    DEFAULTS,
    PARAM_NAMES,
    family_expression,
    family_potential,
    fit_family49,
    param_array,
)
from detbal.evo.features import FAMILY_COLUMNS, featurize
from detbal.evo.transitions import direction_stats, load_run
from detbal.store import Attempt, RunStore
from support.family49 import random_expressions, random_params, synthetic_kernel
from support.family49_reference import family_potential_reference

EDGE_CASES = [
    "", "   ", "\t\n", "(", ")", "(((", ")))(((", "((param1)", "param1)", "param1 +", "+",
    "param1", "log_v_k_nu", "pi", "1", "2", "tanh", "tan", "log", "log10", "exp",
    "exp(log(exp(log(param1))))", "log(exp(param1*log_v_k_nu))", "sqrt(param1)", "sqrt(abs(param1))",
    "sqrt (abs (param1)) + sqrt(param2)", "param1/param2", "param1/(param2 - param2)",
    "param1**param2", "param1^2", "param1 ** 2 ^ 3", "2**(-param1)",
    " + ".join(f"param{i}" for i in range(1, 13)),
    "*".join(f"param{i}" for i in range(1, 8)) + "*log_v_k_nu",
    "param10*log_v_k_nu + param11", "param1*param1*param1*param2", "param1*log_v_k_nu",
    "param1 * log_v_k_nu + param2", "param1*(log_v_k_nu - param2)", "param3 * ( log_v_k_nu - param4 )",
    "1/(1+exp(-param1*(log_v_k_nu-param2)))", "param1/(1 + exp(param2))", "tanh(param1*log_v_k_nu)",
    "tanh (param1)", "log(1 + exp(param1*log_v_k_nu))", "log10(1 + exp(param1))",
    "arcsin(arccos(arctan(square(param1))))", "sin(param1)+cos(param2)+tan(param3)", "abs(abs(param1))",
    "3.14159*param1", "1e-3*param1", "x*y", "param1 @ param2", "param1 $ log_v_k_nu", "é + param1",
    "PARAM1*LOG_V_K_NU", "Tanh(Param1)", "param1, param2", "param1 = 2", "lambda: 1",
    "param1*log_v_k_nu + param2*tanh(param3*(log_v_k_nu - param4)) + log(1 + exp(param5)) + param6",
    "param1*log_v_k_nu+param2*log_v_k_nu**2+param3*log_v_k_nu**3+param4/(1+exp(param5*(log_v_k_nu-param6)))",
    "  param1  *  log_v_k_nu  ", "param1\t*\tlog_v_k_nu", "paramx + param", "param0",
    "log_v_k_nux * param1", "x_log_v_k_nu", "1/(1+exp", "log(1+exp", "exp (param1)", "log (param1)",
]


EXPRESSIONS = EDGE_CASES + random_expressions(300, seed=7)


def test_defaults_are_the_published_49() -> None:
    assert len(DEFAULTS) == 49 and PARAM_NAMES == tuple(DEFAULTS)
    assert DEFAULTS["func_penalty"] == 0.28 and DEFAULTS["log_v_bonus"] == 1.1
    assert DEFAULTS["overall_factor"] == 2.0 and DEFAULTS["pattern_affinity_threshold"] == 0.85
    assert DEFAULTS["simple_length_threshold"] == 50 and DEFAULTS["short_length_threshold"] == 25


@pytest.mark.parametrize("engine", ["numba", "numpy"])
@pytest.mark.parametrize("mode", ["fixed", "paper"])
@pytest.mark.parametrize(("param_seed", "spread"), [(None, 0.0), (1, 0.2), (2, 0.5), (3, 1.5)])
def test_vectorised_equals_reference(engine: str, mode: str, param_seed: int | None, spread: float) -> None:
    params = None if param_seed is None else random_params(param_seed, spread)
    F = featurize(EXPRESSIONS, "ansatz", mode=mode)
    V = family_potential(F, params, engine=engine)  # type: ignore[arg-type]
    R = np.array([family_potential_reference(e, params, mode) for e in EXPRESSIONS])
    assert np.all(np.isfinite(V))
    np.testing.assert_allclose(V, R, rtol=0, atol=1e-12)


def test_mapping_params_fill_defaults() -> None:
    F = featurize(EXPRESSIONS[:40], "ansatz")
    V1 = family_potential(F, {"overall_factor": 3.0})
    V0 = family_potential(F)
    empty = F.column("fam_empty") > 0
    np.testing.assert_allclose(V1[~empty], 1.5 * V0[~empty], atol=1e-12)
    np.testing.assert_array_equal(V1[empty], DEFAULTS["empty_input_potential"])


def test_hand_computed_value() -> None:
    # fixed mode: length 23, one unguarded sqrt, one '/', one parameter, the variable
    E = (math.log(24) / 4 + 0.28 + 0.5 + 0.9 + 0.2 + 0.5 * (3 - 1)
         - 1.1 - 1.0 / 6.0 - 1.0)
    expected = 2.0 * (-1.0 + 2.0 * (1.0 - math.exp(-E)))
    F = featurize(["sqrt(param1)/log_v_k_nu"], "ansatz")
    assert family_potential(F)[0] == pytest.approx(expected, abs=1e-12)
    assert family_potential_reference("sqrt(param1)/log_v_k_nu") == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("mode", "energy"),
    [
        # paper: the string seen is "param1*tan(log)": 2 functions, 1 trig, one log, 1 param
        ("paper", math.log(16) / 4 + 2 * 0.28 + 0.75 + 0.5 * (3 - 1) - 0.6 - 1.0),
        # fixed: tanh, the variable, 2 patterns, proximity 0.7: the energy clips to 0
        ("fixed", 0.0),
    ],
)
def test_hand_computed_tokenizer_modes(mode: str, energy: float) -> None:
    expected = 2.0 * (-1.0 + 2.0 * (1.0 - math.exp(-energy)))
    F = featurize(["param1*tanh(log_v_k_nu)"], "ansatz", mode=mode)
    assert family_potential(F)[0] == pytest.approx(expected, abs=1e-12)


def test_paper_mode_never_sees_the_variable() -> None:
    F = featurize(random_expressions(200, seed=3), "ansatz", mode="paper")
    for col in ("fam_has_log_v", "fam_linear_logv", "fam_centered_linear", "fam_tanh"):
        assert F.column(col).sum() == 0.0
    G = featurize(random_expressions(200, seed=3), "ansatz", mode="fixed")
    assert G.column("fam_has_log_v").sum() > 0 and G.column("fam_tanh").sum() > 0
    assert not np.allclose(family_potential(F), family_potential(G))


def test_range_and_empty() -> None:
    F = featurize(EXPRESSIONS, "ansatz")
    V = family_potential(F)
    empty = F.column("fam_empty") > 0
    assert np.all(V[empty] == -1.0)
    assert np.all((V[~empty] >= -2.0) & (V[~empty] <= 2.0))


@pytest.mark.parametrize(
    ("params", "message"),
    [({"nope": 1.0}, "unknown"), ({"K": 0.0}, "K"), ({"pattern_count_divisor": -1.0}, "divisor"),
     ({"func_penalty": float("nan")}, "finite"), (np.ones(48), "49")],
)
def test_bad_params_are_rejected(params: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        param_array(params)  # type: ignore[arg-type]


def test_words_cannot_use_the_family() -> None:
    with pytest.raises(DetbalError, match="ansatz"):
        family_potential(featurize(["BUZZY"], "words"))


# -- fitting --------------------------------------------------------------------------

@pytest.mark.parametrize("penalty", ["exp", "softplus"])
def test_cmaes_lowers_the_action_and_is_reproducible(penalty: str) -> None:
    kernel, F = synthetic_kernel()
    a = fit_family49(F, kernel, method="cmaes", seed=4, max_evals=400, penalty=penalty)
    b = fit_family49(F, kernel, method="cmaes", seed=4, max_evals=400, penalty=penalty)
    assert a.action < 0.95 * a.action_default
    assert a.action == b.action and a.params == b.params
    np.testing.assert_array_equal(a.V, b.V)
    assert a.mode == "fixed" and a.method == "cmaes" and a.n_evals >= 400
    assert list(a.history) == sorted(a.history, reverse=True)
    assert a.summary()["direction"]["n"] == a.direction["n"]


def test_cmaes_leaves_global_random_state_alone_and_takes_a_generator() -> None:
    import random

    kernel, F = synthetic_kernel(n_states=30, seed=2)
    np_state, py_state = np.random.get_state(), random.getstate()
    a = fit_family49(F, kernel, method="cmaes", seed=9, max_evals=60)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert random.getstate() == py_state
    b = fit_family49(F, kernel, method="cmaes", seed=np.random.default_rng(9), max_evals=60)
    assert a.params == b.params and a.action == b.action


@pytest.mark.parametrize("param_seed", [None, 1, 2])
def test_family_formula_equals_the_engines(param_seed: int | None) -> None:
    """The family as a registry formula: same values, parses back from its string, LaTeX."""
    from detbal.evo import registry

    params = None if param_seed is None else random_params(param_seed, 0.5)
    F = featurize(EXPRESSIONS, "ansatz")
    X = np.column_stack([F.column(c) for c in FAMILY_COLUMNS])
    expr = family_expression(params)
    expected = family_potential(F, params, engine="numpy")
    np.testing.assert_allclose(registry.to_numpy(expr, FAMILY_COLUMNS)(X), expected, rtol=0, atol=1e-12)
    again = registry.parse_formula(str(expr), FAMILY_COLUMNS)
    np.testing.assert_allclose(registry.to_numpy(again, FAMILY_COLUMNS)(X), expected, rtol=0, atol=1e-12)
    assert r"\max" in registry.latex(expr) and "fam" in registry.latex(expr)


def test_scipy_fallback_lowers_the_action() -> None:
    kernel, F = synthetic_kernel(n_states=50, seed=1)
    fit = fit_family49(F, kernel, method="scipy", max_evals=400)
    assert fit.action < fit.action_default
    with pytest.raises(DetbalError, match="method"):
        fit_family49(F, kernel, method="annealing", max_evals=10)  # type: ignore[arg-type]


# -- direction statistic and loading ------------------------------------------------------

def hand_kernel() -> object:
    states = ["a", "b", "c", "d"]
    # edges a->b (T .5), b->c (.25), c->a (.04: below threshold), a->c (.1), d->a (.5), c->d (.1)
    src = np.array([0, 1, 2, 0, 3, 2])
    dst = np.array([1, 2, 0, 2, 0, 3])
    cnt = np.array([5.0, 2.5, 0.4, 1.0, 5.0, 1.0])
    attempts = np.array([10.0, 10.0, 10.0, 10.0])
    return estimate_kernel(TransitionCounts.from_arrays(states, src, dst, cnt, attempts), "empirical")


def test_direction_stats_on_a_hand_made_kernel() -> None:
    kernel = hand_kernel()
    V = np.array([3.0, 1.0, 1.0, np.nan])
    assert kernel.states == ("a", "b", "c", "d")
    d = direction_stats(V, kernel, threshold=0.05)
    # a->b down, b->c equal, a->c down; d->a and c->d undefined; c->a below threshold
    assert (d["n"], d["down"], d["up"], d["equal"], d["undefined"]) == (3, 2, 0, 1, 2)
    assert d["frac_down"] == pytest.approx(2 / 3) and d["frac_equal"] == pytest.approx(1 / 3)
    up = direction_stats(-np.nan_to_num(V), kernel, threshold=0.2)
    # T > 0.2: a->b up, b->c equal, d->a down (V(d) = 0 > -3)
    assert (up["n"], up["down"], up["up"], up["equal"]) == (3, 1, 1, 1)
    none = direction_stats(V, kernel, threshold=0.9)
    assert none["n"] == 0 and math.isnan(none["frac_down"])


def test_load_run_aligns_features_with_kernel(tmp_path: object) -> None:
    path = tmp_path / "run.sqlite"  # type: ignore[operator]
    pairs = [("BUZZY", "ATTITUDE"), ("ATTITUDE", "EXCELLENT"), ("EXCELLENT", "ATTITUDE"),
             ("ATTITUDE", "BUZZY"), ("BUZZY", "EXCELLENT"), ("EXCELLENT", "BUZZY")] * 3
    with RunStore(path) as store:
        run = store.create_run("words", "test", "fake", {})
        attempts = [Attempt(source=s, target=t, target_features={"letter_sum": 100})
                    for s, t in pairs]
        attempts.append(Attempt(source="BUZZY", escape="wrong_sum", raw_answer="CAT"))
        store.record_attempts(run, attempts)
    kernel, F = load_run(path)
    assert F.states == kernel.states and F.kind == "words"
    assert "stored_letter_sum" in F.names
    np.testing.assert_array_equal(F.column("stored_letter_sum"), 100.0)
    np.testing.assert_array_equal(F.column("word_letter_sum"), 100.0)


def test_source_cut_kernel_keeps_edges_into_unsourced_states() -> None:
    from detbal.evo.transitions import source_cut_kernel

    rows = [("A", "B", None, 3), ("A", None, "x", 1), ("B", "A", None, 2), ("B", "C", None, 1),
            ("C", "A", None, 1)]
    counts = TransitionCounts.from_rows(rows)
    kept = estimate_kernel(counts, "empirical")
    alls = source_cut_kernel(counts, "empirical")
    # C has one attempt: dropped as a source in both; B->C survives only in "all"
    assert len(kept.src) == 2 and len(alls.src) == 3
    assert kept.n_sources == alls.n_sources == 2
    c = counts.states.index("C")
    e = int(np.flatnonzero(alls.dst == c)[0])
    assert alls.T[e] == pytest.approx(1 / 3)


def test_load_run_targets(tmp_path: object) -> None:
    path = tmp_path / "t.csv"  # type: ignore[operator]
    path.write_text("source,target,count\nparam1,param2,3\nparam2,param1,2\nparam2,param3,1\nparam1,param2*log_v_k_nu,1\n")
    kept, F = load_run(path)
    alls, G = load_run(path, targets="all")
    assert F.kind == "ansatz" and F.states == kept.states == alls.states
    assert len(alls.src) > len(kept.src)
    with pytest.raises(DetbalError, match="targets"):
        load_run(path, targets="some")  # type: ignore[arg-type]
