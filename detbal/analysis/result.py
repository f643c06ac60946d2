"""The analysis as a library call: a kernel in, a frozen :class:`AnalysisResult` out.

>>> import detbal
>>> counts = detbal.load_counts("study.sqlite")
>>> kernel = detbal.estimate_kernel(counts, n0="uniform", total_attempts=20000)
>>> res = detbal.analyze(kernel, seed=0)
>>> res.potential.value("PERSONAL"), res.global_test.p_value, res.verdict
>>> res.save("out/")            # summary.json, potential.csv, report.md, figures

:func:`analyze` computes the least-action potential with bootstrap errors (and the
likelihood potential with ``estimator="likelihood"``), the global cycle test and the
paper's 3-cycle test, the pair and one-sided tests against the potential, the
deviance test of quasi-symmetry, and cycle affinities with entropy production
(METHOD.md).  It writes nothing; :meth:`AnalysisResult.save` does.  The ``detbal
analyze`` command is :func:`detbal.analysis.pipeline.analyze`: load, estimate the
kernel, this function, save.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detbal import __version__
from detbal.analysis.counts import Kernel, TransitionCounts
from detbal.errors import DetbalError
from detbal.io import json_safe
from detbal.progress import ProgressUI

if TYPE_CHECKING:
    from detbal.analysis.balance import GlobalTest, OneSidedTest, PairTest, TripletTest
    from detbal.analysis.likelihood import DevianceTest, LikelihoodFit
    from detbal.analysis.nonequilibrium import Nonequilibrium
    from detbal.analysis.potential import PotentialFit
    from detbal.analysis.summary import PotentialSummary

#: potential estimators of :func:`analyze`
ESTIMATORS: tuple[str, ...] = ("least_action", "likelihood")


@dataclass(frozen=True)
class AnalysisSettings:
    """The options :func:`analyze` ran with (the kernel's own ``n0``, cut and total attempts
    are on :class:`~detbal.analysis.counts.Kernel`)."""

    penalty: str = "exp"
    beta: float = 1.0
    bootstrap: int = 100
    test_simulations: int = 200
    stop_early: bool = False
    triplet_min_count: float = 0.0
    gauge: str = "mean"
    solver: str = "newton"
    estimator: str = "least_action"
    deviance: bool = False
    seed: int = 0


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """Everything one analysis of a kernel found (frozen; arrays are not copied; compared and
    hashed by identity, since its parts hold arrays).

    ``potential`` is the least-action potential with bootstrap errors (``.value(state)``,
    ``.V``, ``.stderr``, ``.flags``); ``likelihood`` the likelihood potential when
    ``estimator="likelihood"`` (its ``.potential`` then also serves the pair and one-sided
    tests).  ``global_test``, ``triplet_test`` (the paper's 3-cycle test) and ``deviance``
    test detailed balance; ``pair_test`` and ``one_sided`` compare the kernel with the
    potential; ``nonequilibrium`` holds cycle affinities and entropy production.
    ``timings`` are seconds per stage.
    """

    kernel: Kernel
    potential: PotentialFit
    potential_summary: PotentialSummary
    global_test: GlobalTest
    triplet_test: TripletTest
    pair_test: PairTest
    one_sided: OneSidedTest
    deviance: DevianceTest | None
    nonequilibrium: Nonequilibrium
    verdict: str
    settings: AnalysisSettings
    timings: Mapping[str, float] = field(default_factory=dict)
    likelihood: LikelihoodFit | None = None
    input: str | None = None
    #: what made outcomes one state when the counts were loaded ("text" or "canonical")
    state_identity: str = "text"

    def __repr__(self) -> str:
        g = self.global_test
        return (f"AnalysisResult({self.kernel.n_states} states, {len(self.kernel.src)} edges;"
                f" global test p = {g.p_value:.3g} (df {g.df}); {self.verdict!r})")

    @property
    def states(self) -> tuple[str, ...]:
        return self.kernel.states

    @property
    def escape_fraction(self) -> float:
        """Fraction of all attempts that ended in an escape or a self-loop."""
        c = self.kernel.counts
        return float((c.escapes.sum() + c.self_loops.sum()) / max(c.total_attempts, 1))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe summary (NaN -> None): exactly what ``summary.json`` holds, less the
        figure list and the figures' timing that :meth:`save` adds."""
        k, c, fit, s = self.kernel, self.kernel.counts, self.potential, self.settings
        out: dict[str, Any] = {
            "detbal_version": __version__,
            "input": self.input,
            "settings": {
                "states": self.state_identity, "kernel": s.penalty, "beta": s.beta, "n0": k.mode, "min_source_count": k.min_source_count,
                "attempts": k.total_attempts, "bootstrap": s.bootstrap,
                "test_simulations": s.test_simulations, "stop_early": s.stop_early,
                "triplet_min_count": s.triplet_min_count,
                "gauge": fit.gauge, "solver": s.solver, "seed": s.seed, "estimator": s.estimator,
                "deviance_test": s.deviance,
            },
            "data": {
                "states": c.n_states, "edges": len(c.src), "kept_edges": len(k.src),
                "sources": k.n_sources, "total_attempts": k.total_attempts,
                "escape_fraction": self.escape_fraction,
            },
            "verdict": self.verdict,
            "detailed_balance": {"global": self.global_test.as_dict(),
                                 "triplet_paper": self.triplet_test.as_dict(),
                                 "deviance": None if self.deviance is None else self.deviance.as_dict()},
            "pair_test": {**self.pair_test.as_dict(), "estimator": s.estimator},
            "one_sided": self.one_sided.as_dict(),
            "potential": {**self.potential_summary.as_dict(), "converged": fit.converged,
                          "iterations": fit.iterations},
            "nonequilibrium": {**self.nonequilibrium.as_dict(),
                               "top_cycles": self.nonequilibrium.top_cycles(10, k.states)},
            "timings": dict(self.timings),
        }
        if self.likelihood is not None:
            from detbal.analysis.summary import summarise

            out["likelihood_potential"] = {**summarise(k, self.likelihood.potential).as_dict(),
                                           **self.likelihood.as_dict()}
        return json_safe(out)

    def potential_table(self) -> list[dict[str, Any]]:
        """potential.csv's rows: ``state, V, stderr, sources, flag`` (numbers as text, empty
        for flagged states); with the likelihood potential, its ``V``, ``stderr`` (Laplace)
        and ``stderr_bootstrap`` first and the least-action columns beside."""
        records = self.potential.to_records()
        return records if self.likelihood is None else _side_by_side(records, self.likelihood)

    def save(self, out_dir: str | Path, *, figures: bool = True) -> dict[str, Any]:
        """Write ``summary.json`` and ``potential.csv`` into ``out_dir`` (created), and with
        ``figures`` the PNG figures and ``report.md``; returns the summary as written."""
        from detbal.analysis.report import save_result

        return save_result(self, Path(out_dir), figures=figures)


def _side_by_side(records: list[dict[str, Any]], lik: LikelihoodFit) -> list[dict[str, Any]]:
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


class Timer:
    """Seconds per named stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 4)


def verdict(g: GlobalTest) -> str:
    """One line on detailed balance from the global cycle test."""
    if g.df <= 0 or not math.isfinite(g.p_value):
        return "untestable: no independent cycle among the pairs observed both ways"
    if g.rejects:
        how = "" if g.p is None or g.p.bound is None else \
            f", a tail estimate beyond {g.n_bootstrap} simulations (bound p < {g.p.bound:.3g})"
        return f"detailed balance rejected (global test p = {g.p_value:.3g}{how})"
    return f"consistent with detailed balance (global test p = {g.p_value:.3g})"


def analyze(
    kernel: Kernel,
    *,
    seed: int = 0,
    penalty: str = "exp",
    beta: float = 1.0,
    estimator: str = "least_action",
    deviance: bool | None = None,
    bootstrap: int = 100,
    test_simulations: int = 200,
    stop_early: bool = False,
    triplet_min_count: float = 0.0,
    gauge: str = "mean",
    solver: str = "newton",
    n_jobs: int = 1,
    scheduler: Any = None,
    progress: ProgressUI | None = None,
    input: str | None = None,
    on_ready: Callable[[Mapping[str, Any]], None] | None = None,
) -> AnalysisResult:
    """Analyse an estimated kernel (:func:`detbal.estimate_kernel`); returns the result, writes
    nothing.

    ``penalty``: the action's K(x), ``"exp"`` (exp(-beta x / 2), the paper's) or
    ``"softplus"``; ``estimator``: ``"least_action"`` (the paper's) or ``"likelihood"``
    (the quasi-symmetry likelihood potential, fitted beside the least-action one and used
    for the pair tests).  ``deviance``: run the deviance (likelihood-ratio) test of
    quasi-symmetry; ``None`` (default) runs it with the likelihood estimator only, since its
    simulations refit the likelihood model and cost more than every other stage together.
    ``bootstrap``: resamples for the errors of V and the
    nonequilibrium intervals (0: none); ``test_simulations``: parametric-bootstrap
    simulations for the cycle and deviance tests' p-values; ``stop_early``: end those
    once the 5% decision is settled (the Monte-Carlo error is reported).
    ``triplet_min_count``: the paper's count cut for 3-cycles (0 for words, 1 for the
    fitting agent).  ``gauge``: ``"mean"`` or a state that gets V = 0.  ``seed`` fixes
    every random draw (no global random state is used); ``n_jobs`` threads (0: every
    core) give the same numbers as one.  ``scheduler`` sends the bootstrap replicates and
    the test simulations elsewhere instead, with the same numbers: a Dask scheduler
    address, ``"local[:N]"`` (a Dask LocalCluster of N processes for this call), a
    ``distributed.Client`` (left open) or ``"processes[:N]"``
    (:func:`detbal.parallel.make_backend`).  ``progress``: an object with
    ``progress(total, desc)`` (the CLI's progress bars).  ``input`` names the data in the
    summary and report.  ``on_ready``: called with the parts computed so far (keyed like
    the result's fields) after each stage, so figures can be drawn meanwhile.
    """
    from detbal.analysis.balance import balance_tests, one_sided_test, pair_test
    from detbal.analysis.potential import LeastActionPotential
    from detbal.analysis.resample import SequentialStop, available_cores
    from detbal.analysis.summary import summarise

    if not isinstance(kernel, Kernel):
        hint = ("detbal.estimate_kernel(counts) first" if isinstance(kernel, TransitionCounts)
                else "detbal.estimate_kernel(detbal.load_counts(path)) first")
        raise TypeError(f"analyze: kernel must be a Kernel, got {type(kernel).__name__}; use {hint}")
    if estimator not in ESTIMATORS:
        raise DetbalError(f"unknown estimator {estimator!r}: use one of {', '.join(ESTIMATORS)}")
    for name, value in (("bootstrap", bootstrap), ("test_simulations", test_simulations)):
        if int(value) != value or value < 0:
            raise DetbalError(f"{name} must be a non-negative integer, got {value!r}")
    where = f"{input}: " if input else ""
    if kernel.counts.count.size == 0:
        raise DetbalError(f"{where}no transitions between distinct states")
    if kernel.n_sources == 0 or len(kernel.src) == 0:
        raise DetbalError(f"{where}no source state survives the cut N0 > {kernel.min_source_count:g};"
                          " lower min_source_count")
    if deviance is None:
        deviance = estimator == "likelihood"
    settings = AnalysisSettings(penalty=penalty, beta=beta, bootstrap=bootstrap,
                                test_simulations=test_simulations, stop_early=stop_early,
                                triplet_min_count=triplet_min_count, gauge=gauge, solver=solver,
                                estimator=estimator, deviance=bool(deviance), seed=seed)
    k = kernel
    timer = Timer()
    n_jobs = available_cores() if n_jobs <= 0 else n_jobs
    stop = SequentialStop() if stop_early else None
    parts: dict[str, Any] = {"kernel": k, "likelihood": None}

    def bar(total: int, desc: str) -> AbstractContextManager[Callable[..., Any]]:
        return progress.progress(total, desc) if (progress is not None and total > 0) else nullcontext(None)

    def ready() -> None:
        if on_ready is not None:
            on_ready(dict(parts))

    from detbal.parallel import make_backend

    backend = None if scheduler is None else make_backend(scheduler, workers=n_jobs)
    try:
        least_action = LeastActionPotential(penalty=penalty, beta=beta, gauge=gauge, bootstrap=bootstrap,
                                            seed=seed, n_jobs=n_jobs, solver=solver, backend=backend)
        with timer.stage("potential"):
            fit = least_action.fit(k, errors=False)
        lik = None
        if estimator == "likelihood":
            from detbal.analysis.likelihood import LikelihoodPotential

            with timer.stage("likelihood_potential"), bar(bootstrap, "bootstrap of the likelihood V") as tick:
                lik = LikelihoodPotential(beta=beta, gauge=gauge, bootstrap=bootstrap, seed=seed, penalty=penalty,
                                          n_jobs=n_jobs, backend=backend).fit(k, progress=tick)
        chosen = fit if lik is None else lik.potential
        with timer.stage("pair_tests"):
            parts.update(potential=fit, likelihood=lik, pair_test=pair_test(k, chosen.V, beta),
                         one_sided=one_sided_test(k, chosen.V, beta), potential_summary=summarise(k, fit))
        ready()  # figures need only the point fit and the observed statistics
        with timer.stage("balance_tests"), bar(test_simulations, "cycle-test simulations") as tick:
            tests = balance_tests(k, bootstrap=test_simulations, seed=seed,
                                  triplet_min_count=triplet_min_count, progress=tick, n_jobs=n_jobs,
                                  stop=stop, backend=backend)
        parts.update(global_test=tests.global_test, triplet_test=tests.triplet)
        ready()
        with timer.stage("potential_bootstrap"), bar(bootstrap, "bootstrap of V") as tick:
            parts["potential"] = least_action.add_errors(k, fit, progress=tick)
        from detbal.analysis.likelihood import deviance_test
        from detbal.analysis.nonequilibrium import nonequilibrium

        parts["deviance"] = None
        if deviance:
            with timer.stage("deviance_test"), bar(test_simulations, "deviance-test simulations") as tick:
                parts["deviance"] = deviance_test(k, simulations=test_simulations, seed=seed, n_jobs=n_jobs,
                                                  progress=tick, stop=stop, backend=backend)
        with timer.stage("nonequilibrium"), bar(bootstrap, "cycle-affinity bootstrap") as tick:
            parts["nonequilibrium"] = nonequilibrium(k, bootstrap=bootstrap, seed=seed, n_jobs=n_jobs,
                                                     progress=tick, backend=backend)
        ready()
        return AnalysisResult(**parts, verdict=verdict(tests.global_test), settings=settings,
                              timings=timer.timings, input=input)
    finally:
        if backend is not None:
            backend.close()
