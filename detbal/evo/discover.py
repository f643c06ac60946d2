"""Explicit potentials: :func:`discover`, the one entry for every engine, and the
library behind ``detbal discover`` and ``detbal compare`` (and the demo's fitting study).

In a notebook::

    from detbal.evo.discover import discover
    disc = discover(kernel, engine="gp", seed=0, features=F)   # or a Study, counts, a run file
    disc.best.sympy, disc.best.latex, disc.front                # Formula rows, one registry
    disc.compare()                                              # vs the numeric potential
    disc.save("disc/")                                          # the files below

:func:`load_study` reads a run store (or any file :func:`detbal.io.load_count_rows`
accepts) into the kernel, the state features and the numeric (least-action)
potential; :func:`discover` runs one engine (:mod:`detbal.evo.engines`) on a study
and returns a frozen :class:`DiscoveryResult`; its :meth:`~DiscoveryResult.save`
writes:

* ``summary.json``: settings, the numeric action, the engine's result and the
  comparison of the best explicit potential with the numeric one;
* ``formulas.csv``: the Pareto table (complexity, action, loss, equation, sympy,
  latex, engine);
* ``potentials.csv``: state, numeric V, stderr, explicit V;
* figures: ``compare.png`` (explicit vs numeric V), ``subgraph.png`` (frequent
  states on the explicit potential) and ``pareto.png``.

Progress goes through an optional ``ui`` with ``ui.progress(total, desc, unit)``
(the command line's :class:`detbal.cli.UI`); nothing here prints.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from detbal.errors import DetbalError
from detbal.evo.engines import ENGINES as _ENGINE_TYPES
from detbal.evo.engines import Engine, Search, make_engine, progress_bar
from detbal.progress import ProgressUI

#: engine names :func:`discover` accepts
ENGINES: tuple[str, ...] = tuple(_ENGINE_TYPES)


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


def load_study(
    run: str | Path,
    *,
    n0: Literal["empirical", "uniform"] = "empirical",
    min_source_count: float | None = None,
    attempts: float | None = None,
    kind: Literal["auto", "words", "ansatz"] = "auto",
    mode: Literal["fixed", "paper"] = "fixed",
    penalty: str = "exp",
    beta: float = 1.0,
    bootstrap: int = 0,
    seed: int = 0,
    targets: Literal["kept", "all"] = "kept",
    stored_features: bool = True,
    require_identifiable: bool = True,
    ui: ProgressUI | None = None,
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
        raise ValueError(f"beta must be positive, got {beta}")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with progress_bar(ui, None, "features", "state") as bar:
        k, F = load_run(run, n0, min_source_count=min_source_count, total_attempts=attempts,
                        kind=kind, mode=mode, targets=targets,
                        stored_features=stored_features, progress=bar)
    timings["load"] = time.perf_counter() - t
    t = time.perf_counter()
    est = LeastActionPotential(penalty=penalty, beta=beta, bootstrap=bootstrap, seed=seed)
    with progress_bar(ui, bootstrap or None, "numeric V", "rep") as bar:
        fit = est.fit(k, progress=bar)
    timings["numeric_potential"] = time.perf_counter() - t
    if require_identifiable and not fit.identifiable.any():
        raise DetbalError(f"{run}: no state has an identifiable potential (no observed cycles)")
    return Study(k, F, fit, timings)


def formula_info(f: Any) -> dict[str, Any]:
    """A formula as a summary.json entry."""
    return {"complexity": f.complexity, "action": f.action, "loss": f.loss, "equation": f.equation,
            "sympy": f.sympy, "latex": f.latex, "engine": f.engine}


def study_of(data: Any, *, features: Any = None, penalty: str = "exp", beta: float = 1.0,
             kind: Literal["auto", "words", "ansatz"] = "auto", mode: Literal["fixed", "paper"] = "fixed",
             bootstrap: int = 0, seed: int = 0, require_identifiable: bool = True) -> Study:
    """A :class:`Study` from a Study (returned as is), a :class:`~detbal.analysis.counts.Kernel`,
    :class:`~detbal.analysis.counts.TransitionCounts` (empirical N0) or a run file.

    ``features``: a :class:`~detbal.evo.features.FeatureMatrix` covering the kernel's
    states; computed from the state strings (``kind``, ``mode``) when not given.
    """
    from detbal.analysis.counts import Kernel, TransitionCounts, estimate_kernel

    if isinstance(data, Study):
        return data
    if isinstance(data, (str, Path)):
        return load_study(data, kind=kind, mode=mode, penalty=penalty, beta=beta, bootstrap=bootstrap,
                          seed=seed, require_identifiable=require_identifiable)
    if isinstance(data, TransitionCounts):
        data = estimate_kernel(data)
    if not isinstance(data, Kernel):
        raise TypeError(f"data must be a Study, Kernel, TransitionCounts or a run file path,"
                         f" not {type(data).__name__}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    from detbal.analysis.potential import LeastActionPotential

    if features is None:
        from detbal.evo.features import featurize

        features = featurize(data.states, kind, mode=mode)
    t = time.perf_counter()
    fit = LeastActionPotential(penalty=penalty, beta=beta, bootstrap=bootstrap, seed=seed).fit(data)
    if require_identifiable and not fit.identifiable.any():
        raise DetbalError("no state has an identifiable potential (no observed cycles)")
    return Study(data, features, fit, {"numeric_potential": time.perf_counter() - t})


@dataclass(frozen=True)
class DiscoveryResult:
    """What :func:`discover` found, the same for every engine.

    ``best`` and every row of ``front`` / ``formulas`` are
    :class:`~detbal.evo.pareto.Formula` objects (``.sympy``, ``.latex``,
    ``.complexity``, ``.action``, ``.evaluate``), exported through the one operator
    registry; ``front`` is the (complexity, action) Pareto front, ``formulas`` every
    row of the table.  ``V`` is the best formula on the kernel's states.
    """

    engine: str
    best: Any
    front: tuple[Any, ...]
    formulas: tuple[Any, ...]
    study: Study
    details: dict[str, Any]
    settings: dict[str, Any]
    timings: dict[str, float]
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def kernel(self) -> Any:
        return self.study.kernel

    @property
    def numeric_action(self) -> float:
        return float(self.study.fit.action)

    @property
    def excess(self) -> float:
        """Relative excess of the best formula's action over the numeric minimum."""
        S0 = self.numeric_action
        return self.best.action / S0 - 1.0 if S0 > 0 else math.nan

    @property
    def V(self) -> Any:
        """The best formula's potential on the kernel's states (NaN where undefined)."""
        from detbal.evo.compare import resolve_potential

        if "V" not in self._cache:
            self._cache["V"] = resolve_potential(self.best, self.kernel.states, self.study.features).V
        return self._cache["V"]

    def table(self) -> list[dict[str, Any]]:
        """Rows of the Pareto table (:data:`detbal.evo.pareto.COLUMNS`), as ``formulas.csv``."""
        from detbal.evo.pareto import table_rows

        return table_rows(self.formulas)

    def compare(self, potential: Any = None, *, holdout: float | None = None, seed: int | None = None) -> Any:
        """The best formula beside a numeric potential (:func:`detbal.evo.compare.compare_potentials`).

        ``potential``: a :class:`~detbal.analysis.potential.PotentialFit` of the same
        kernel (or an object holding one as ``.fit``); the study's own least-action fit
        when None.  ``holdout`` and ``seed`` default to the discovery's settings.
        """
        from detbal.evo.compare import compare_potentials

        fit = self.study.fit if potential is None else getattr(potential, "fit", potential)
        for attr in ("V", "identifiable", "component", "action", "stderr"):
            if not hasattr(fit, attr):
                raise ValueError(f"potential must be a PotentialFit of the kernel, got {type(potential).__name__}")
        holdout = self.settings.get("holdout", 0.2) if holdout is None else holdout
        seed = self.settings.get("seed", 0) if seed is None else seed
        key = f"cmp:{id(fit)}:{holdout}:{seed}"
        if key not in self._cache:
            self._cache[key] = compare_potentials(
                self.kernel, self.best, features=self.study.features, fit=fit,
                penalty=self.settings.get("penalty", "exp"), beta=self.settings.get("beta", 1.0),
                holdout=holdout, seed=seed)
        return self._cache[key]

    def to_dict(self) -> dict[str, Any]:
        """The summary (``summary.json`` without its file list): settings, kernel, engine
        details, best formula, front and the comparison with the numeric potential."""
        cmp = self.compare()
        best = formula_info(self.best) | {"excess": self.excess if math.isfinite(self.excess) else None}
        return {"engine": self.engine, "status": "ok", "settings": dict(self.settings),
                "kernel": self.study.info(), self.engine: dict(self.details), "best": best,
                "pareto": [formula_info(f) for f in self.front], "comparison": cmp.to_dict(),
                "timings": dict(self.timings)}

    def save(self, out: str | Path, *, figures: bool = True) -> dict[str, Any]:
        """Write summary.json, formulas.csv, potentials.csv and the figures into ``out``;
        returns the summary written (with ``files``)."""
        t = time.perf_counter()
        summary = self.to_dict()
        summary["timings"]["compare"] = time.perf_counter() - t
        write_outputs(Path(out), self.study, self.compare(), list(self.formulas), summary,
                      figures=figures, front=list(self.front))
        return summary


