"""``analyze``: from recorded transitions to summary.json, potential.csv and report.md."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from detbal import __version__
from detbal.analysis.counts import Kernel, N0Mode, TransitionCounts, estimate_kernel
from detbal.errors import DetbalError
from detbal.io import export_table, load_count_rows

log = logging.getLogger(__name__)


class ProgressUI(Protocol):
    def progress(self, total: int | None, desc: str, unit: str = "it") -> AbstractContextManager[Callable[..., Any]]:
        ...


def json_safe(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 4)


def load_kernel(
    input_path: str | Path,
    *,
    n0: N0Mode = "empirical",
    min_source_count: float | None = None,
    attempts: float | None = None,
) -> Kernel:
    """Read a store or importable file and estimate the kernel."""
    counts = TransitionCounts.from_rows(load_count_rows(input_path))
    if counts.count.size == 0:
        raise DetbalError(f"{input_path}: no transitions between distinct states")
    return estimate_kernel(counts, n0, min_source_count=min_source_count, total_attempts=attempts)


def analyze(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    kernel: str = "exp",
    beta: float = 1.0,
    n0: N0Mode = "empirical",
    min_source_count: float | None = None,
    attempts: float | None = None,
    bootstrap: int = 100,
    test_simulations: int = 200,
    stop_early: bool = False,
    triplet_min_count: float = 0.0,
    gauge: str = "mean",
    solver: str = "newton",
    seed: int = 0,
    n_jobs: int = 1,
    figures: bool = True,
    ui: ProgressUI | None = None,
    figure_process: bool = False,
    estimator: str = "least_action",
) -> dict[str, Any]:
    """Run the whole analysis and write its outputs into ``out_dir``; returns the summary.

    ``estimator``: ``least_action`` (the paper's, default) or ``likelihood`` (the
    quasi-symmetry likelihood potential, reported beside the least-action one and used
    for the pair tests).  The deviance test, cycle affinities and entropy production
    are computed either way.

    ``n_jobs`` threads run the bootstrap replicates and the test simulations (0: every
    core available); the numbers do not depend on it.  ``stop_early``: the cycle tests'
    simulations stop once the global test's decision at 5% is settled
    (:class:`detbal.analysis.resample.SequentialStop`; the Monte-Carlo error is reported).  ``figure_process``: draw the
    figures in a child process while the rest is computed (for ``__main__``-guarded
    programs such as the ``detbal`` command; see :class:`report.FigureMaker`).
    """
    from detbal.analysis.balance import balance_tests, one_sided_test, pair_test
    from detbal.analysis.potential import LeastActionPotential
    from detbal.analysis.resample import SequentialStop, available_cores
    from detbal.analysis.summary import summarise

    if estimator not in ESTIMATORS:
        raise DetbalError(f"unknown estimator {estimator!r}: use one of {', '.join(ESTIMATORS)}")
    timer = _Timer()
    out = Path(out_dir)
    n_jobs = available_cores() if n_jobs <= 0 else n_jobs
    with timer.stage("load"):
        k = load_kernel(input_path, n0=n0, min_source_count=min_source_count, attempts=attempts)
    if k.n_sources == 0 or len(k.src) == 0:
        raise DetbalError(
            f"{input_path}: no source state survives the cut N0 > {k.min_source_count:g};"
            " lower --min-source-count"
        )

    def bar(total: int, desc: str) -> AbstractContextManager[Callable[..., Any]]:
        return ui.progress(total, desc) if (ui is not None and total > 0) else nullcontext(None)

    painter = None
    if figures:
        from detbal.analysis import report

        out.mkdir(parents=True, exist_ok=True)
        painter = report.FigureMaker(background=figure_process)

    least_action = LeastActionPotential(kernel=kernel, beta=beta, gauge=gauge, bootstrap=bootstrap,
                                     seed=seed, n_jobs=n_jobs, solver=solver)
    with timer.stage("potential"):
        fit = least_action.fit(k, errors=False)
    lik = None
    if estimator == "likelihood":
        from detbal.analysis.likelihood import LikelihoodPotential

        with timer.stage("likelihood_potential"), bar(bootstrap, "bootstrap of the likelihood V") as tick:
            lik = LikelihoodPotential(beta=beta, gauge=gauge, bootstrap=bootstrap, seed=seed,
                                      action_kernel=kernel, n_jobs=n_jobs).fit(k, progress=tick)
    chosen = fit if lik is None else lik.potential
    with timer.stage("pair_tests"):
        pairs = pair_test(k, chosen.V, beta)
        one_sided = one_sided_test(k, chosen.V, beta)
        pot = summarise(k, fit)
    if painter is not None:  # figures need only the point fit and the observed statistics
        painter.draw("pairs", report.plot_pairs, pairs, out / "pairs.png")
        painter.draw("one_sided", report.plot_one_sided, one_sided, out / "one_sided.png")
        painter.draw("histogram", report.plot_histogram, fit.beta * fit.V[k.counts.attempts > 1],
                     pot.mean_beta_v, pot.sigma_beta_v, out / "potential_histogram.png")
        if report.diagram_applies(k):
            painter.draw("diagram", report.plot_diagram, k, fit, out / "diagram.png")
        if lik is not None:
            painter.draw("estimators", report.plot_estimators, report.light(fit),
                         report.light(lik.potential), out / "estimators.png")
    with timer.stage("balance_tests"), bar(test_simulations, "cycle-test simulations") as tick:
        tests = balance_tests(k, bootstrap=test_simulations, seed=seed,
                              triplet_min_count=triplet_min_count, progress=tick, n_jobs=n_jobs,
                              stop=SequentialStop() if stop_early else None)
    if painter is not None:
        painter.draw("triplets", report.plot_triplets, tests.triplet, out / "triplets.png")
    with timer.stage("potential_bootstrap"), bar(bootstrap, "bootstrap of V") as tick:
        fit = least_action.add_errors(k, fit, progress=tick)
    deviance, noneq = _beyond_balance(k, timer, bar, bootstrap, test_simulations, seed, n_jobs,
                                      SequentialStop() if stop_early else None)
    if painter is not None:
        painter.draw("cycles", report.plot_cycle_affinities, noneq, out / "cycle_affinities.png")

    g = tests.global_test
    if g.df <= 0 or not math.isfinite(g.p_value):
        verdict = "untestable: no independent cycle among the pairs observed both ways"
    elif g.rejects:
        how = "" if g.p is None or g.p.bound is None else \
            f", a tail estimate beyond {g.n_bootstrap} simulations (bound p < {g.p.bound:.3g})"
        verdict = f"detailed balance rejected (global test p = {g.p_value:.3g}{how})"
    else:
        verdict = f"consistent with detailed balance (global test p = {g.p_value:.3g})"

    c = k.counts
    summary: dict[str, Any] = {
        "detbal_version": __version__,
        "input": str(input_path),
        "settings": {
            "kernel": kernel, "beta": beta, "n0": n0, "min_source_count": k.min_source_count,
            "attempts": k.total_attempts, "bootstrap": bootstrap,
            "test_simulations": test_simulations, "stop_early": stop_early,
            "triplet_min_count": triplet_min_count,
            "gauge": fit.gauge, "solver": solver, "seed": seed, "estimator": estimator,
        },
        "data": {
            "states": c.n_states, "edges": int(len(c.src)), "kept_edges": int(len(k.src)),
            "sources": k.n_sources, "total_attempts": k.total_attempts,
            "escape_fraction": float((c.escapes.sum() + c.self_loops.sum()) / max(c.total_attempts, 1)),
        },
        "verdict": verdict,
        "detailed_balance": {"global": g.as_dict(), "triplet_paper": tests.triplet.as_dict(),
                             "deviance": deviance.as_dict()},
        "pair_test": {**pairs.as_dict(), "estimator": estimator},
        "one_sided": one_sided.as_dict(),
        "potential": {**pot.as_dict(), "converged": fit.converged, "iterations": fit.iterations},
        "nonequilibrium": {**noneq.as_dict(), "top_cycles": noneq.top_cycles(10, k.states)},
        "timings": timer.timings,
    }
    out.mkdir(parents=True, exist_ok=True)
    records = fit.to_records()
    side_by_side = None
    if lik is None:
        export_table(records, ["state", "V", "stderr", "sources", "flag"], out / "potential.csv")
    else:
        summary["likelihood_potential"] = {**summarise(k, lik.potential).as_dict(), **lik.as_dict()}
        side_by_side = _side_by_side(records, lik)
        export_table(side_by_side, list(side_by_side[0]), out / "potential.csv")
    if painter is not None:
        with timer.stage("figures"):  # what is left to wait for after the computations
            drawn = painter.results()
            painter.close()
        order = ("triplets", "pairs", "one_sided", "histogram", "diagram", "cycles", "estimators")
        figs = {key: drawn.get(key) for key in order if key in drawn or key != "estimators"}
        summary["figures"] = {key: p.name for key, p in figs.items() if p is not None}
    safe = json_safe(summary)
    (out / "summary.json").write_text(json.dumps(safe, indent=2), encoding="utf-8")
    if figures:
        lowest = sorted((r for r in records if r["flag"] == ""), key=lambda r: float(r["V"]))
        both = None if side_by_side is None else sorted(
            (r for r in side_by_side if r["flag"] == ""), key=lambda r: float(r["V"]))[:15]
        report.write_report(out, safe, figs, lowest[:15], both)
    return safe


#: potential estimators of ``analyze``
ESTIMATORS: tuple[str, ...] = ("least_action", "likelihood")


def _beyond_balance(k: Kernel, timer: _Timer, bar: Callable[[int, str], Any], bootstrap: int,
                    simulations: int, seed: int, n_jobs: int, stop: Any = None) -> tuple[Any, Any]:
    """The deviance test of quasi-symmetry, and cycle affinities with entropy production."""
    from detbal.analysis.likelihood import deviance_test
    from detbal.analysis.nonequilibrium import nonequilibrium

    with timer.stage("deviance_test"), bar(simulations, "deviance-test simulations") as tick:
        deviance = deviance_test(k, simulations=simulations, seed=seed, n_jobs=n_jobs, progress=tick,
                                 stop=stop)
    with timer.stage("nonequilibrium"), bar(bootstrap, "cycle-affinity bootstrap") as tick:
        noneq = nonequilibrium(k, bootstrap=bootstrap, seed=seed, n_jobs=n_jobs, progress=tick)
    return deviance, noneq


def _side_by_side(records: list[dict[str, Any]], lik: Any) -> list[dict[str, Any]]:
    """potential.csv rows with the likelihood potential first and the least-action one beside it."""
    pot = lik.potential
    out = []
    for i, r in enumerate(records):
        ok = pot.flags[i] == ""
        out.append({
            "state": r["state"],
            "V": _num(pot.V[i]) if ok else "",
            "stderr": _num(lik.stderr_laplace[i]) if ok else "",
            "stderr_bootstrap": _num(lik.stderr_bootstrap[i]) if ok else "",
            "sources": r["sources"],
            "flag": pot.flags[i],
            "V_least_action": r["V"],
            "stderr_least_action": r["stderr"],
            "flag_least_action": r["flag"],
        })
    return out


def _num(x: float) -> str:
    return f"{x:.6g}" if math.isfinite(x) else ""
