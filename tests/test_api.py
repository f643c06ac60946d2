"""The public Python API a notebook relies on: detbal.load_counts, TransitionCounts.from_rows,
estimate_kernel, analyze -> AnalysisResult (frozen, to_dict, save) and detbal.plot."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import detbal
from detbal.errors import DetbalError
from support import CLAUDE4_CSV

HEAVY = ("numba", "matplotlib", "scipy", "deap", "pysr", "openai", "llama_cpp")


@pytest.fixture(scope="module")
def reversible_result(reversible_chain):
    _, counts = reversible_chain
    return detbal.analyze(detbal.estimate_kernel(counts), seed=0, bootstrap=20, test_simulations=39)


def test_import_is_light_and_names_are_public() -> None:
    code = ("import sys, detbal; names = detbal.__all__; d = dir(detbal);"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules)); print(' '.join(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, names = out.stdout.splitlines()
    assert heavy == ""
    for name in ("load_counts", "TransitionCounts", "estimate_kernel", "analyze", "AnalysisResult",
                 "plot", "RunStore", "DetbalError"):
        assert name in names.split()
    for name in detbal.__all__:
        assert getattr(detbal, name) is not None
    with pytest.raises(AttributeError):
        detbal.no_such_name  # noqa: B018


def test_claude4_worked_example_through_the_api(claude_counts, tmp_path: Path) -> None:
    """The paper's numbers: V(PERSONAL) - V(ATTITUDE) = 4.07, V(PROBLEMS) - V(ATTITUDE) = 5.18."""
    with open(CLAUDE4_CSV, newline="") as fh:
        rows = [(r["source"], r["target"], int(r["count"])) for r in csv.DictReader(fh)]
    counts = detbal.TransitionCounts.from_rows(rows)
    assert counts.states == claude_counts.states
    np.testing.assert_array_equal(counts.count, claude_counts.count)
    kernel = detbal.estimate_kernel(counts, n0="uniform", total_attempts=20000)
    assert np.all(kernel.n0 == 4000.0)
    res = detbal.analyze(kernel, seed=0, bootstrap=10, test_simulations=0)
    assert isinstance(res, detbal.AnalysisResult)
    v = res.potential.value
    assert round(v("PERSONAL") - v("ATTITUDE"), 2) == 4.07
    assert round(v("PROBLEMS") - v("ATTITUDE"), 2) == 5.18
    assert res.verdict.startswith("untestable")  # two pairs, no cycle
    assert res.potential.flags[res.states.index("BUZZY")] == "never_entered"
    assert np.isnan(v("BUZZY"))
    with pytest.raises(DetbalError, match="NOWHERE"):
        v("NOWHERE")
    res.save(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "r = n/a" in report and "None" not in report  # undefined numbers read n/a, not None


def test_from_rows_reads_escapes_self_loops_and_rejects_bad_rows() -> None:
    c = detbal.TransitionCounts.from_rows([("A", "B", 3), ("A", None, 2), ("B", "B", 4), ("B", "A", 1),
                                           ("A", "", "refusal", 1)])
    assert c.states == ("A", "B")
    assert list(c.attempts) == [6, 5] and list(c.escapes) == [3, 0] and list(c.self_loops) == [0, 4]
    again = detbal.TransitionCounts.from_rows(c.to_rows())
    for name in ("src", "dst", "count", "attempts", "self_loops", "escapes"):
        np.testing.assert_array_equal(getattr(again, name), getattr(c, name))
    for bad in [("A", "B"), ("A", "B", -1), ("A", "B", 1.5), (1, "B", 2)]:
        with pytest.raises(ValueError, match="rows"):
            detbal.TransitionCounts.from_rows([bad])


def test_reversible_and_driven_chains(reversible_chain, driven_chain, reversible_result) -> None:
    chain, _ = reversible_chain
    res = reversible_result
    assert "consistent with detailed balance" in res.verdict
    assert res.global_test.p_value > 0.05
    ok = np.isfinite(res.potential.V)
    assert ok.sum() > 40
    assert np.corrcoef(res.potential.V[ok], chain.potential[ok])[0, 1] > 0.9
    _, counts = driven_chain
    driven = detbal.analyze(detbal.estimate_kernel(counts), seed=0, bootstrap=10, test_simulations=39)
    assert "rejected" in driven.verdict and driven.global_test.p_value < 0.05
    assert driven.nonequilibrium.rms_affinity.estimate > res.nonequilibrium.rms_affinity.estimate


def test_result_is_frozen_and_its_dict_is_json(reversible_result) -> None:
    res = reversible_result
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.verdict = "changed"  # type: ignore[misc]
    d = res.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert d["verdict"] == res.verdict and d["settings"]["seed"] == 0 and d["input"] is None
    assert d["detailed_balance"]["global"]["df"] == res.global_test.df
    assert set(d["timings"]) >= {"potential", "balance_tests", "potential_bootstrap"}


def test_same_seed_same_numbers_and_no_global_random_state(reversible_chain) -> None:
    _, counts = reversible_chain
    kernel = detbal.estimate_kernel(counts)
    np.random.seed(123)
    random.seed(123)
    before, before_py = np.random.get_state()[1].copy(), random.getstate()
    a = detbal.analyze(kernel, seed=4, bootstrap=5, test_simulations=9)
    b = detbal.analyze(kernel, seed=4, bootstrap=5, test_simulations=9, n_jobs=2)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    assert random.getstate() == before_py
    da, db = a.to_dict(), b.to_dict()
    da.pop("timings"), db.pop("timings")
    assert da == db
    np.testing.assert_array_equal(a.potential.stderr, b.potential.stderr)


def test_save_writes_the_files(tmp_path: Path, reversible_result) -> None:
    res = reversible_result
    written = res.save(tmp_path / "out")
    out = tmp_path / "out"
    for name in ("summary.json", "potential.csv", "report.md", "pairs.png", "triplets.png",
                 "potential_histogram.png", "cycle_affinities.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary == written
    expected = res.to_dict()
    assert {k: v for k, v in summary.items() if k not in ("figures", "timings")} == \
        {k: v for k, v in expected.items() if k != "timings"}
    assert summary["figures"]["pairs"] == "pairs.png"
    with open(out / "potential.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["state"] for r in rows] == list(res.states)
    s0 = next(r for r in rows if r["flag"] == "")
    assert float(s0["V"]) == pytest.approx(res.potential.value(s0["state"]), rel=1e-5)
    report = (out / "report.md").read_text()
    assert res.verdict in report and "counts given in memory" in report
    bare = res.save(tmp_path / "bare", figures=False)
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["potential.csv", "summary.json"]
    assert "figures" not in bare


def test_plots_draw_on_the_callers_axes_without_switching_backend(reversible_result) -> None:
    import matplotlib
    from matplotlib.figure import Figure

    backend = matplotlib.get_backend()
    res = reversible_result
    fig = Figure()
    axes = fig.subplots(2, 4).ravel()
    funcs = (detbal.plot.pairs, detbal.plot.triplets, detbal.plot.one_sided, detbal.plot.potential_histogram,
             detbal.plot.levels, detbal.plot.cycle_affinities, detbal.plot.top_cycles)
    for fn, ax in zip(funcs, axes):
        assert fn(res, ax=ax) is ax, fn.__name__
    assert axes[0].get_xlabel().startswith("β [V(f)")
    assert len(axes[0].lines) + len(axes[0].collections) > 0  # something was drawn
    assert matplotlib.get_backend() == backend
    with pytest.raises(ValueError, match="estimator='likelihood'"):
        detbal.plot.estimators(res, ax=axes[7])


def test_library_errors_name_parameters_not_flags(claude_counts, tmp_path: Path) -> None:
    with pytest.raises(DetbalError, match="total_attempts") as exc:
        detbal.estimate_kernel(claude_counts, n0="uniform", total_attempts=10)
    assert "--" not in str(exc.value)
    kernel = detbal.estimate_kernel(claude_counts, n0="uniform", total_attempts=20000)
    with pytest.raises(DetbalError, match="bootstrap"):
        detbal.analyze(kernel, bootstrap=-1)
    with pytest.raises(TypeError, match="estimate_kernel"):
        detbal.analyze(claude_counts)  # type: ignore[arg-type]
    starved = detbal.estimate_kernel(claude_counts, min_source_count=1e9)
    with pytest.raises(DetbalError, match="min_source_count") as exc:
        detbal.analyze(starved)
    assert "--" not in str(exc.value)


def test_load_counts_from_an_open_store(tmp_path: Path, claude_counts) -> None:
    from detbal.io import import_into_store

    with detbal.RunStore(tmp_path / "s.sqlite") as store:
        import_into_store(CLAUDE4_CSV, store)
        from_store = detbal.load_counts(store)
    from_path = detbal.load_counts(tmp_path / "s.sqlite")
    for c in (from_store, from_path):
        assert sorted(c.states) == sorted(claude_counts.states)
        assert c.total_attempts == claude_counts.total_attempts


def test_plot_takes_a_part_or_makes_its_own_figure(reversible_result) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    assert detbal.plot.pairs(reversible_result.pair_test, ax=ax) is ax  # the part alone
    own = detbal.plot.triplets(reversible_result)  # no ax: a new pyplot figure
    try:
        assert own.get_title().startswith(f"{reversible_result.triplet_test.n_triplets} triplets")
        assert own.figure in [plt.figure(n) for n in plt.get_fignums()]
    finally:
        plt.close(own.figure)


def test_penalty_is_the_name_of_the_actions_K(claude_counts) -> None:
    from detbal.analysis.potential import LeastActionPotential

    kernel = detbal.estimate_kernel(claude_counts, n0="uniform", total_attempts=20000)
    new = LeastActionPotential(penalty="softplus").fit(kernel)
    old = LeastActionPotential(kernel="softplus").fit(kernel)  # the former name still works
    assert new.penalty == old.penalty == "softplus"
    np.testing.assert_array_equal(new.V, old.V)
    res = detbal.analyze(kernel, penalty="softplus", bootstrap=0, test_simulations=0)
    assert res.potential.penalty == "softplus" and res.to_dict()["settings"]["kernel"] == "softplus"
    np.testing.assert_allclose(res.potential.V, new.V)


@pytest.mark.parametrize("penalty", ["exp", "softplus"])
def test_claude4_paper_numbers_for_both_penalties(claude_counts, penalty: str) -> None:
    """METHOD.md's worked check through the API, with either K: beta V(PERSONAL) = log(3879/66),
    beta V(PROBLEMS) = log(3558/20) with V(ATTITUDE) = 0, TURKEY and BUZZY beyond the measurable
    range; the minimal action is the two pairs' closed-form minima over the five sources; no
    cycle, so no chi^2 of the cycle tests, and the pair test's chi^2/ndf is zero (exact fit)."""
    kernel = detbal.estimate_kernel(claude_counts, n0="uniform", total_attempts=20000)
    res = detbal.analyze(kernel, penalty=penalty, gauge="ATTITUDE", seed=0, bootstrap=0, test_simulations=0)
    v = res.potential.value
    assert v("ATTITUDE") == 0.0
    assert v("PERSONAL") == pytest.approx(math.log(3879 / 66), abs=1e-6)
    assert v("PROBLEMS") == pytest.approx(math.log(3558 / 20), abs=1e-6)
    ordered = sorted((s for s in res.states if np.isfinite(v(s))), key=v)
    assert ordered == ["ATTITUDE", "PERSONAL", "PROBLEMS"]
    flags = dict(zip(res.states, res.potential.flags))
    assert flags["TURKEY"] == "one_sided" and flags["BUZZY"] == "never_entered"  # left, never or barely entered
    # S = sum over the two pairs of min_x [T_fg K(x) + T_gf K(-x)] / 5 sources
    t = {(3879, 66), (3558, 20)}
    if penalty == "exp":  # K(x) = exp(-x/2): the minimum is 2 sqrt(T_fg T_gf)
        pair_min = [2 * math.sqrt(a * b) / 4000 for a, b in t]
        k0 = 1.0
    else:  # K(x) = log(1 + exp(-x)): a log(1 + b/a) + b log(1 + a/b)
        pair_min = [(a * math.log1p(b / a) + b * math.log1p(a / b)) / 4000 for a, b in t]
        k0 = math.log(2)
    assert kernel.n_sources == 5
    assert res.potential.action == pytest.approx(sum(pair_min) / 5, rel=1e-6)
    ps = res.potential_summary
    assert ps.k0 == pytest.approx(k0) and ps.downhill_fraction == 1.0 and ps.n_identifiable == 3
    sigma = float(np.std([0.0, math.log(3879 / 66), math.log(3558 / 20)]))
    assert ps.sigma_beta_v == pytest.approx(sigma, rel=1e-6)
    assert ps.expected_action == pytest.approx(k0 / (math.sqrt(math.pi) * sigma), rel=1e-6)
    # chi^2 figures: two pairs seen both ways and no cycle among them
    assert (res.global_test.n_pairs, res.global_test.df) == (2, 0) and math.isnan(res.global_test.p_value)
    assert res.triplet_test.n_triplets == 0 and math.isnan(res.triplet_test.chi2_per_ndf)
    assert res.pair_test.n_pairs == 2 and res.pair_test.chi2_per_ndf == pytest.approx(0.0, abs=1e-9)
    assert res.verdict.startswith("untestable")
