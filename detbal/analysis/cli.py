"""Subcommands of the analysis stage: ``analyze``, ``import``, ``export``, ``synth``."""

from __future__ import annotations

import argparse
import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detbal.analysis.result import AnalysisResult


def register(sub: Any) -> None:
    p = sub.add_parser(
        "analyze", help="kernel, detailed-balance tests and least-action potential",
        description="Analyse a run store or an importable transition file (CSV/TSV"
        " source,target[,count], JSON Lines, or the paper's JSON shapes).",
    )
    p.add_argument("input", help="run store (.sqlite) or transition file")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--kernel", choices=["exp", "softplus"], default="exp",
                   help="K(x) = exp(-beta x/2) or log(1 + exp(-beta x)) (default exp)")
    p.add_argument("--beta", type=float, default=1.0, help="inverse temperature (default 1)")
    p.add_argument("--states", choices=["text", "canonical"], default="text",
                   help="one state per text (default) or per canonical form the agent stored"
                   " (fit: ansatzes that differ only in parameter names or term order merge)")
    p.add_argument("--n0", choices=["empirical", "uniform"], default="empirical",
                   help="normalisation of the kernel (default empirical)")
    p.add_argument("--min-source-count", type=float, default=None,
                   help="drop sources with N0 <= K (default 1 empirical, 0 uniform)")
    p.add_argument("--attempts", type=float, default=None,
                   help="total attempts, for imported counts that carry no escapes")
    p.add_argument("--bootstrap", type=int, default=100,
                   help="bootstrap resamples for standard errors of V (default 100; 0 = none)")
    p.add_argument("--test-simulations", type=int, default=200,
                   help="parametric-bootstrap simulations for the cycle tests' p-values (default 200)")
    p.add_argument("--stop-early", action="store_true",
                   help="end the cycle-test simulations once the 5%% decision is settled (3 Monte-Carlo"
                   " standard errors away; summary.json states the error)")
    p.add_argument("--triplet-min-count", type=float, default=0.0,
                   help="the paper's count cut for 3-cycles (0 for words, 1 for the fitting agent)")
    p.add_argument("--gauge", default="mean",
                   help="'mean' (zero mean over identifiable states) or a state that gets V = 0")
    p.add_argument("--solver", choices=["newton", "lbfgs"], default="newton",
                   help="minimiser of the action: compiled Newton-CG (default) or scipy L-BFGS-B")
    p.add_argument("--estimator", choices=["least_action", "likelihood"], default="least_action",
                   help="potential: least action as the paper defines it (default), or the"
                   " quasi-symmetry likelihood with an empirical-Bayes prior (reported beside it)")
    p.add_argument("--deviance", action=argparse.BooleanOptionalAction, default=None,
                   help="the deviance test of quasi-symmetry (default: with --estimator likelihood"
                   " only; its simulations refit the likelihood model, the costliest stage)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=0,
                   help="threads for the bootstrap and the test simulations (default 0: every core;"
                   " the numbers do not depend on it)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS|local[:N]",
                   help="send the bootstrap replicates and test simulations to a Dask scheduler"
                   " (tcp://host:8786), or to a local Dask cluster of N processes (local:N);"
                   " same numbers as without (needs dask[distributed])")
    p.add_argument("--no-figures", action="store_true", help="skip figures and report.md")
    p.set_defaults(handler=_analyze)

    p = sub.add_parser("import", help="add a transition file to a run store as a new run")
    p.add_argument("file")
    p.add_argument("--store", required=True)
    p.set_defaults(handler=_import)

    p = sub.add_parser("export", help="export counts or attempts of a store to CSV or Parquet")
    p.add_argument("store")
    p.add_argument("--what", choices=["counts", "attempts"], default="counts")
    p.add_argument("--out", required=True, help="file ending in .csv or .parquet")
    p.set_defaults(handler=_export)

    p = sub.add_parser("synth", help="sample a ground-truth chain (reversible or driven) to CSV")
    p.add_argument("--out", required=True, help="transition CSV to write")
    p.add_argument("--states", type=int, default=300)
    p.add_argument("--transitions", type=int, default=20000)
    p.add_argument("--children", type=int, default=3)
    p.add_argument("--degree", type=float, default=6.0)
    p.add_argument("--scale", type=float, default=1.5, help="std of the true potential")
    p.add_argument("--drive", type=float, default=0.0, help="non-reversible drive (0 = reversible)")
    p.add_argument("--ring-affinity", type=float, default=None,
                   help="instead: a ring (steps 1 and 2) whose every 3-cycle has this affinity")
    p.add_argument("--sampling", choices=["agent", "fixed"], default="agent",
                   help="agent: sources drawn from the states found so far (default); fixed:"
                   " every state makes transitions/states attempts")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_synth)


