#!/usr/bin/env python
"""Analysis 2.0: likelihood potential, deviance test, p-value tails, distance from equilibrium.

    python bench/bench_likelihood.py --quick    # ~2 minutes (3 seeds, no published baseline)
    python bench/bench_likelihood.py            # ~6 minutes on 2 cores

Prints, for one run on one machine, each figure beside its peers:

1. accuracy at the paper's scale (a reversible Metropolis chain of 11,500 states
   sampled the agents' way: ~7,400 states seen, 50,000 attempts): Pearson r of
   beta V against the true potential for the likelihood potential, deeptime's
   reversible maximum-likelihood MSM, detbal's least action and the published
   method (bench_potential.baseline_fit), on the same states, over several seeds;
2. coverage of the likelihood potential's 95% intervals (Laplace and bootstrap)
   at the paper's scale and on a better-sampled chain;
3. the deviance test: the driven ring (affinity 0.6 per 3-cycle, 1,000 states,
   40 attempts each) and its reversible twin, with the global test beside it, and
   the calibration of both over reversible replicates;
4. RMS cycle affinity and entropy production against their true values, at two
   run sizes.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["NUMBA_NUM_THREADS"] = "2"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_line, run_with_timeout  # noqa: E402
from bench_potential import SEED, baseline_fit, deeptime_fit, paper_problem, pearson  # noqa: E402

from detbal.analysis.balance import balance_tests  # noqa: E402
from detbal.analysis.counts import estimate_kernel  # noqa: E402
from detbal.analysis.likelihood import LikelihoodPotential, deviance_test  # noqa: E402
from detbal.analysis.nonequilibrium import entropy_production, nonequilibrium  # noqa: E402
from detbal.analysis.potential import LeastActionPotential  # noqa: E402
from detbal.systems import driven_ring, metropolis_chain, sample_agent, sample_fixed  # noqa: E402


def hr(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def coverage(V: np.ndarray, se: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    ok = np.isfinite(V) & np.isfinite(se)
    centred = truth - truth[np.isfinite(V)].mean()
    inside = np.abs(V[ok] - centred[ok]) <= 1.96 * se[ok]
    return float(inside.mean()), int(ok.sum())


def section_accuracy(args: argparse.Namespace) -> None:
    hr("paper scale: r(beta V, true V) on the same states, several seeds")
    print(f"{'seed':>9s} {'states':>7s} {'likelihood':>11s} {'deeptime':>9s} {'least act.':>11s}"
          f" {'published':>10s} {'lik - dt':>9s} {'tau':>6s} {'lik s':>6s} {'LA s':>6s}"
          f" {'lik states':>11s} {'r there':>8s}")
    rows = []
    for seed in range(SEED, SEED + args.seeds):
        chain, counts, k = paper_problem(args.paper_states, seed)
        truth = chain.potential
        t0 = time.perf_counter()
        la = LeastActionPotential().fit(k)
        t_la = time.perf_counter() - t0
        t0 = time.perf_counter()
        lik = LikelihoodPotential().fit(k)
        t_lik = time.perf_counter() - t0
        status, dt = run_with_timeout(deeptime_fit, (counts,), args.deeptime_timeout)
        Vd = dt["V"] if status == "ok" else np.full(k.n_states, np.nan)
        Vb = baseline_fit(k, "exp")["V"] if args.published else np.full(k.n_states, np.nan)
        V = lik.potential.V
        use = la.identifiable & (counts.attempts > 1) & np.isfinite(V) & np.isfinite(Vd)
        r = [pearson(x[use], truth[use]) for x in (V, Vd, la.V, Vb)]
        r_all = pearson(V, truth)
        rows.append(r + [r_all])
        print(f"{seed:9d} {int(use.sum()):7d} {r[0]:11.4f} {r[1]:9.4f} {r[2]:11.4f} {r[3]:10.4f}"
              f" {r[0] - r[1]:+9.4f} {lik.prior_width:6.2f} {t_lik:6.2f} {t_la:6.2f}"
              f" {int(np.isfinite(V).sum()):11d} {r_all:8.4f}", flush=True)
    a = np.array(rows)
    med = np.nanmedian(a, axis=0)
    diff = a[:, 0] - a[:, 1]
    print(f"{'median':>9s} {'':7s} {med[0]:11.4f} {med[1]:9.4f} {med[2]:11.4f} {med[3]:10.4f}"
          f" {np.median(diff):+9.4f}")
    print(f"target: likelihood >= deeptime + 0.03 over seeds: median difference {np.median(diff):+.4f},"
          f" met on {int(np.sum(diff >= 0.03))} of {len(diff)} seeds; likelihood > least action on"
          f" {int(np.sum(a[:, 0] > a[:, 2]))} of {len(diff)}")
    print("states: identifiable by least action, sourced more than once, and given a number by the"
          " likelihood and deeptime;\n  'lik states'/'r there': every state the likelihood numbers"
          " (least action flags ~1/3 of these).  tau: the empirical-Bayes prior width.")


def section_coverage(args: argparse.Namespace) -> None:
    hr("coverage of the likelihood potential's 95% intervals (nominal 0.95, target 0.93-0.97)")
    cases = [("paper scale (7 attempts/state)", SEED, args.paper_states, 50_000),
             ("1,500 states, 30 attempts/state", SEED + 1, 1500, 45_000),
             ("1,500 states, 100 attempts/state", SEED + 2, 1500, 150_000)]
    for label, seed, n, attempts in cases:
        chain = metropolis_chain(n, mean_degree=6.0, potential_scale=1.5, escape=0.1, seed=seed)
        k = estimate_kernel(sample_agent(chain, attempts, children=3, seed=seed + 1))
        fit = LikelihoodPotential(bootstrap=args.bootstrap, seed=1, n_jobs=2).fit(k)
        c_lap, m = coverage(fit.potential.V, fit.stderr_laplace, chain.potential)
        c_boot, mb = coverage(fit.potential.V, fit.stderr_bootstrap, chain.potential)
        print(f"{label:34s} tau {fit.prior_width:5.2f} (true sd 1.5): Laplace {c_lap:.3f} over {m} states,"
              f" bootstrap ({args.bootstrap}) {c_boot:.3f} over {mb}", flush=True)


def section_tests(args: argparse.Namespace) -> None:
    hr("deviance test vs global test: driven ring (affinity 0.6 per 3-cycle), 1,000 states x 40")
    R = args.simulations
    for label, aff, scale in (("driven, flat V", 0.6, 0.0), ("driven, V sd 0.5", 0.6, 0.5),
                              ("reversible, flat V", 0.0, 0.0), ("reversible, V sd 0.5", 0.0, 0.5)):
        ring = driven_ring(1000, affinity=aff, potential_scale=scale, seed=0)
        k = estimate_kernel(sample_fixed(ring, 40, seed=1))
        t0 = time.perf_counter()
        d = deviance_test(k, simulations=R, seed=0, n_jobs=2)
        t_d = time.perf_counter() - t0
        g = balance_tests(k, bootstrap=R, seed=0, n_jobs=2).global_test
        print(f"{label:22s} deviance G2/df {d.deviance / d.df:.3f} (df {d.df}): p {d.p_value:.3g}"
              f" [{d.p.method}], asymptotic {d.p_asymptotic:.2g}, {t_d:.1f} s | global chi2/df"
              f" {g.chi2_per_df:.3f}: p {g.p_value:.3g} [{g.p.method}], asymptotic {g.p_asymptotic:.2g};"
              f" floor 1/(R+1) = {1 / (R + 1):.3g}", flush=True)
    print("target: the driven ring at p < 1e-6 (tail estimate beyond the simulations)")
    hr(f"calibration over {args.replicates} reversible chains (60 states, 3,000 agent attempts)")
    pd, pg = [], []
    for rep in range(args.replicates):
        chain = metropolis_chain(60, mean_degree=5, potential_scale=1.0, seed=rep)
        k = estimate_kernel(sample_agent(chain, 3000, children=3, seed=1000 + rep))
        pd.append(deviance_test(k, simulations=49, seed=rep).p_value)
        pg.append(balance_tests(k, bootstrap=49, seed=rep).global_test.p_value)
    for name, p in (("deviance", np.array(pd)), ("global", np.array(pg))):
        print(f"{name:9s} mean p {p.mean():.3f} (0.5), P(p < 0.05) {np.mean(p < 0.05):.3f} (0.05),"
              f" KS p vs uniform {stats.kstest(p, 'uniform').pvalue:.3f}")


def section_nonequilibrium(args: argparse.Namespace) -> None:
    hr("how far from equilibrium: RMS 3-cycle affinity and entropy production vs truth")
    print(f"{'chain':34s} {'RMS affinity [95%]':>26s} {'plug-in':>8s} {'true':>5s}   "
          f"{'entropy prod. [95%]':>30s} {'plug-in':>8s} {'true':>8s}")
    cases = []
    for attempts in (40, 120):
        cases.append((f"driven ring, flat V, x{attempts}", driven_ring(1000, affinity=0.6, potential_scale=0.0,
                                                                       seed=0), attempts, 0.6))
    cases.append(("driven ring, V sd 0.5, x40", driven_ring(1000, affinity=0.6, potential_scale=0.5, seed=0),
                  40, 0.6))
    cases.append(("reversible ring, V sd 0.5, x40", driven_ring(1000, affinity=0.0, potential_scale=0.5,
                                                                seed=3), 40, 0.0))
    cases.append(("driven random graph (drive 0.3), x60", metropolis_chain(600, mean_degree=6, drive=0.3,
                                                                           potential_scale=1.0, seed=4), 60, None))
    for label, chain, attempts, true_rms in cases:
        k = estimate_kernel(sample_fixed(chain, attempts, seed=1))
        ne = nonequilibrium(k, bootstrap=args.bootstrap, seed=0, n_jobs=2)
        r, e = ne.rms_affinity, ne.entropy_production
        truth = entropy_production(chain.n_states, chain.src, chain.dst, chain.p)
        tr = "  n/a" if true_rms is None else f"{true_rms:5.2f}"
        print(f"{label:34s} {r.estimate:8.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] {r.plug_in:8.3f} {tr}   "
              f"{e.estimate:10.4f} [{e.ci_low:.4f}, {e.ci_high:.4f}] {e.plug_in:8.4f} {truth:8.4f}",
              flush=True)
    print("entropy production per attempt at stationarity; the plug-in values carry the counting"
          " noise,\n  the estimates subtract a noise floor (the same statistic on simulations of the fitted reversible kernel).")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=None, help="paper-scale chains (default 5; quick 3)")
    a = p.parse_args(argv)
    a.paper_states = 11_500
    a.seeds = a.seeds or (3 if a.quick else 5)
    a.published = not a.quick
    a.deeptime_timeout = 120.0
    a.bootstrap = 50 if a.quick else 100
    a.simulations = 100 if a.quick else 200
    a.replicates = 20 if a.quick else 40
    print(f"bench_likelihood ({'quick' if a.quick else 'full'}); {machine_line()}")
    t0 = time.perf_counter()
    section_accuracy(a)
    section_coverage(a)
    section_tests(a)
    section_nonequilibrium(a)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; {machine_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
