"""``detbal discover`` and ``detbal compare``: explicit potentials from the command line.

Both read RUN (a run store or any file :func:`detbal.io.load_count_rows` accepts),
estimate the kernel, compute the state features and the numeric (least-action)
potential, and write into ``--out``:

* ``summary.json``: settings, the numeric action, the engine's result and the
  comparison of the best explicit potential with the numeric one;
* ``formulas.csv``: the Pareto table (complexity, action, loss, equation, sympy,
  latex, engine);
* ``potentials.csv``: state, numeric V, stderr, explicit V;
* figures: ``compare.png`` (explicit vs numeric V), ``subgraph.png`` (frequent
  states on the explicit potential) and, for searches, ``pareto.png``.

Exit status: 0 on success, 2 for bad input (one ``detbal: error:`` line), 3 when
the PySR engine is skipped because Julia/PySR are not installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from detbal.errors import DetbalError

log = logging.getLogger(__name__)

#: exit status when an optional engine is not installed
EXIT_SKIPPED = 3
ENGINES = ("gp", "family49", "pysr")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run store (.sqlite) or transition file")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n0", choices=["empirical", "uniform"], default="empirical",
                   help="kernel normalisation (METHOD.md section 2)")
    p.add_argument("--min-source-count", type=float, default=None,
                   help="drop sources with N0 <= this (default 1 empirical, 0 uniform)")
    p.add_argument("--attempts", type=float, default=None, help="total attempts (uniform N0)")
    p.add_argument("--kernel", choices=["exp", "softplus"], default="exp", help="action kernel K")
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--mode", choices=["fixed", "paper"], default="fixed",
                   help="ansatz tokenizer for the features (paper = the published flaw)")
    p.add_argument("--kind", choices=["auto", "words", "ansatz"], default="auto",
                   help="state features")
    p.add_argument("--bootstrap", type=_positive_int, default=0,
                   help="bootstrap replicates for the numeric potential's errors (default 0)")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="fraction of attempts per source held out for the likelihood (0 = skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "discover", help="search for an explicit potential V(state features)",
        description="Search for an explicit potential: DEAP genetic programming (gp), the "
                    "paper's 49-parameter family (family49) or PySR (pysr, needs Julia).",
    )
    _common(p)
    p.add_argument("--engine", choices=ENGINES, default="gp")
    p.add_argument("--generations", type=_positive_int, default=30, help="GP generations")
    p.add_argument("--population", type=_positive_int, default=200, help="GP population")
    p.add_argument("--scheduler", default=None,
                   help="where GP fitness is evaluated: a Dask scheduler ADDRESS "
                        "(tcp://host:8786), 'processes[:N]' for a local pool; default in-process")
    p.add_argument("--operators", default=None,
                   help="comma-separated GP operators (default: the registry's default set)")
    p.add_argument("--max-evals", type=_positive_int, default=3000, help="family49: action evaluations")
    p.add_argument("--method", choices=["cmaes", "scipy"], default="cmaes", help="family49 optimiser")
    p.add_argument("--iterations", type=_positive_int, default=40, help="PySR iterations")
    p.set_defaults(handler=discover)

    p = subparsers.add_parser(
        "compare", help="an explicit potential beside the numeric one",
        description="FORMULA_OR_FILE: a formula over feature names (sympy syntax), 'family49', "
                    "a state,V CSV, or a formulas.csv from discover (its best row).",
    )
    _common(p)
    p.add_argument("--potential", required=True, metavar="FORMULA_OR_FILE")
    p.set_defaults(handler=compare)


# -- shared steps ------------------------------------------------------------------
def _check(args: argparse.Namespace) -> None:
    if args.beta <= 0:
        raise DetbalError(f"--beta must be positive, got {args.beta}")
    if not 0.0 <= args.holdout < 1.0:
        raise DetbalError(f"--holdout must be in [0, 1), got {args.holdout}")


def _load(args: argparse.Namespace, ui: Any) -> tuple[Any, Any, Any, dict[str, float]]:
    from detbal.analysis.potential import LeastActionPotential
    from detbal.evo.transitions import load_run

    timings: dict[str, float] = {}
    t = time.perf_counter()
    with ui.progress(None, "features", unit="state") as bar:
        kernel, F = load_run(args.run, args.n0, min_source_count=args.min_source_count,
                             total_attempts=args.attempts, kind=args.kind, mode=args.mode,
                             progress=bar)
    timings["load"] = time.perf_counter() - t
    t = time.perf_counter()
    est = LeastActionPotential(kernel=args.kernel, beta=args.beta, bootstrap=args.bootstrap,
                               seed=args.seed)
    with ui.progress(args.bootstrap or None, "numeric V", unit="rep") as bar:
        fit = est.fit(kernel, progress=bar)
    timings["numeric_potential"] = time.perf_counter() - t
    if not fit.identifiable.any():
        raise DetbalError(f"{args.run}: no state has an identifiable potential (no observed cycles)")
    return kernel, F, fit, timings


def _gp_features(F: Any, kernel: Any) -> tuple[Any, tuple[str, ...], dict[str, str]]:
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


def _write_outputs(out: Path, kernel: Any, fit: Any, cmp: Any, formulas: list[Any],
                   summary: dict[str, Any], figures: bool, front: list[Any] | None = None) -> None:
    from detbal.evo.compare import plot_comparison, plot_subgraph
    from detbal.evo.pareto import write_table
    from detbal.io import export_table

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
            ("pareto.png", _plot_front(front, fit.action, out / "pareto.png") if front else None),
        ):
            if path is not None:
                made.append(name)
    summary["files"] = ["summary.json", "formulas.csv", "potentials.csv", *made]
    (out / "summary.json").write_text(json.dumps(_json(summary), indent=2) + "\n", encoding="utf-8")


def _plot_front(front: list[Any], s_min: float, path: Path) -> Path | None:
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
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("run", "n0", "min_source_count", "attempts", "kernel", "beta", "mode", "kind", "bootstrap",
            "holdout", "seed")
    return {k: getattr(args, k) for k in keys} | {
        k: getattr(args, k) for k in ("engine", "generations", "population", "scheduler", "operators",
                                      "max_evals", "method", "iterations", "potential")
        if hasattr(args, k)
    }


def _kernel_info(kernel: Any, fit: Any) -> dict[str, Any]:
    return {"states": kernel.n_states, "edges": int(len(kernel.src)), "sources": kernel.n_sources,
            "total_attempts": kernel.total_attempts, "identifiable": int(fit.identifiable.sum()),
            "numeric_action": fit.action, "k0": fit.k0}


def _formula_info(f: Any) -> dict[str, Any]:
    return {"complexity": f.complexity, "action": f.action, "loss": f.loss, "equation": f.equation,
            "sympy": f.sympy, "latex": f.latex, "engine": f.engine}


# -- discover ------------------------------------------------------------------------
def discover(args: argparse.Namespace, ui: Any) -> int:
    """Handler of ``detbal discover``."""
    _check(args)
    out = Path(args.out)
    if args.engine == "pysr":
        from detbal.evo.pysr_engine import probe

        status = probe()
        if not status.available:
            out.mkdir(parents=True, exist_ok=True)
            (out / "summary.json").write_text(json.dumps(
                {"engine": "pysr", "status": "skipped", "reason": status.message}, indent=2) + "\n")
            ui.note(f"detbal: skipped: {status.message}")
            return EXIT_SKIPPED
    if args.engine == "gp" and args.population < 4:
        raise DetbalError(f"--population must be at least 4, got {args.population}")
    kernel, F, fit, timings = _load(args, ui)
    summary: dict[str, Any] = {"engine": args.engine, "status": "ok", "settings": _settings(args),
                               "kernel": _kernel_info(kernel, fit)}
    t = time.perf_counter()
    front: list[Any] | None = None
    if args.engine == "gp":
        formulas, front, best, extra = _run_gp(args, ui, kernel, F)
        explicit: Any = best
    elif args.engine == "family49":
        formulas, explicit, extra = _run_family49(args, ui, kernel, F)
        best = None
    else:
        formulas, front, best, extra = _run_pysr(args, ui, kernel, F, fit)
        explicit = best
    timings["search"] = time.perf_counter() - t
    summary[args.engine] = extra
    if best is not None:
        summary["best"] = _formula_info(best)
        summary["best"]["excess"] = best.action / fit.action - 1.0 if fit.action > 0 else None
    summary["pareto"] = [_formula_info(f) for f in (front or [])]
    t = time.perf_counter()
    cmp = _compare(args, kernel, F, fit, explicit)
    timings["compare"] = time.perf_counter() - t
    summary["comparison"] = cmp.to_dict()
    summary["timings"] = timings
    _write_outputs(out, kernel, fit, cmp, formulas, summary, not args.no_figures, front)
    _report(ui, summary, out)
    return 0


def _compare(args: argparse.Namespace, kernel: Any, F: Any, fit: Any, explicit: Any) -> Any:
    from detbal.evo.compare import compare_potentials

    return compare_potentials(kernel, explicit, features=F, fit=fit, kernel_name=args.kernel,
                              beta=args.beta, holdout=args.holdout, seed=args.seed)


def _run_gp(args: argparse.Namespace, ui: Any, kernel: Any, F: Any) -> tuple[list[Any], list[Any], Any, dict[str, Any]]:
    from detbal.evo.gp import GPConfig, make_backend, run_gp

    X, names, mapping = _gp_features(F, kernel)
    ops = tuple(o.strip() for o in args.operators.split(",") if o.strip()) if args.operators else None
    config = GPConfig(population=args.population, generations=args.generations,
                      **({"operators": ops} if ops else {}))
    backend = make_backend(args.scheduler)
    try:
        with ui.progress(args.generations, "gp", unit="gen") as bar:
            res = run_gp(X, names, kernel.src, kernel.dst, kernel.T, max(kernel.n_sources, 1),
                         kernel=args.kernel, beta=args.beta, config=config, seed=args.seed,
                         backend=backend, progress=bar)
    finally:
        backend.close()
    extra = {"evaluations": res.evaluations, "generations": res.generations, "seconds": res.seconds,
             "features": list(names), "renamed_features": mapping,
             "scheduler": getattr(backend, "name", "custom"), "history": list(res.history)}
    return list(res.formulas), list(res.front), res.best, extra


def _run_family49(args: argparse.Namespace, ui: Any, kernel: Any, F: Any) -> tuple[list[Any], Any, dict[str, Any]]:
    import sympy

    from detbal.evo.family49 import fit_family49
    from detbal.evo.pareto import Formula

    if F.kind != "ansatz":
        raise DetbalError(f"the 49-parameter family needs ansatz states; {args.run} has {F.kind} states"
                          " (use --kind ansatz to force)")
    with ui.progress(args.max_evals, "family49", unit="eval") as bar:
        res = fit_family49(F, kernel, method=args.method, seed=args.seed, kernel_name=args.kernel,
                           beta=args.beta, max_evals=args.max_evals, progress=bar)
    rows = [
        Formula(expr=sympy.Symbol("family49_defaults"), names=(), complexity=49,
                action=res.action_default, loss=res.action_default, engine="family49",
                equation="49-parameter family, published defaults"),
        Formula(expr=sympy.Symbol("family49_tuned"), names=(), complexity=49, action=res.action,
                loss=res.action, engine="family49",
                equation=f"49-parameter family, tuned ({res.method}, {res.n_evals} evaluations)"),
    ]
    extra = {"action": res.action, "action_default": res.action_default, "method": res.method,
             "n_evals": res.n_evals, "params": res.params, "direction": res.direction,
             "direction_default": res.direction_default, "elapsed_s": res.elapsed_s}
    return rows, res.V, extra


def _run_pysr(args: argparse.Namespace, ui: Any, kernel: Any, F: Any, fit: Any) -> tuple[list[Any], list[Any], Any, dict[str, Any]]:
    from detbal.evo.pareto import pareto_front
    from detbal.evo.pysr_engine import PySRSettings, run_pysr

    X, names, mapping = _gp_features(F, kernel)
    ui.note("detbal: running PySR (Julia) ...")
    found = run_pysr(X, names, fit, kernel, kernel_name=args.kernel, beta=args.beta, seed=args.seed,
                     settings=PySRSettings(niterations=max(1, args.iterations)))
    if not found:
        raise DetbalError("PySR returned no usable equation")
    front = list(pareto_front(found))
    best = min(found, key=lambda f: (f.action, f.complexity))
    return sorted(found, key=lambda f: f.complexity), front, best, {"features": list(names),
                                                                   "renamed_features": mapping}


def _report(ui: Any, summary: dict[str, Any], out: Path) -> None:
    k = summary["kernel"]
    ui.echo(f"{k['states']} states, {k['edges']} edges; numeric action S = {k['numeric_action']:.4g}")
    best = summary.get("best")
    if best:
        ui.echo(f"best formula (complexity {best['complexity']}): S = {best['action']:.4g}"
                f" ({100 * (best.get('excess') or 0):+.1f}% vs numeric)")
        ui.echo(f"  V = {best['sympy']}")
    c = summary["comparison"]
    ui.echo(f"Pearson r = {_s(c.get('pearson'))}, Spearman rho = {_s(c.get('spearman'))},"
            f" direction agreement = {_s((c.get('direction') or {}).get('agreement'))}")
    h = c.get("heldout")
    if h:
        ui.echo(f"held-out log-likelihood per transition: numeric {_s(h.get('numeric'))},"
                f" explicit {_s(h.get('explicit'))}, V=0 {_s(h.get('zero'))}")
    ui.echo(f"wrote {out}")


def _s(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# -- compare -------------------------------------------------------------------------
def compare(args: argparse.Namespace, ui: Any) -> int:
    """Handler of ``detbal compare``."""
    from detbal.evo.pareto import Formula

    _check(args)
    out = Path(args.out)
    kernel, F, fit, timings = _load(args, ui)
    t = time.perf_counter()
    cmp = _compare(args, kernel, F, fit, args.potential)
    timings["compare"] = time.perf_counter() - t
    summary: dict[str, Any] = {"status": "ok", "settings": _settings(args),
                               "kernel": _kernel_info(kernel, fit), "comparison": cmp.to_dict(),
                               "timings": timings}
    formulas: list[Any] = []
    finfo = cmp.metrics.get("formula")
    if finfo:
        from detbal.evo import registry

        expr = registry.parse_formula(finfo["sympy"], registry.symbol_names(F.names))
        act = cmp.metrics["action"]
        formulas.append(Formula(expr=expr, names=registry.symbol_names(F.names),
                                complexity=finfo["complexity"],
                                action=_nan(act.get("explicit_all_edges")),
                                loss=_nan(act.get("explicit_all_edges")), engine="user",
                                equation=args.potential))
    _write_outputs(out, kernel, fit, cmp, formulas, summary, not args.no_figures)
    _report(ui, summary, out)
    return 0


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)