def discover(
    data: Any,
    engine: str | Engine = "gp",
    *,
    seed: int = 0,
    features: Any = None,
    penalty: str = "exp",
    beta: float = 1.0,
    holdout: float = 0.2,
    kind: Literal["auto", "words", "ansatz"] = "auto",
    mode: Literal["fixed", "paper"] = "fixed",
    ui: ProgressUI | None = None,
    **settings: Any,
) -> DiscoveryResult:
    """Search for an explicit potential V(state features) with ``engine``.

    ``data``: a :class:`Study` (:func:`load_study`), a kernel, transition counts or a
    run file (see :func:`study_of`; ``features``, ``kind`` and ``mode`` only matter
    when the study is built here).  ``engine``: ``"gp"``, ``"family49"``,
    ``"operon"``, ``"pysr"`` or an :class:`~detbal.evo.engines.Engine`;
    ``settings`` go to the engine (e.g. ``population=``, ``generations=`` for gp and
    operon, ``max_evals=`` for family49, ``iterations=`` for pysr).  ``penalty``:
    the action's K (``"exp"`` or ``"softplus"``); ``holdout``: fraction of attempts
    held out by :meth:`DiscoveryResult.compare`.  Every engine returns the same
    :class:`DiscoveryResult`.
    """
    _check(beta, holdout)
    eng = make_engine(engine, **settings)
    study = study_of(data, features=features, penalty=penalty, beta=beta, kind=kind, mode=mode, seed=seed)
    t = time.perf_counter()
    found: Search = eng.run(study, penalty=penalty, beta=beta, seed=seed, ui=ui)
    timings = dict(study.timings) | {"search": time.perf_counter() - t}
    config = {k: (",".join(v) if isinstance(v, tuple) else v) for k, v in vars(eng).items()
              if k != "name" and not k.startswith("_")}
    if not isinstance(config.get("scheduler", ""), (str, type(None))):
        config["scheduler"] = type(config["scheduler"]).__name__
    run_settings = {"engine": eng.name, "seed": seed, "penalty": penalty, "beta": beta,
                    "holdout": holdout, **config}
    return DiscoveryResult(engine=eng.name, best=found.best, front=tuple(found.front),
                           formulas=tuple(found.formulas), study=study, details=dict(found.details),
                           settings=run_settings, timings=timings)