def _analyze(args: argparse.Namespace, ui: Any) -> int:
    from detbal.analysis.pipeline import run_analysis
    from detbal.errors import DetbalError

    if args.bootstrap < 0 or args.test_simulations < 0:
        raise DetbalError("--bootstrap and --test-simulations must be >= 0")
    res = run_analysis(
        args.input, args.out, penalty=args.kernel, beta=args.beta, n0=args.n0, states=args.states,
        min_source_count=args.min_source_count, attempts=args.attempts,
        bootstrap=args.bootstrap, test_simulations=args.test_simulations, stop_early=args.stop_early,
        triplet_min_count=args.triplet_min_count, gauge=args.gauge, solver=args.solver,
        estimator=args.estimator, deviance=args.deviance,
        seed=args.seed,
        n_jobs=args.jobs, scheduler=args.scheduler, figures=not args.no_figures, ui=ui,
        figure_process=_spare_core(args.jobs),
    )
    ui.echo(format_summary(res, Path(args.out), report=not args.no_figures))
    return 0


def _spare_core(jobs: int) -> bool:
    """Whether a core is left over by ``--jobs`` (figures are then drawn in a child process
    alongside; on fully used cores the child's extra imports cost more than they save)."""
    from detbal.analysis.resample import available_cores

    cores = available_cores()
    return cores > (jobs if jobs > 0 else cores)


def format_summary(res: AnalysisResult, out: Path, *, report: bool = True) -> str:
    """The short text summary printed at the end of ``analyze`` (``report``: report.md was written)."""
    c, k = res.kernel.counts, res.kernel
    g, t, pot = res.global_test, res.triplet_test, res.potential_summary
    return "\n".join([
        f"{c.n_states} states, {len(c.src)} transitions, {_f(k.total_attempts)} attempts",
        f"verdict: {res.verdict}",
        f"global test: {g.n_pairs} pairs, df {g.df}, chi2/df {_f(g.chi2_per_df)}, p {_f(g.p_value)}",
        f"paper 3-cycle test: {t.n_triplets} triplets, chi2/ndf {_f(t.chi2_per_ndf)}",
        *_beyond_lines(res),
        f"pair test: {res.pair_test.n_pairs} pairs, r {_f(res.pair_test.pearson_r)}",
        f"action {_f(pot.action)} (K0 {_f(pot.k0)}), sigma(beta V) {_f(pot.sigma_beta_v)},"
        f" expected {_f(pot.expected_action)}, downhill {_f(pot.downhill_fraction)}",
        f"identifiable states: {pot.n_identifiable}; wrote {out}/summary.json, potential.csv"
        + (", report.md" if report else ""),
    ])


