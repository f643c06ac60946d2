"""Discovery through the Python API: every engine returns the same DiscoveryResult."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from detbal.analysis.potential import LeastActionPotential
from detbal.errors import DetbalError
from detbal.evo import registry
from detbal.evo.discover import DiscoveryResult, discover, study_of
from detbal.evo.engines import ENGINES, GPEngine, make_engine
from detbal.evo.pareto import COLUMNS, Formula

TRUTH = "1.6*f1 - f2**2"
#: tiny budgets: seconds per engine
BUDGET = {"gp": {"population": 60, "generations": 8},
          "operon": {"population": 100, "generations": 20},
          "pysr": {"iterations": 5}}


@pytest.fixture(scope="module")
def family_study():
    """Ansatz states moving on a perturbed 49-parameter family (tests/support/family49.py)."""
    from support.family49 import random_params, synthetic_kernel

    from detbal.evo.family49 import family_potential

    kernel, F = synthetic_kernel(n_states=80, seed=0)
    return study_of(kernel, features=F), 1.5 * family_potential(F, random_params(0 + 5, 0.6))


def _values(formula: Formula, features) -> np.ndarray:
    names = registry.symbol_names(features.names)
    return formula.evaluate(features.X[:, [names.index(n) for n in formula.names]])


def _needs(engine: str) -> None:
    if engine == "operon":
        pytest.importorskip("pyoperon")
    if engine == "pysr":
        from detbal.evo.pysr_engine import probe

        status = probe(timeout=20)
        if not status.available:
            pytest.skip(status.message)


@pytest.mark.parametrize("engine", ["gp", "operon", "pysr"])
def test_every_engine_returns_a_discovery_result_near_the_planted_potential(planted_study, engine: str) -> None:
    _needs(engine)
    pc, kernel = planted_study
    res = discover(kernel, engine, features=pc.features, seed=0, **BUDGET[engine])
    assert isinstance(res, DiscoveryResult) and res.engine == engine
    assert isinstance(res.best, Formula) and res.front and res.best in res.formulas
    assert np.corrcoef(_values(res.best, pc.features), pc.V)[0, 1] > 0.9
    assert res.best.action <= 1.25 * res.numeric_action
    assert res.best.action == min(f.action for f in res.formulas)
    # V on the kernel's states is the best formula's
    np.testing.assert_allclose(res.V, _values(res.best, pc.features))
    c = res.compare()
    assert c.metrics["pearson"] > 0.9


def test_family49_result_is_a_real_formula(family_study) -> None:
    study, V_true = family_study
    res = discover(study, "family49", seed=1, max_evals=300)
    assert isinstance(res, DiscoveryResult) and res.engine == "family49"
    best = res.best
    assert set(best.names) <= set(study.features.names) and "fam_length" in best.sympy
    assert best.action == res.details["action"] < res.details["action_default"]
    assert sorted(f.equation.split(", ")[1].split()[0] for f in res.formulas) == ["published", "tuned"]
    # the formula is the tuned family: same V as the engine that was fitted
    from detbal.evo.family49 import family_potential

    F = study.features.take(study.features.rows(study.kernel.states))
    np.testing.assert_allclose(res.V, family_potential(F, res.details["params"]), atol=1e-12)
    assert np.corrcoef(res.V, V_true)[0, 1] > 0.8


def test_pareto_table_exports_identically_to_sympy_and_latex(planted_study) -> None:
    pc, kernel = planted_study
    res = discover(kernel, "gp", features=pc.features, seed=2, **BUDGET["gp"])
    rows = res.table()
    assert len(rows) == len(res.formulas) and all(tuple(r) == COLUMNS or set(r) == set(COLUMNS) for r in rows)
    assert sum(r["pareto"] for r in rows) == len(res.front)
    for row, f in zip(rows, res.formulas):
        again = registry.parse_formula(row["sympy"], f.names)
        assert registry.latex(again) == row["latex"] == f.latex
        np.testing.assert_allclose(registry.to_numpy(again, f.names)(pc.features.X),
                                   f.evaluate(pc.features.X), rtol=1e-12)


def test_save_writes_what_the_command_writes(planted_study, tmp_path: Path) -> None:
    pc, kernel = planted_study
    res = discover(kernel, "gp", features=pc.features, seed=0, **BUDGET["gp"])
    summary = res.save(tmp_path / "disc", figures=False)
    assert set(summary["files"]) == {"summary.json", "formulas.csv", "potentials.csv"}
    on_disk = json.loads((tmp_path / "disc" / "summary.json").read_text())
    assert on_disk["best"]["sympy"] == res.best.sympy and on_disk["engine"] == "gp"
    assert on_disk["settings"]["population"] == 60 and on_disk["settings"]["seed"] == 0
    with (tmp_path / "disc" / "formulas.csv").open() as fh:
        assert [r["sympy"] for r in csv.DictReader(fh)] == [f.sympy for f in res.formulas]


def test_compare_with_a_given_numeric_potential(planted_study) -> None:
    pc, kernel = planted_study
    res = discover(kernel, "gp", features=pc.features, seed=0, **BUDGET["gp"])
    fit = LeastActionPotential(penalty="softplus").fit(kernel)
    c = res.compare(fit, holdout=0)
    assert c.metrics["action"]["numeric"] == pytest.approx(fit.action)
    assert "heldout" not in c.metrics
    with pytest.raises(ValueError, match="potential"):
        res.compare("not a fit")


@pytest.mark.parametrize("engine", ["gp", "family49", "operon"])
def test_seeded_runs_repeat_and_leave_global_random_state_alone(planted_study, family_study, engine: str) -> None:
    _needs(engine)
    pc, kernel = planted_study
    data = (family_study[0],) if engine == "family49" else (kernel,)
    kw = {"max_evals": 60} if engine == "family49" else dict(BUDGET[engine], features=pc.features)
    np_state, py_state = np.random.get_state(), random.getstate()
    a = discover(*data, engine, seed=5, **kw)
    after = np.random.get_state()
    assert random.getstate() == py_state
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    b = discover(*data, engine, seed=5, **kw)
    assert [(f.sympy, f.action) for f in a.formulas] == [(f.sympy, f.action) for f in b.formulas]


def test_engine_settings_and_errors_name_parameters(planted_study) -> None:
    pc, kernel = planted_study
    assert set(ENGINES) == {"gp", "family49", "operon", "pysr"}
    assert isinstance(make_engine("gp", population=10), GPEngine)
    with pytest.raises(ValueError, match="max_evals"):
        make_engine("gp", max_evals=10)
    with pytest.raises(ValueError, match="unknown engine 'nope'"):
        discover(kernel, "nope", features=pc.features)
    with pytest.raises(ValueError, match="population must be at least 4"):
        make_engine("gp", population=2)
    with pytest.raises(DetbalError, match="holdout"):
        discover(kernel, "gp", features=pc.features, holdout=1.5)
    with pytest.raises(DetbalError, match="ansatz"):
        discover(kernel, "family49", features=pc.features, max_evals=10)
    # an engine instance works as a name does
    res = discover(kernel, GPEngine(population=20, generations=2), features=pc.features)
    assert res.settings["population"] == 20


def test_pysr_equations_become_scored_formulas_without_julia(planted_study, monkeypatch) -> None:
    """The conversion of PySR's table (Julia cannot run here): a stand-in regressor reports
    equations in PySR's columns; each becomes a registry Formula scored by the action."""
    import sys
    import types

    from detbal.evo.engines import gp_features
    from detbal.evo.pysr_engine import PySRStatus, run_pysr

    class Table:
        def __init__(self, rows):
            self.rows = rows

        def iterrows(self):
            return enumerate(self.rows)

    class FakeRegressor:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def fit(self, X, y, weights=None, variable_names=None):
            self.equations_ = Table([
                {"sympy_format": "f1", "equation": "f1", "loss": 1.0, "complexity": 1},
                {"sympy_format": "1.6*f1 - f2**2", "equation": "1.6*f1 - f2^2", "loss": 0.1,
                 "complexity": 7},
                {"sympy_format": "((", "equation": "broken", "loss": 9.0, "complexity": 2},
            ])

    monkeypatch.setitem(sys.modules, "pysr", types.SimpleNamespace(PySRRegressor=FakeRegressor))
    for var in ("PYTHON_JULIAPKG_OFFLINE", "PYTHON_JULIAPKG_EXE"):  # run_pysr sets them
        monkeypatch.setenv(var, "")
    pc, kernel = planted_study
    study = study_of(kernel, features=pc.features)
    X, names, _ = gp_features(study.features, kernel)
    found = run_pysr(X, names, study.fit, kernel, status=PySRStatus(True, "ok", "julia", "1.10"))
    assert [f.equation for f in found] == ["f1", "1.6*f1 - f2^2"]
    truth = found[1]
    assert truth.engine == "pysr" and truth.loss == 0.1 and truth.meta["pysr_complexity"] == 7
    assert truth.action == pytest.approx(min(f.action for f in found))
    assert np.corrcoef(truth.evaluate(X), pc.V)[0, 1] > 0.999


def test_discover_from_the_top_level_package_on_word_states() -> None:
    """``detbal.discover(kernel)`` with no features: the word states are featurized."""
    import detbal

    from support import REPO as repo

    counts = detbal.load_counts(repo / "datasets" / "claude4_words_example.csv")
    kernel = detbal.estimate_kernel(counts, n0="uniform", total_attempts=20000)
    disc = detbal.discover(kernel, engine="gp", seed=0, population=40, generations=4)
    assert isinstance(disc, detbal.DiscoveryResult)
    assert all(n.startswith("word_") for n in disc.best.names)
    fit = LeastActionPotential(penalty="exp").fit(kernel)
    assert disc.compare(fit, holdout=0).metrics["pearson"] > 0.9
