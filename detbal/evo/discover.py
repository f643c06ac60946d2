"""Explicit potentials of a recorded run, end to end: the library behind ``detbal discover``
and ``detbal compare`` (and the demo's fitting study).

:func:`load_study` reads a run store (or any file :func:`detbal.io.load_count_rows`
accepts) into the kernel, the state features and the numeric (least-action)
potential; :func:`search_gp`, :func:`search_family49` and :func:`search_pysr` run one
engine on them; :func:`discover` and :func:`compare` do everything and write into
an output directory:

* ``summary.json``: settings, the numeric action, the engine's result and the
  comparison of the best explicit potential with the numeric one;
* ``formulas.csv``: the Pareto table (complexity, action, loss, equation, sympy,
  latex, engine);
* ``potentials.csv``: state, numeric V, stderr, explicit V;
* figures: ``compare.png`` (explicit vs numeric V), ``subgraph.png`` (frequent
  states on the explicit potential) and, for searches, ``pareto.png``.

Progress goes through an optional ``ui`` with ``ui.progress(total, desc, unit)``
(the command line's :class:`detbal.cli.UI`); nothing here prints.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from detbal.errors import DetbalError

ENGINES = ("gp", "family49", "pysr")


@dataclass(frozen=True)
class Study:
    """A run's kernel, state features and numeric potential (rows aligned with ``kernel.states``)."""

    kernel: Any
    features: Any
    fit: Any
    timings: dict[str, float] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        k, fit = self.kernel, self.fit
        return {"states": k.n_states, "edges": int(len(k.src)), "sources": k.n_sources,
                "total_attempts": k.total_attempts, "identifiable": int(fit.identifiable.sum()),
                "numeric_action": fit.action, "k0": fit.k0}


@dataclass(frozen=True)
class Search:
    """One engine's outcome: rows of the Pareto table, the front, the best formula, the
    explicit potential to compare (a formula or V per state) and engine details."""

    formulas: list[Any]
    front: list[Any]
    best: Any
    explicit: Any
    details: dict[str, Any]


@contextmanager
def _no_bar() -> Iterator[Callable[..., Any]]:
    yield lambda n=1, **postfix: None


def _bar(ui: Any, total: int | None, desc: str, unit: str) -> AbstractContextManager[Callable[..., Any]]:
    return ui.progress(total, desc, unit=unit) if ui is not None else _no_bar()


def load_study(
    run: str | Path,
    *,
    n0: Literal["empirical", "uniform"] = "empirical",
    min_source_count: float | None = None,
    attempts: float | None = None,
    kind: Literal["auto", "words", "ansatz"] = "auto",
    mode: Literal["fixed", "paper"] = "fixed",
    kernel: str = "exp",
    beta: float = 1.0,
    bootstrap: int = 0,
    seed: int = 0,
    targets: Literal["kept", "all"] = "kept",
    stored_features: bool = True,
    require_identifiable: bool = True,
    ui: Any = None,
) -> Study:
    """Kernel, features and least-action potential of ``run``.

    Raises if no state has an identifiable numeric potential (no observed cycle) unless
    ``require_identifiable`` is false: an explicit potential can still be fitted to the
    transitions then (the action orders them downhill), only the comparison with the
    numeric potential has nothing to compare.  ``targets``: which edges the kernel keeps
    (:func:`detbal.evo.transitions.load_run`; ``"all"`` keeps every edge out of a source
    that passes the N0 cut, the published explicit-potential objective);
    ``stored_features``: also the numeric features the store recorded per state.
    """
    from detbal.analysis.potential import LeastActionPotential
    from detbal.evo.transitions import load_run

    if beta <= 0:
        raise DetbalError(f"beta must be positive, got {beta}")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with _bar(ui, None, "features", "state") as bar:
        k, F = load_run(run, n0, min_source_count=min_source_count, total_attempts=attempts,
                        kind=kind, mode=mode, targets=targets,
                        stored_features=stored_features, progress=bar)
    timings["load"] = time.perf_counter() - t
    t = time.perf_counter()
    est = LeastActionPotential(kernel=kernel, beta=beta, bootstrap=bootstrap, seed=seed)
    with _bar(ui, bootstrap or None, "numeric V", "rep") as bar:
        fit = est.fit(k, progress=bar)
    timings["numeric_potential"] = time.perf_counter() - t
    if require_identifiable and not fit.identifiable.any():
        raise DetbalError(f"{run}: no state has an identifiable potential (no observed cycles)")
    return Study(k, F, fit, timings)