def _f(x: Any) -> str:
    """A number as the summary prints it: integers as they are, reals to 3 significant digits,
    NaN and None as n/a."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return str(int(x))
    if isinstance(x, numbers.Real):
        return f"{float(x):.3g}" if math.isfinite(x) else "n/a"
    return "n/a" if x is None else str(x)


def _beyond_lines(res: AnalysisResult) -> list[str]:
    """Deviance test, distance from equilibrium and the likelihood potential, when present."""
    out = []
    d = res.deviance
    if d is not None:
        how = (f"tail estimate, simulated bound < {_f(d.p.bound)}"
               if d.p.method == "scaled_chi2_tail" else "bootstrap")
        per_df = d.deviance / d.df if d.df > 0 else math.nan
        out.append(f"deviance test: df {d.df}, G2/df {_f(per_df)}, p {_f(d.p.value)} ({how})")
    r, e = res.nonequilibrium.rms_affinity, res.nonequilibrium.entropy_production
    skipped = res.nonequilibrium.entropy_skipped
    out.append(f"RMS cycle affinity {_f(r.estimate)} [{_f(r.ci_low)}, {_f(r.ci_high)}],"
               + (f" entropy production not computed ({skipped})" if skipped else
                  f" entropy production {_f(e.estimate)} [{_f(e.ci_low)}, {_f(e.ci_high)}] per step"))
    lik = res.likelihood
    if lik is not None:
        from detbal.analysis.summary import summarise

        states = summarise(res.kernel, lik.potential).n_identifiable
        median = lik.as_dict()["median_stderr_laplace"]
        out.append(f"likelihood potential: {states} states, prior width"
                   f" {_f(lik.prior_width)}, median Laplace stderr {_f(median)}")
    return out


def _import(args: argparse.Namespace, ui: Any) -> int:
    from detbal.io import import_into_store
    from detbal.store import RunStore

    with RunStore(args.store) as store:
        run_id, n = import_into_store(args.file, store)
    ui.echo(f"imported {n} attempts from {args.file} into {args.store} as run {run_id}")
    return 0


def _export(args: argparse.Namespace, ui: Any) -> int:
    from detbal.io import export_store
    from detbal.store import RunStore

    with RunStore(args.store, create=False) as store:
        path = export_store(store, args.what, args.out)
    ui.echo(f"wrote {path}")
    return 0


def _synth(args: argparse.Namespace, ui: Any) -> int:
    from detbal.errors import DetbalError
    from detbal.io import export_table
    from detbal.systems import driven_ring, metropolis_chain, sample_agent, sample_fixed

    if args.states < 3 or args.transitions < 1:
        raise DetbalError("--states must be >= 3 and --transitions >= 1")
    if args.ring_affinity is not None:
        if args.states < 5:
            raise DetbalError("--states must be >= 5 for a ring (--ring-affinity)")
        chain = driven_ring(args.states, affinity=args.ring_affinity, potential_scale=args.scale,
                            seed=args.seed)
    else:
        chain = metropolis_chain(args.states, mean_degree=args.degree, potential_scale=args.scale,
                                 drive=args.drive, seed=args.seed)
    if args.sampling == "fixed":
        if args.transitions < args.states:
            raise DetbalError("--sampling fixed needs --transitions >= --states (attempts per state)")
        counts = sample_fixed(chain, args.transitions // args.states, seed=args.seed + 1)
    else:
        counts = sample_agent(chain, args.transitions, children=args.children, seed=args.seed + 1)
    out = Path(args.out)
    export_table([{"source": s, "target": t or "", "count": n} for s, t, n in counts.to_rows()],
                 ["source", "target", "count"], out)
    truth = out.with_name(out.stem + "_true_potential.csv")
    export_table([{"state": name, "V": f"{v:.6g}"} for name, v in zip(chain.labels, chain.potential)],
                 ["state", "V"], truth)
    kind = "reversible" if chain.reversible else f"driven (drive {args.drive})"
    if args.ring_affinity is not None:
        kind = f"ring (3-cycle affinity {args.ring_affinity:g})"
    ui.echo(f"wrote {int(counts.attempts.sum())} attempts of a {kind} chain to {out} and the true"
            f" potential to {truth}")
    return 0
