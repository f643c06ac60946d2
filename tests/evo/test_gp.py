"""Operator registry consistency and DEAP genetic programming on the action."""

from __future__ import annotations

import random

import numpy as np
import pytest
import sympy

from detbal.analysis.potential import LeastActionPotential
from detbal.errors import DetbalError
from detbal.evo import registry
from detbal.evo.gp import GPConfig, best_scale, primitive_set, run_gp
from detbal.evo.pareto import Formula, pareto_front

NAMES = ("f1", "f2", "f3")


# -- registry ------------------------------------------------------------------------
def _random_trees(seed: int, n: int) -> list:
    from deap import gp

    pset = primitive_set(NAMES, tuple(registry.OPERATORS))
    state = random.getstate()
    random.seed(seed)
    try:
        return [gp.PrimitiveTree(gp.genHalfAndHalf(pset, 1, 5)) for _ in range(n)]
    finally:
        random.setstate(state)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tree_numpy_equals_lambdify_of_sympy_export(seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=2.0, size=(40, 3))
    X[0] = 0.0  # exercise the protected branches
    symbols = [sympy.Symbol(n) for n in NAMES]
    for tree in _random_trees(seed, 150):
        tree_values = registry.compile_tree(tree, NAMES)(X)
        expr = registry.tree_to_sympy(tree)
        with np.errstate(all="ignore"):
            sym_values = np.broadcast_to(np.asarray(sympy.lambdify(symbols, expr)(*X.T), float), (40,))
        assert np.array_equal(np.isfinite(tree_values), np.isfinite(sym_values)), str(tree)
        ok = np.isfinite(tree_values) & (np.abs(tree_values) < 1e8)
        np.testing.assert_allclose(sym_values[ok], tree_values[ok], rtol=1e-7, atol=1e-9,
                                   err_msg=str(tree))
        assert registry.latex(expr)
        # the exported string parses back to the same function
        again = registry.to_numpy(registry.parse_formula(str(expr), NAMES), NAMES)(X)
        np.testing.assert_allclose(again[ok], tree_values[ok], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name,args,expected", [
    ("div", (3.0, 0.0), 1.0),
    ("div", (3.0, 2.0), 1.5),
    ("log", (0.0,), 0.0),
    ("log", (-np.e,), 1.0),
    ("sqrt", (-4.0,), 2.0),
    ("exp", (1000.0,), np.exp(registry.EXP_CLIP)),
    ("max", (1.0, 2.0), 2.0),
    ("min", (1.0, -2.0), -2.0),
    ("step", (0.0,), 0.0),
    ("step", (0.3,), 1.0),
])
def test_protected_operators_agree_in_numpy_and_sympy(name: str, args: tuple, expected: float) -> None:
    op = registry.OPERATORS[name]
    assert float(op.numpy(*args)) == pytest.approx(expected)
    assert float(op.sympy(*[sympy.Float(a) for a in args])) == pytest.approx(expected)
    x = [sympy.Symbol(f"a{i}") for i in range(op.arity)]
    assert float(sympy.lambdify(x, op.sympy(*x))(*args)) == pytest.approx(expected)
    assert op.latex()


def test_every_operator_is_a_deap_primitive_with_its_cost() -> None:
    pset = primitive_set(NAMES, tuple(registry.OPERATORS))
    prims = {p.name: p.arity for p in pset.primitives[pset.ret]}
    assert prims == {op.name: op.arity for op in registry.OPERATORS.values()}
    tree = _random_trees(5, 1)[0]
    assert registry.complexity(tree) >= len(tree)


def test_feature_names_become_safe_symbols() -> None:
    assert registry.symbol_names(["len", "a b", "exp", "len"]) == ("len", "x1", "x2", "x3")
    with pytest.raises(DetbalError, match="unknown name"):
        registry.parse_formula("f1 + g", NAMES)
    with pytest.raises(DetbalError, match="cannot parse"):
        registry.parse_formula("f1 +* (", NAMES)


# -- fitness ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted(planted_study):
    """The shared planted study (tests/conftest.py) with its numeric potential."""
    pc, kernel = planted_study
    fit = LeastActionPotential().fit(kernel)
    return pc, kernel, fit


@pytest.mark.parametrize("factor", [0.25, 4.0])
def test_best_scale_undoes_a_rescaling(planted, factor: float) -> None:
    pc, k, fit = planted
    S, a = best_scale(fit.V_fit * factor, k.src, k.dst, k.T, normalisation=k.n_sources)
    assert a * factor == pytest.approx(1.0, rel=1e-4)
    assert S == pytest.approx(fit.action, rel=1e-8)


def test_best_scale_of_a_constant_and_of_garbage(planted) -> None:
    _, k, _ = planted
    S, a = best_scale(np.full(k.n_states, 3.0), k.src, k.dst, k.T, normalisation=k.n_sources)
    assert a == 0.0 and S == pytest.approx(k.T.sum() / k.n_sources)
    u = np.zeros(k.n_states)
    u[0] = np.nan
    assert best_scale(u, k.src, k.dst, k.T)[0] == np.inf


