"""Discovery engines: one protocol, one result type.

An engine turns a :class:`~detbal.evo.discover.Study` (kernel, state features,
numeric potential) into a :class:`Search`: the rows of the Pareto table, every one
a :class:`~detbal.evo.pareto.Formula` built through the operator registry, the
front and the best formula.  Four engines:

========  =====================================================  ===============
name      what it minimises                                      needs
========  =====================================================  ===============
gp        the action S[a * tree(features)] (DEAP GP)              deap
family49  S of the paper's 49-parameter family (CMA-ES)          deap, ansatz states
operon    squared error to the numeric V (pyoperon), then S       pyoperon
pysr      squared error to the numeric V (PySR), then S           Julia, pysr
========  =====================================================  ===============

The regression engines fit V_N on the identifiable states and every equation they
report is rescored by the action at its best scale, so all four share one table.
:func:`make_engine` builds an engine from its name and settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol, runtime_checkable

from detbal.errors import DetbalError
from detbal.progress import ProgressUI


@dataclass(frozen=True)
class Search:
    """One engine's outcome: the table's rows, the front and the best formula."""

    formulas: tuple[Any, ...]
    front: tuple[Any, ...]
    best: Any
    details: dict[str, Any]


@runtime_checkable
class Engine(Protocol):
    """``engine.run(study, penalty=, beta=, seed=, ui=) -> Search``; ``name`` labels its rows."""

    name: str

    def run(self, study: Any, *, penalty: str, beta: float, seed: int, ui: ProgressUI | None = None) -> Search: ...


@contextmanager
def _no_bar() -> Any:
    yield lambda n=1, **postfix: None


def progress_bar(ui: ProgressUI | None, total: int | None, desc: str, unit: str) -> AbstractContextManager[Callable[..., Any]]:
    """``ui.progress(...)`` when a ui is given, else a no-op."""
    return ui.progress(total, desc, unit=unit) if ui is not None else _no_bar()


def gp_features(F: Any, kernel: Any) -> tuple[Any, tuple[str, ...], dict[str, str]]:
    """Feature columns for formulas: identifiers, constant columns (over used states) dropped."""
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


def scored_formula(expr: Any, X: Any, names: Sequence[str], kernel: Any, *, penalty: str, beta: float,
                   engine: str, loss: float, equation: str, meta: dict[str, Any] | None = None) -> Any:
    """A regression engine's equation as a :class:`Formula`: registry operators, scored by the
    action at its best scale on every edge with T > 0 (the scale goes into the expression)."""
    import sympy

    from detbal.evo import registry
    from detbal.evo.compare import scale_for_action
    from detbal.evo.pareto import Formula

    expr = registry.from_sympy(expr)
    V = registry.to_numpy(expr, names)(X)
    S, a = scale_for_action(V, kernel, kernel.T > 0, penalty=penalty, beta=beta)
    scaled = sympy.Float(a, 17) * expr if math.isfinite(a) and a != 0 else expr
    return Formula(expr=scaled, names=tuple(names), complexity=registry.sympy_complexity(expr),
                   action=float(S), loss=float(loss), engine=engine, equation=equation,
                   scale=float(a), meta=dict(meta or {}))


def _search(rows: Sequence[Any], details: dict[str, Any]) -> Search:
    from detbal.evo.pareto import pareto_front

    finite = [f for f in rows if math.isfinite(f.action)]
    if not finite:
        raise DetbalError("the engine found no formula with a finite action")
    best = min(finite, key=lambda f: (f.action, f.complexity))
    return Search(tuple(sorted(rows, key=lambda f: (f.complexity, f.action))),
                  tuple(pareto_front(rows)), best, details)


# -- engines --------------------------------------------------------------------------
@dataclass(frozen=True)
class GPEngine:
    """DEAP genetic programming with the action as fitness (:func:`detbal.evo.gp.run_gp`)."""

    population: int = 200
    generations: int = 30
    operators: tuple[str, ...] | None = None
    scheduler: Any = None
    name: str = "gp"

    def __post_init__(self) -> None:
        if self.population < 4:
            raise ValueError(f"population must be at least 4, got {self.population}")

    def run(self, study: Any, *, penalty: str = "exp", beta: float = 1.0, seed: int = 0,
            ui: ProgressUI | None = None) -> Search:
        from detbal.evo.gp import GPConfig, make_backend, run_gp

        k = study.kernel
        X, names, mapping = gp_features(study.features, k)
        config = GPConfig(population=self.population, generations=self.generations,
                          **({"operators": tuple(self.operators)} if self.operators else {}))
        backend = make_backend(self.scheduler)
        try:
            with progress_bar(ui, self.generations, "gp", "gen") as bar:
                res = run_gp(X, names, k.src, k.dst, k.T, max(k.n_sources, 1), penalty=penalty,
                             beta=beta, config=config, seed=seed, backend=backend, progress=bar)
        finally:
            backend.close()
        details = {"evaluations": res.evaluations, "generations": res.generations,
                   "seconds": res.seconds, "features": list(names), "renamed_features": mapping,
                   "scheduler": getattr(backend, "name", "custom"), "history": list(res.history)}
        out = _search(res.formulas, details)
        return Search(out.formulas, tuple(res.front), res.best, details)


@dataclass(frozen=True)
class Family49Engine:
    """The paper's 49-parameter family, its parameters tuned to the action (ansatz states)."""

    method: Literal["cmaes", "scipy"] = "cmaes"
    max_evals: int = 3000
    name: str = "family49"

    def run(self, study: Any, *, penalty: str = "exp", beta: float = 1.0, seed: int = 0,
            ui: ProgressUI | None = None) -> Search:
        from detbal.evo import registry
        from detbal.evo.family49 import family_expression, fit_family49
        from detbal.evo.features import FAMILY_COLUMNS
        from detbal.evo.pareto import Formula

        F = study.features
        if F.kind != "ansatz":
            raise DetbalError(f"the 49-parameter family needs ansatz states, not {F.kind} states"
                              " (kind='ansatz' forces the ansatz features)")
        with progress_bar(ui, self.max_evals, "family49", "eval") as bar:
            res = fit_family49(F, study.kernel, method=self.method, seed=seed, penalty=penalty,
                               beta=beta, max_evals=self.max_evals, progress=bar)

        def row(params: Any, action: float, label: str) -> Formula:
            expr = family_expression(params)
            return Formula(expr=expr, names=FAMILY_COLUMNS, complexity=registry.sympy_complexity(expr),
                           action=action, loss=action, engine="family49",
                           equation=f"49-parameter family, {label}", meta={"params": dict(params)})

        rows = [row(res.params_default, res.action_default, "published defaults"),
                row(res.params, res.action, f"tuned ({res.method}, {res.n_evals} evaluations)")]
        details = {"action": res.action, "action_default": res.action_default, "method": res.method,
                   "n_evals": res.n_evals, "params": res.params, "direction": res.direction,
                   "direction_default": res.direction_default, "elapsed_s": res.elapsed_s}
        return Search(tuple(rows), tuple(_search(rows, details).front), rows[1], details)