def gp_features(F: Any, kernel: Any) -> tuple[Any, tuple[str, ...], dict[str, str]]:
    """Feature columns for GP: identifiers, constant columns (over used states) dropped."""
    import numpy as np

    from detbal.evo import registry
    from detbal.evo.compare import feature_rows

    X = feature_rows(F, kernel.states)
    used = np.unique(np.concatenate([kernel.src, kernel.dst]))
    keep = [j for j in range(X.shape[1]) if np.ptp(X[used, j]) > 0]
    if not keep:
        raise DetbalError("every feature is constant over the states: nothing to build formulas from")
    symbols = registry.symbol_names(F.names)
    names = tuple(symbols[j] for j in keep)
    mapping = {symbols[j]: F.names[j] for j in keep if symbols[j] != F.names[j]}
    return X[:, keep], names, mapping


def search_gp(study: Study, *, population: int = 200, generations: int = 30,
              operators: Sequence[str] | None = None, scheduler: Any = None, kernel: str = "exp",
              beta: float = 1.0, seed: int = 0, ui: Any = None) -> Search:
    """DEAP genetic programming with the action as fitness (:func:`detbal.evo.gp.run_gp`)."""
    from detbal.evo.gp import GPConfig, make_backend, run_gp

    if population < 4:
        raise DetbalError(f"population must be at least 4, got {population}")
    k = study.kernel
    X, names, mapping = gp_features(study.features, k)
    config = GPConfig(population=population, generations=generations,
                      **({"operators": tuple(operators)} if operators else {}))
    backend = make_backend(scheduler)
    try:
        with _bar(ui, generations, "gp", "gen") as bar:
            res = run_gp(X, names, k.src, k.dst, k.T, max(k.n_sources, 1), kernel=kernel, beta=beta,
                         config=config, seed=seed, backend=backend, progress=bar)
    finally:
        backend.close()
    details = {"evaluations": res.evaluations, "generations": res.generations, "seconds": res.seconds,
               "features": list(names), "renamed_features": mapping,
               "scheduler": getattr(backend, "name", "custom"), "history": list(res.history)}
    return Search(list(res.formulas), list(res.front), res.best, res.best, details)


def search_family49(study: Study, *, method: Literal["cmaes", "scipy"] = "cmaes", max_evals: int = 3000,
                    kernel: str = "exp", beta: float = 1.0, seed: int = 0, ui: Any = None) -> Search:
    """The paper's 49-parameter family, its parameters tuned to the action (ansatz states only)."""
    import sympy

    from detbal.evo.family49 import fit_family49
    from detbal.evo.pareto import Formula

    F = study.features
    if F.kind != "ansatz":
        raise DetbalError(f"the 49-parameter family needs ansatz states, not {F.kind} states"
                          " (kind='ansatz' forces the ansatz features)")
    with _bar(ui, max_evals, "family49", "eval") as bar:
        res = fit_family49(F, study.kernel, method=method, seed=seed, kernel_name=kernel, beta=beta,
                           max_evals=max_evals, progress=bar)
    rows = [
        Formula(expr=sympy.Symbol("family49_defaults"), names=(), complexity=49,
                action=res.action_default, loss=res.action_default, engine="family49",
                equation="49-parameter family, published defaults"),
        Formula(expr=sympy.Symbol("family49_tuned"), names=(), complexity=49, action=res.action,
                loss=res.action, engine="family49",
                equation=f"49-parameter family, tuned ({res.method}, {res.n_evals} evaluations)"),
    ]
    details = {"action": res.action, "action_default": res.action_default, "method": res.method,
               "n_evals": res.n_evals, "params": res.params, "direction": res.direction,
               "direction_default": res.direction_default, "elapsed_s": res.elapsed_s}
    return Search(rows, [], None, res.V, details)


def search_pysr(study: Study, *, iterations: int = 40, kernel: str = "exp", beta: float = 1.0,
                seed: int = 0) -> Search:
    """PySR (needs Julia; check :func:`detbal.evo.pysr_engine.probe` first)."""
    from detbal.evo.pareto import pareto_front
    from detbal.evo.pysr_engine import PySRSettings, run_pysr

    k = study.kernel
    X, names, mapping = gp_features(study.features, k)
    found = run_pysr(X, names, study.fit, k, kernel_name=kernel, beta=beta, seed=seed,
                     settings=PySRSettings(niterations=max(1, iterations)))
    if not found:
        raise DetbalError("PySR returned no usable equation")
    best = min(found, key=lambda f: (f.action, f.complexity))
    return Search(sorted(found, key=lambda f: f.complexity), list(pareto_front(found)), best, best,
                  {"features": list(names), "renamed_features": mapping})