def _run(planted, seed: int = 0, **kw):
    pc, k, _ = planted
    cfg = GPConfig(population=kw.pop("population", 200), generations=kw.pop("generations", 30),
                   **kw.pop("config", {}))
    return run_gp(pc.features.X, NAMES, k.src, k.dst, k.T, k.n_sources, config=cfg, seed=seed, **kw)


@pytest.mark.parametrize("penalty", ["exp", "softplus"])
def test_gp_recovers_planted_formula_within_5_percent(planted, penalty: str) -> None:
    pc, k, _ = planted
    fit = LeastActionPotential(penalty=penalty).fit(k)
    res = _run(planted, penalty=penalty)
    best = res.best
    assert best.action <= 1.05 * fit.action
    V = best.evaluate(pc.features.X)
    assert np.corrcoef(V, pc.V)[0, 1] > 0.95
    # every exported formula is self-consistent: its sympy string, LaTeX and callable
    for f in res.formulas:
        assert f.latex and f.sympy
        S, a = best_scale(f.evaluate(pc.features.X), k.src, k.dst, k.T, penalty=penalty,
                          normalisation=k.n_sources)
        assert S == pytest.approx(f.action, rel=1e-6)
        assert a == pytest.approx(1.0, rel=1e-3)  # the scale is inside the formula


def test_same_seed_same_result_and_global_random_untouched(planted) -> None:
    np_state, py_state = np.random.get_state(), random.getstate()
    a = _run(planted, seed=7, population=60, generations=6)
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    b = _run(planted, seed=7, population=60, generations=6)
    assert [(f.sympy, f.action) for f in a.front] == [(f.sympy, f.action) for f in b.front]
    assert [h["best"] for h in a.history] == [h["best"] for h in b.history]
    assert a.evaluations == b.evaluations


def test_front_is_non_dominated_and_sorted(planted) -> None:
    res = _run(planted, population=60, generations=8)
    cs = [f.complexity for f in res.front]
    acts = [f.action for f in res.front]
    assert cs == sorted(cs) and len(set(cs)) == len(cs)
    assert all(x > y for x, y in zip(acts, acts[1:]))
    assert len(res.history) == res.generations + 1
    assert res.history[-1]["best"] <= res.history[0]["best"]


def test_pareto_front_drops_dominated_rows() -> None:
    def f(c: int, s: float) -> Formula:
        return Formula(expr=sympy.Integer(c), names=(), complexity=c, action=s, loss=s, engine="t")

    front = pareto_front([f(3, 0.5), f(1, 0.9), f(5, 0.6), f(4, 0.4), f(2, float("nan"))])
    assert [(x.complexity, x.action) for x in front] == [(1, 0.9), (3, 0.5), (4, 0.4)]


def test_dask_local_cluster_map_equals_builtin_map(planted) -> None:
    distributed = pytest.importorskip("distributed")
    serial = _run(planted, seed=3, population=40, generations=3)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        dask = _run(planted, seed=3, population=40, generations=3, scheduler=client)
    assert [(f.sympy, f.action) for f in dask.front] == [(f.sympy, f.action) for f in serial.front]
    assert dask.evaluations == serial.evaluations


def test_process_pool_map_equals_builtin_map(planted) -> None:
    serial = _run(planted, seed=4, population=30, generations=2)
    pool = _run(planted, seed=4, population=30, generations=2, scheduler="processes:2")
    assert [(f.sympy, f.action) for f in pool.front] == [(f.sympy, f.action) for f in serial.front]


@pytest.mark.parametrize("bad", [{"population": 2}, {"parsimony": 3.0}, {"operators": ("nope",)}])
def test_bad_config_is_a_detbal_error(bad: dict) -> None:
    with pytest.raises(DetbalError):
        GPConfig(**bad)


def test_progress_is_called_per_generation(planted) -> None:
    calls: list[dict] = []
    _run(planted, population=30, generations=4, progress=lambda n=1, **kw: calls.append({"n": n, **kw}))
    assert sum(c["n"] for c in calls) == 4
    assert all("best" in c for c in calls)


def test_other_threads_drawing_random_numbers_do_not_change_the_search(planted) -> None:
    """A Dask client's threads use the global ``random``; a seeded search must not notice."""
    import random
    import threading

    quiet = _run(planted, seed=5, population=30, generations=3)
    stop = threading.Event()

    def noise() -> None:
        while not stop.is_set():
            random.random()

    thread = threading.Thread(target=noise, daemon=True)
    thread.start()
    try:
        noisy = _run(planted, seed=5, population=30, generations=3)
    finally:
        stop.set()
        thread.join()
    assert noisy.evaluations == quiet.evaluations
    assert [(f.sympy, f.action) for f in noisy.front] == [(f.sympy, f.action) for f in quiet.front]