#: pyoperon's names of the registry's default operators (log and sqrt of |x|, as the registry's)
OPERON_SYMBOLS: dict[str, str] = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "exp": "exp",
                                  "log": "logabs", "sqrt": "sqrtabs", "square": "square",
                                  "tanh": "tanh", "abs": "abs", "sin": "sin", "cos": "cos"}


@dataclass(frozen=True)
class OperonEngine:
    """pyoperon (C++ symbolic regression, no Julia) on the numeric potential, rescored by the action.

    Regresses V_N on the features of the identifiable states (objectives: R^2 and
    length), then converts every equation of its Pareto front through the registry
    and scores it like :func:`scored_formula`.  ``max_time`` (seconds) and
    ``max_evaluations`` stop the search early.
    """

    population: int = 500
    generations: int = 100
    max_length: int = 30
    max_evaluations: int = 1_000_000
    max_time: int | None = None
    operators: tuple[str, ...] = ("add", "sub", "mul", "div", "exp", "log", "sqrt", "square", "tanh",
                                  "abs")
    name: str = "operon"

    def __post_init__(self) -> None:
        unknown = [o for o in self.operators if o not in OPERON_SYMBOLS]
        if unknown:
            raise ValueError(f"operators {', '.join(unknown)} have no pyoperon counterpart"
                              f" (choose from {', '.join(OPERON_SYMBOLS)})")
        if self.population < 4:
            raise ValueError(f"population must be at least 4, got {self.population}")

    def run(self, study: Any, *, penalty: str = "exp", beta: float = 1.0, seed: int = 0,
            ui: ProgressUI | None = None) -> Search:
        import time

        import numpy as np
        import sympy

        from detbal.evo.pysr_engine import regression_target

        try:
            from pyoperon.sklearn import SymbolicRegressor
        except ImportError:
            raise DetbalError("the operon engine needs pyoperon: pip install 'detbal[evo]'") from None
        k = study.kernel
        X, names, mapping = gp_features(study.features, k)
        rows, y, _ = regression_target(study.fit)
        if rows.size < 3:
            raise DetbalError("fewer than 3 identifiable states: nothing for operon to regress on")
        symbols = ",".join(OPERON_SYMBOLS[o] for o in self.operators) + ",constant,variable"
        model = SymbolicRegressor(
            allowed_symbols=symbols, population_size=self.population, generations=self.generations,
            max_length=self.max_length, max_evaluations=self.max_evaluations, max_time=self.max_time,
            objectives=["r2", "length"], n_threads=1, random_state=int(seed) % 2**32,
        )
        t0 = time.perf_counter()
        with progress_bar(ui, None, "operon", "run") as bar:
            model.fit(np.asarray(X, dtype=np.float64)[rows], y)
            bar(1)
        seconds = time.perf_counter() - t0
        local = {n: sympy.Symbol(n) for n in names} | {"square": lambda a: a**2}
        out = []
        for p in model.pareto_front_:
            text = model.get_model_string(p["tree"], 17, list(names))
            try:
                expr = sympy.sympify(text, locals=local)
            except (sympy.SympifyError, SyntaxError, TypeError, ValueError):
                continue
            out.append(scored_formula(expr, X, names, k, penalty=penalty, beta=beta, engine="operon",
                                      loss=float(p["mean_squared_error"]), equation=text,
                                      meta={"operon_complexity": int(p["complexity"])}))
        details = {"seconds": seconds, "features": list(names), "renamed_features": mapping,
                   "regressed_states": int(rows.size), "front_size": len(model.pareto_front_)}
        return _search(out, details)