def discover_run(
    run: str | Path,
    out: str | Path,
    *,
    engine: str | Engine = "gp",
    n0: Literal["empirical", "uniform"] = "empirical",
    min_source_count: float | None = None,
    attempts: float | None = None,
    penalty: str = "exp",
    beta: float = 1.0,
    mode: Literal["fixed", "paper"] = "fixed",
    kind: Literal["auto", "words", "ansatz"] = "auto",
    bootstrap: int = 0,
    holdout: float = 0.2,
    seed: int = 0,
    figures: bool = True,
    targets: Literal["kept", "all"] = "kept",
    stored_features: bool = True,
    require_identifiable: bool = True,
    ui: ProgressUI | None = None,
    **settings: Any,
) -> DiscoveryResult:
    """:func:`load_study` of ``run``, :func:`discover` with ``engine`` and ``settings``, then
    :meth:`DiscoveryResult.save` into ``out``; returns the result (its ``settings`` name the
    run and the data options)."""
    _check(beta, holdout)
    eng = make_engine(engine, **settings)
    study = load_study(run, n0=n0, min_source_count=min_source_count, attempts=attempts, kind=kind,
                       mode=mode, penalty=penalty, beta=beta, bootstrap=bootstrap, seed=seed,
                       targets=targets, stored_features=stored_features,
                       require_identifiable=require_identifiable, ui=ui)
    res = discover(study, eng, seed=seed, penalty=penalty, beta=beta, holdout=holdout, ui=ui)
    res = replace(res, settings=res.settings | {
        "run": str(run), "n0": n0, "min_source_count": min_source_count, "attempts": attempts,
        "mode": mode, "kind": kind, "bootstrap": bootstrap, "targets": targets,
        "stored_features": stored_features})
    res.save(out, figures=figures)
    return res