def formula_info(f: Any) -> dict[str, Any]:
    """A formula as a summary.json entry."""
    return {"complexity": f.complexity, "action": f.action, "loss": f.loss, "equation": f.equation,
            "sympy": f.sympy, "latex": f.latex, "engine": f.engine}


def discover(
    run: str | Path,
    out: str | Path,
    *,
    engine: str = "gp",
    n0: Literal["empirical", "uniform"] = "empirical",
    min_source_count: float | None = None,
    attempts: float | None = None,
    kernel: str = "exp",
    beta: float = 1.0,
    mode: Literal["fixed", "paper"] = "fixed",
    kind: Literal["auto", "words", "ansatz"] = "auto",
    bootstrap: int = 0,
    holdout: float = 0.2,
    seed: int = 0,
    generations: int = 30,
    population: int = 200,
    scheduler: Any = None,
    operators: Sequence[str] | None = None,
    max_evals: int = 3000,
    method: Literal["cmaes", "scipy"] = "cmaes",
    iterations: int = 40,
    figures: bool = True,
    targets: Literal["kept", "all"] = "kept",
    stored_features: bool = True,
    require_identifiable: bool = True,
    ui: Any = None,
) -> dict[str, Any]:
    """Search for an explicit potential of ``run`` with ``engine``, compare it with the numeric
    one and write the outputs into ``out``; returns the summary (also ``out/summary.json``).
    ``targets``, ``stored_features`` and ``require_identifiable``: see :func:`load_study`."""
    if engine not in ENGINES:
        raise DetbalError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    _check(beta, holdout)
    settings = {"run": str(run), "n0": n0, "min_source_count": min_source_count, "attempts": attempts,
                "kernel": kernel, "beta": beta, "mode": mode, "kind": kind, "bootstrap": bootstrap,
                "holdout": holdout, "seed": seed, "engine": engine, "generations": generations,
                "population": population, "scheduler": scheduler,
                "operators": ",".join(operators) if operators else None, "max_evals": max_evals,
                "method": method, "iterations": iterations, "targets": targets,
                "stored_features": stored_features}
    if engine == "gp" and population < 4:
        raise DetbalError(f"population must be at least 4, got {population}")
    study = load_study(run, n0=n0, min_source_count=min_source_count, attempts=attempts, kind=kind,
                       mode=mode, kernel=kernel, beta=beta, bootstrap=bootstrap, seed=seed,
                       targets=targets, stored_features=stored_features,
                       require_identifiable=require_identifiable, ui=ui)
    timings = dict(study.timings)
    summary: dict[str, Any] = {"engine": engine, "status": "ok", "settings": settings,
                               "kernel": study.info()}
    t = time.perf_counter()
    if engine == "gp":
        found = search_gp(study, population=population, generations=generations, operators=operators,
                          scheduler=scheduler, kernel=kernel, beta=beta, seed=seed, ui=ui)
    elif engine == "family49":
        found = search_family49(study, method=method, max_evals=max_evals, kernel=kernel, beta=beta,
                                seed=seed, ui=ui)
    else:
        found = search_pysr(study, iterations=iterations, kernel=kernel, beta=beta, seed=seed)
    timings["search"] = time.perf_counter() - t
    summary[engine] = found.details
    fit = study.fit
    if found.best is not None:
        summary["best"] = formula_info(found.best)
        summary["best"]["excess"] = found.best.action / fit.action - 1.0 if fit.action > 0 else None
    summary["pareto"] = [formula_info(f) for f in found.front]
    t = time.perf_counter()
    cmp = _compare(study, found.explicit, kernel, beta, holdout, seed)
    timings["compare"] = time.perf_counter() - t
    summary["comparison"] = cmp.to_dict()
    summary["timings"] = timings
    write_outputs(Path(out), study, cmp, found.formulas, summary, figures=figures, front=found.front)
    return summary


