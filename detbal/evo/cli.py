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
the PySR engine is skipped because Julia/PySR are not installed.  The work is done
by :mod:`detbal.evo.discover`; this module parses, calls and prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from detbal.errors import DetbalError

log = logging.getLogger(__name__)

#: exit status when an optional engine is not installed
EXIT_SKIPPED = 3
ENGINES = ("gp", "family49", "operon", "pysr")


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
    p.add_argument("--kernel", choices=["exp", "softplus"], default="exp", help="the action's penalty K")
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
                    "paper's 49-parameter family (family49), pyoperon symbolic regression (operon) "
                    "or PySR (pysr, needs Julia).",
    )
    _common(p)
    p.add_argument("--engine", choices=ENGINES, default="gp")
    p.add_argument("--generations", type=_positive_int, default=None,
                   help="GP / operon generations (default 30 / 100)")
    p.add_argument("--population", type=_positive_int, default=None,
                   help="GP / operon population (default 200 / 500)")
    p.add_argument("--max-time", type=_positive_int, default=None, help="operon: stop after SECONDS")
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
def _common_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"n0": args.n0, "min_source_count": args.min_source_count, "attempts": args.attempts,
            "penalty": args.kernel, "beta": args.beta, "mode": args.mode, "kind": args.kind,
            "bootstrap": args.bootstrap, "holdout": args.holdout, "seed": args.seed,
            "figures": not args.no_figures}


def _check(args: argparse.Namespace) -> None:
    if args.beta <= 0:
        raise DetbalError(f"--beta must be positive, got {args.beta}")
    if not 0.0 <= args.holdout < 1.0:
        raise DetbalError(f"--holdout must be in [0, 1), got {args.holdout}")


# -- discover ------------------------------------------------------------------------
def discover(args: argparse.Namespace, ui: Any) -> int:
    """Handler of ``detbal discover``."""
    from detbal.evo.discover import discover_run
    from detbal.evo.engines import make_engine

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
        ui.note("detbal: running PySR (Julia) ...")
    if args.population is not None and args.population < 4:
        raise DetbalError(f"--population must be at least 4, got {args.population}")
    try:
        engine = make_engine(args.engine, **_engine_settings(args))
    except ValueError as exc:
        raise DetbalError(str(exc)) from None
    res = discover_run(args.run, out, engine=engine, ui=ui, **_common_kwargs(args))
    _report(ui, res.study, res.compare(), out, best=res.best, excess=res.excess)
    return 0


def _engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings of the chosen engine that were given on the command line."""
    ops = tuple(o.strip() for o in args.operators.split(",") if o.strip()) if args.operators else None
    given = {"gp": {"population": args.population, "generations": args.generations,
                    "operators": ops, "scheduler": args.scheduler},
             "family49": {"max_evals": args.max_evals, "method": args.method},
             "operon": {"population": args.population, "generations": args.generations,
                        "operators": ops, "max_time": args.max_time},
             "pysr": {"iterations": args.iterations}}[args.engine]
    return {k: v for k, v in given.items() if v is not None}


def _report(ui: Any, study: Any, cmp: Any, out: Path, *, best: Any = None, excess: float = math.nan) -> None:
    """What ``discover`` and ``compare`` print: the study, the best formula (discover only) and
    the comparison with the numeric potential."""
    k = study.kernel
    ui.echo(f"{k.n_states} states, {len(k.src)} edges; numeric action S = {study.fit.action:.4g}")
    if best is not None:
        ui.echo(f"best formula (complexity {best.complexity}): S = {best.action:.4g}"
                f" ({100 * (excess if math.isfinite(excess) else 0):+.1f}% vs numeric)")
        ui.echo(f"  V = {best.sympy}")
    ui.echo(f"Pearson r = {_s(cmp.pearson)}, Spearman rho = {_s(cmp.spearman)},"
            f" direction agreement = {_s(cmp.direction_agreement)}")
    h = cmp.heldout
    if h:
        ui.echo(f"held-out log-likelihood per transition: numeric {_s(h['numeric'])},"
                f" explicit {_s(h['explicit'])}, V=0 {_s(h['zero'])}")
    ui.echo(f"wrote {out}")


def _s(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "n/a"


# -- compare -------------------------------------------------------------------------
def compare(args: argparse.Namespace, ui: Any) -> int:
    """Handler of ``detbal compare``."""
    from detbal.evo.discover import compare as run_compare

    _check(args)
    out = Path(args.out)
    res = run_compare(args.run, out, args.potential, ui=ui, **_common_kwargs(args))
    _report(ui, res.study, res.comparison, out)
    return 0