def compare(
    run: str | Path,
    out: str | Path,
    potential: Any,
    *,
    n0: Literal["empirical", "uniform"] = "empirical",
    min_source_count: float | None = None,
    attempts: float | None = None,
    penalty: str = "exp",
    beta: float = 1.0,
    mode: Literal["fixed", "paper"] = "fixed",
    kind: Literal["auto", "words", "ansatz"] = "auto",
    bootstrap: int = 0,
    holdout: float = 0.2,
    seed: int = 0,
    figures: bool = True,
    ui: ProgressUI | None = None,
) -> ComparisonResult:
    """``potential`` (a formula over feature names, 'family49', a state,V CSV or a formulas.csv)
    beside the numeric potential of ``run``; :meth:`ComparisonResult.save` writes into ``out``;
    returns the result."""
    _check(beta, holdout)
    settings = {"run": str(run), "n0": n0, "min_source_count": min_source_count, "attempts": attempts,
                "penalty": penalty, "beta": beta, "mode": mode, "kind": kind, "bootstrap": bootstrap,
                "holdout": holdout, "seed": seed, "potential": str(potential)}
    study = load_study(run, n0=n0, min_source_count=min_source_count, attempts=attempts, kind=kind,
                       mode=mode, penalty=penalty, beta=beta, bootstrap=bootstrap, seed=seed, ui=ui)
    timings = dict(study.timings)
    t = time.perf_counter()
    cmp = _compare(study, potential, penalty, beta, holdout, seed)
    timings["compare"] = time.perf_counter() - t
    res = ComparisonResult(comparison=cmp, study=study, settings=settings, timings=timings)
    res.save(out, figures=figures)
    return res


@dataclass(frozen=True)
class ComparisonResult:
    """One explicit potential beside a study's numeric one (what :func:`compare` found).

    ``comparison`` holds the metrics (``.pearson``, ``.spearman``,
    ``.direction_agreement``, ``.heldout``, ``.metrics``); ``formula`` is the explicit
    potential as a table row when it is a formula (None for a ``state,V`` table).
    """

    comparison: Any
    study: Study
    settings: dict[str, Any]
    timings: dict[str, float]

    @property
    def formula(self) -> Any:
        """The explicit potential as a :class:`~detbal.evo.pareto.Formula` scored by its action on
        every edge (None when it is not a formula)."""
        from detbal.evo import registry
        from detbal.evo.pareto import Formula

        cmp = self.comparison
        finfo = cmp.metrics.get("formula")
        if not finfo:
            return None
        names = registry.symbol_names(self.study.features.names)
        act = cmp.metrics["action"].get("explicit_all_edges")
        act = math.nan if act is None else float(act)
        return Formula(expr=registry.parse_formula(finfo["sympy"], names), names=names,
                       complexity=finfo["complexity"], action=act, loss=act, engine="user",
                       equation=str(self.settings.get("potential", finfo["sympy"])))

    def to_dict(self) -> dict[str, Any]:
        """The summary (``summary.json`` without its file list)."""
        return {"status": "ok", "settings": dict(self.settings), "kernel": self.study.info(),
                "comparison": self.comparison.to_dict(), "timings": dict(self.timings)}

    def save(self, out: str | Path, *, figures: bool = True) -> dict[str, Any]:
        """Write summary.json, formulas.csv (the formula's row, if any), potentials.csv and the
        figures into ``out``; returns the summary written (with ``files``)."""
        summary = self.to_dict()
        formula = self.formula
        write_outputs(Path(out), self.study, self.comparison, [] if formula is None else [formula],
                      summary, figures=figures)
        return summary


def _check(beta: float, holdout: float) -> None:
    if beta <= 0:
        raise DetbalError(f"beta must be positive, got {beta}")
    if not 0.0 <= holdout < 1.0:
        raise DetbalError(f"holdout must be in [0, 1), got {holdout}")


def _compare(study: Study, explicit: Any, penalty: str, beta: float, holdout: float, seed: int) -> Any:
    from detbal.evo.compare import compare_potentials

    return compare_potentials(study.kernel, explicit, features=study.features, fit=study.fit,
                              penalty=penalty, beta=beta, holdout=holdout, seed=seed)


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
    from detbal.evo.compare import _figure, _finish

    pts = [(f.complexity, f.action) for f in front if math.isfinite(f.action)]
    if not pts:
        return None
    fig, ax = _figure((5.5, 4))
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
    from detbal.io import json_safe

    return json_safe(obj)