def compare(
    run: str | Path,
    out: str | Path,
    potential: Any,
    *,
    n0: Literal["empirical", "uniform"] = "empirical",
    min_source_count: float | None = None,
    attempts: float | None = None,
    kernel: str = "exp",
    beta: float = 1.0,
    mode: Literal["fixed", "paper"] = "fixed",
    kind: Literal["auto", "words", "ansatz"] = "auto",
    bootstrap: int = 0,
    holdout: float = 0.2,
    seed: int = 0,
    figures: bool = True,
    ui: Any = None,
) -> dict[str, Any]:
    """``potential`` (a formula over feature names, 'family49', a state,V CSV or a formulas.csv)
    beside the numeric potential of ``run``; writes into ``out`` and returns the summary."""
    from detbal.evo import registry
    from detbal.evo.pareto import Formula

    _check(beta, holdout)
    settings = {"run": str(run), "n0": n0, "min_source_count": min_source_count, "attempts": attempts,
                "kernel": kernel, "beta": beta, "mode": mode, "kind": kind, "bootstrap": bootstrap,
                "holdout": holdout, "seed": seed, "potential": str(potential)}
    study = load_study(run, n0=n0, min_source_count=min_source_count, attempts=attempts, kind=kind,
                       mode=mode, kernel=kernel, beta=beta, bootstrap=bootstrap, seed=seed, ui=ui)
    timings = dict(study.timings)
    t = time.perf_counter()
    cmp = _compare(study, potential, kernel, beta, holdout, seed)
    timings["compare"] = time.perf_counter() - t
    summary: dict[str, Any] = {"status": "ok", "settings": settings, "kernel": study.info(),
                               "comparison": cmp.to_dict(), "timings": timings}
    formulas: list[Any] = []
    finfo = cmp.metrics.get("formula")
    if finfo:
        names = registry.symbol_names(study.features.names)
        act = cmp.metrics["action"].get("explicit_all_edges")
        act = math.nan if act is None else float(act)
        formulas.append(Formula(expr=registry.parse_formula(finfo["sympy"], names), names=names,
                                complexity=finfo["complexity"], action=act, loss=act, engine="user",
                                equation=str(potential)))
    write_outputs(Path(out), study, cmp, formulas, summary, figures=figures)
    return summary


def _check(beta: float, holdout: float) -> None:
    if beta <= 0:
        raise DetbalError(f"beta must be positive, got {beta}")
    if not 0.0 <= holdout < 1.0:
        raise DetbalError(f"holdout must be in [0, 1), got {holdout}")


def _compare(study: Study, explicit: Any, kernel: str, beta: float, holdout: float, seed: int) -> Any:
    from detbal.evo.compare import compare_potentials

    return compare_potentials(study.kernel, explicit, features=study.features, fit=study.fit,
                              kernel_name=kernel, beta=beta, holdout=holdout, seed=seed)


def write_outputs(out: Path, study: Study, cmp: Any, formulas: list[Any], summary: dict[str, Any], *,
                  figures: bool = True, front: list[Any] | None = None) -> None:
    """summary.json, formulas.csv, potentials.csv and the figures; ``summary["files"]`` lists them."""
    from detbal.evo.compare import plot_comparison, plot_subgraph
    from detbal.evo.pareto import write_table
    from detbal.io import export_table

    kernel, fit = study.kernel, study.fit
    out.mkdir(parents=True, exist_ok=True)
    write_table(formulas, out / "formulas.csv")
    rows = [
        {"state": s, "V_numeric": _num(fit.V[i]), "stderr": _num(fit.stderr[i]),
         "V_explicit": _num(cmp.V_explicit[i]), "flag": fit.flags[i]}
        for i, s in enumerate(kernel.states)
    ]
    export_table(rows, ["state", "V_numeric", "stderr", "V_explicit", "flag"], out / "potentials.csv")
    made: list[str] = []
    if figures:
        for name, path in (
            ("compare.png", plot_comparison(cmp, out / "compare.png")),
            ("subgraph.png", plot_subgraph(kernel, cmp.V_explicit, out / "subgraph.png",
                                           threshold=0.05)),
            ("pareto.png", plot_front(front, fit.action, out / "pareto.png") if front else None),
        ):
            if path is not None:
                made.append(name)
    summary["files"] = ["summary.json", "formulas.csv", "potentials.csv", *made]
    (out / "summary.json").write_text(json.dumps(_json(summary), indent=2) + "\n", encoding="utf-8")


def plot_front(front: list[Any], s_min: float, path: Path) -> Path | None:
    """The Pareto front (complexity vs action) with the numeric minimum."""
    from detbal.evo.compare import _finish, _pyplot

    pts = [(f.complexity, f.action) for f in front if math.isfinite(f.action)]
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    xs, ys = zip(*pts)
    ax.step(xs, ys, where="post", color="tab:blue")
    ax.plot(xs, ys, "o", color="tab:blue", ms=4)
    ax.axhline(s_min, color="k", ls="--", lw=1, label="numeric minimum")
    ax.set_xlabel("complexity")
    ax.set_ylabel("action S")
    ax.legend(fontsize=8)
    ax.set_title("Pareto front", fontsize=9)
    return _finish(fig, path)


def _num(x: float) -> str:
    return f"{x:.6g}" if math.isfinite(x) else ""


def _json(obj: Any) -> Any:
    from detbal.analysis.pipeline import json_safe

    return json_safe(obj)