@dataclass(frozen=True)
class PySREngine:
    """PySR (needs Julia; :func:`detbal.evo.pysr_engine.probe` says whether it can run)."""

    iterations: int = 40
    name: str = "pysr"

    def run(self, study: Any, *, penalty: str = "exp", beta: float = 1.0, seed: int = 0,
            ui: ProgressUI | None = None) -> Search:
        from detbal.evo.pysr_engine import PySRSettings, run_pysr

        k = study.kernel
        X, names, mapping = gp_features(study.features, k)
        found = run_pysr(X, names, study.fit, k, penalty=penalty, beta=beta, seed=seed,
                         settings=PySRSettings(niterations=max(1, self.iterations)))
        if not found:
            raise DetbalError("PySR returned no usable equation")
        return _search(found, {"features": list(names), "renamed_features": mapping})


ENGINES: dict[str, type] = {"gp": GPEngine, "family49": Family49Engine, "operon": OperonEngine,
                            "pysr": PySREngine}


def make_engine(engine: str | Engine, **settings: Any) -> Engine:
    """An engine from its name (``gp``, ``family49``, ``operon``, ``pysr``) and its settings;
    an :class:`Engine` instance is returned as it is (then ``settings`` must be empty)."""
    if not isinstance(engine, str):
        if settings:
            raise ValueError(f"settings {', '.join(settings)} given with an engine instance")
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be one of {', '.join(ENGINES)} or an Engine, got {engine!r}")
        return engine
    cls = ENGINES.get(engine)
    if cls is None:
        raise ValueError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    allowed = {f.name for f in fields(cls)} - {"name"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise ValueError(f"engine {engine!r} takes no setting(s) {', '.join(unknown)}"
                         f" (it takes {', '.join(sorted(allowed))})")
    if "operators" in settings and settings["operators"] is not None:
        settings["operators"] = tuple(settings["operators"])
    return cls(**settings)


__all__ = [
    "ENGINES",
    "OPERON_SYMBOLS",
    "Engine",
    "Family49Engine",
    "GPEngine",
    "OperonEngine",
    "PySREngine",
    "Search",
    "gp_features",
    "make_engine",
    "progress_bar",
    "scored_formula",
]
