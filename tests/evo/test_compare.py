"""Explicit potential beside the numeric one: correlations, actions, directions, held-out likelihood."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detbal.analysis.potential import LeastActionPotential
from detbal.errors import DetbalError, InputError
from detbal.evo import registry
from detbal.evo.compare import (
    compare_potentials,
    heldout_split,
    plot_comparison,
    plot_subgraph,
    resolve_potential,
)
from detbal.evo.pareto import Formula, write_table

TRUTH = "1.6*f1 - f2**2"


@pytest.fixture(scope="module")
def planted(planted_study):
    """The shared planted study (tests/conftest.py) with its numeric potential."""
    pc, kernel = planted_study
    fit = LeastActionPotential(bootstrap=10, seed=0).fit(kernel)
    return pc, kernel, fit


@pytest.mark.parametrize("penalty", ["exp", "softplus"])
def test_truth_correlates_with_numeric_potential(planted, penalty: str) -> None:
    pc, k, _ = planted
    fit = LeastActionPotential(penalty=penalty).fit(k)
    c = compare_potentials(k, TRUTH, features=pc.features, fit=fit, penalty=penalty)
    m = c.metrics
    assert m["pearson"] > 0.9 and m["spearman"] > 0.9
    # the headline metrics as attributes of the frozen Comparison
    assert (c.pearson, c.spearman, c.compared) == (m["pearson"], m["spearman"], m["compared"])
    assert c.direction_agreement == m["direction"]["agreement"]
    assert c.heldout is not None and c.heldout["explicit"] == m["heldout"]["explicit"]
    with pytest.raises(TypeError):
        compare_potentials(k, TRUTH, features=pc.features, fit=fit, kernel_name=penalty)  # pre-1.0: no old name
    assert m["compared"] == m["identifiable"] == 60
    assert m["action"]["explicit_scaled"] >= m["action"]["numeric"] - 1e-12
    assert m["action"]["excess"] < 0.05
    assert m["direction"]["agreement"] > 0.9
    # the paper's statistic for V_E: downhill dominates
    assert m["direction"]["explicit"]["frac_down"] > 0.6


def test_rmse_shift_and_affine(planted) -> None:
    pc, k, fit = planted
    V = np.where(fit.identifiable, fit.V, np.nan)
    shifted = compare_potentials(k, V + 3.0, fit=fit, holdout=0).metrics
    assert shifted["rmse_shift"] == pytest.approx(0.0, abs=1e-9)
    assert shifted["pearson"] == pytest.approx(1.0)
    scaled = compare_potentials(k, 2.0 * V, fit=fit, holdout=0).metrics
    assert scaled["rmse_shift"] > 0.1
    assert scaled["rmse_affine"] == pytest.approx(0.0, abs=1e-9)
    assert scaled["affine"]["scale"] == pytest.approx(0.5)
    assert scaled["action"]["explicit_scale"] == pytest.approx(0.5, rel=1e-4)
    assert scaled["direction"]["agreement"] == 1.0


def test_heldout_likelihood_ranks_truth_above_noise(planted) -> None:
    pc, k, fit = planted
    truth = compare_potentials(k, TRUTH, features=pc.features, fit=fit, seed=1).metrics["heldout"]
    noise = compare_potentials(k, "f3", features=pc.features, fit=fit, seed=1).metrics["heldout"]
    assert truth["n_test"] > 500 and truth["n_test"] == noise["n_test"]
    assert truth["numeric"] > truth["zero"] + 0.1
    assert truth["explicit"] > truth["zero"] + 0.1
    assert truth["explicit_scale"] == pytest.approx(1.0, abs=0.2)
    assert abs(noise["explicit"] - noise["zero"]) < 0.02
    assert truth["numeric"] == noise["numeric"]  # same split, same refit


@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_heldout_split_conserves_attempts(planted, fraction: float) -> None:
    _, k, _ = planted
    counts = k.counts
    train, held_edge, held_att = heldout_split(counts, fraction, seed=5)
    assert held_att.sum() + train.attempts.sum() == pytest.approx(counts.attempts.sum())
    np.testing.assert_allclose(held_att, np.round(fraction * counts.attempts))
    assert held_edge.sum() <= held_att.sum()
    assert np.all(held_edge <= counts.count)
    # deterministic for a seed
    again = heldout_split(counts, fraction, seed=5)
    np.testing.assert_array_equal(again[1], held_edge)
    with pytest.raises(DetbalError):
        heldout_split(counts, 1.0, seed=0)


def test_resolve_tables_and_formula_files(planted, tmp_path: Path) -> None:
    pc, k, fit = planted
    table = tmp_path / "v.csv"
    rows = ["state,V"] + [f"{s},{v}" for s, v in zip(pc.counts.states, pc.V)][:50]
    table.write_text("\n".join(rows) + "\n")
    pot = resolve_potential(str(table), k.states, pc.features)
    assert pot.source == "table" and np.isfinite(pot.V).sum() == 50
    expr = registry.parse_formula(TRUTH, ("f1", "f2", "f3"))
    formulas = tmp_path / "formulas.csv"
    write_table([Formula(expr=expr, names=("f1", "f2", "f3"), complexity=10, action=0.1, loss=0.1,
                         engine="gp"),
                 Formula(expr=registry.parse_formula("f3", ("f1", "f2", "f3")), names=("f1", "f2", "f3"),
                         complexity=1, action=0.5, loss=0.5, engine="gp")], formulas)
    best = resolve_potential(str(formulas), k.states, pc.features)
    assert best.source == "formula" and best.formula is not None
    np.testing.assert_allclose(best.V - best.V.mean(), pc.V, atol=1e-9)  # the best row, not f3
    with pytest.raises(InputError):
        resolve_potential(str(tmp_path / "missing.csv"), k.states, pc.features)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="state,V"):
        resolve_potential(str(bad), k.states, pc.features)
    with pytest.raises(DetbalError, match="unknown name"):
        resolve_potential("f1 + nonsense", k.states, pc.features)


def test_family49_on_ansatz_states() -> None:
    from detbal.evo.family49 import family_potential
    from detbal.evo.features import featurize

    states = ["param1*log_v_k_nu + param2", "exp(param1*log_v_k_nu)", "tanh(param1) + param2/param3"]
    F = featurize(states, "ansatz")
    pot = resolve_potential("family49", states, F)
    np.testing.assert_allclose(pot.V, family_potential(F))


def test_figures_are_written(planted, tmp_path: Path) -> None:
    pc, k, fit = planted
    c = compare_potentials(k, TRUTH, features=pc.features, fit=fit, holdout=0)
    assert plot_comparison(c, tmp_path / "c.png").stat().st_size > 1000
    assert plot_subgraph(k, c.V_explicit, tmp_path / "s.png", max_states=15).stat().st_size > 1000
