"""Time for DEAP GP to find a formula within 5% of the numeric minimum action.

The problem: a reversible Metropolis chain (detbal.systems protocol) on random
graph states with random N(0, 1) features f1..f5 and the planted potential
V = 1.5 f1 f2 - f3**2 (f4, f5 are distractors); every state makes the same number of
attempts.  The target is S <= (1 + tol) * S_min, S_min from LeastActionPotential.

Compared, each from the same seeds, stopping at the target or a time cap:

* ``gp``           detbal.evo.gp: trees compiled once, evaluated over all states at
                   once (numpy), fitness cache, numba action, best scale by 1-D
                   minimisation;
* ``gp-per-state`` the same search with the textbook DEAP evaluation: the tree's
                   function called once per state (Python scalars);
* ``random``       random search over the same primitive set (ramped half-and-half
                   trees, depth 1-4), same vectorised evaluator.

Usage: python bench/bench_gp.py [--formula "1.5*f1*f2 - f3**2"] [--states 400] [--seeds 5] [--cap 60]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from detbal.analysis.counts import estimate_kernel  # noqa: E402
from detbal.analysis.potential import LeastActionPotential  # noqa: E402
from detbal.evo import gp as gp_mod  # noqa: E402
from detbal.evo import registry  # noqa: E402
from detbal.systems import planted_chain  # noqa: E402

FORMULA = "1.5*f1*f2 - f3**2"


class PerStateEvaluator(gp_mod.Evaluator):
    """The tree's function called once per state, as in DEAP's symbolic-regression example."""

    def values(self, spec: gp_mod.Spec) -> np.ndarray:
        code, consts = spec
        fn = gp_mod._compiled(code)
        c = np.asarray(consts, dtype=np.float64)
        rows = self.data.columns.T
        with np.errstate(all="ignore"):
            return np.array([float(fn(tuple(row), c)) for row in rows])


class _Deadline(Exception):
    pass


def run_gp(problem: dict, seed: int, target: float, cap: float, per_state: bool) -> tuple[float | None, int, float]:
    """(seconds to target or None, evaluations, best action)."""
    k, X, names = problem["kernel"], problem["X"], problem["names"]
    start = time.perf_counter()
    best = [np.inf]

    def progress(n: int = 1, **kw: object) -> None:
        if time.perf_counter() - start > cap:
            raise _Deadline

    saved = gp_mod.Evaluator
    if per_state:
        gp_mod.Evaluator = PerStateEvaluator  # type: ignore[misc]
    try:
        config = gp_mod.GPConfig(population=200, generations=10_000, target=target, refine=False,
                                 hall_of_fame=1)
        res = gp_mod.run_gp(X, names, k.src, k.dst, k.T, k.n_sources, config=config, seed=seed,
                            progress=progress)
        best[0] = res.best.action
        evals = res.evaluations
    except _Deadline:
        return None, -1, best[0]
    finally:
        gp_mod.Evaluator = saved  # type: ignore[misc]
    elapsed = time.perf_counter() - start
    return (elapsed if best[0] <= target else None), evals, best[0]


def run_random(problem: dict, seed: int, target: float, cap: float) -> tuple[float | None, int, float]:
    from deap import gp

    k, X, names = problem["kernel"], problem["X"], problem["names"]
    data = gp_mod.ActionData.build(X, k.src, k.dst, k.T, k.n_sources)
    ev = gp_mod.Evaluator(data)
    pset = gp_mod.primitive_set(names)
    index = {n: i for i, n in enumerate(names)}
    rnd_state = random.getstate()
    random.seed(seed)
    start = time.perf_counter()
    best, n = np.inf, 0
    seen: set = set()
    try:
        while time.perf_counter() - start < cap:
            tree = gp.PrimitiveTree(gp.genHalfAndHalf(pset, 1, 4))
            spec = (registry.tree_code(tree, index), tuple(registry.tree_constants(tree)))
            if spec in seen:
                continue
            seen.add(spec)
            S, _ = ev(spec)
            n += 1
            best = min(best, S)
            if best <= target:
                return time.perf_counter() - start, n, best
    finally:
        random.setstate(rnd_state)
    return None, n, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formula", default=FORMULA, help="planted potential over f1..f5")
    ap.add_argument("--states", type=int, default=400)
    ap.add_argument("--attempts", type=float, default=300)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--baseline-seeds", type=int, default=3)
    ap.add_argument("--cap", type=float, default=60.0, help="seconds per run before giving up")
    ap.add_argument("--tol", type=float, default=0.05)
    args = ap.parse_args()

    pc = planted_chain(args.states, args.formula, n_features=5, attempts_per_state=args.attempts, seed=0)
    kernel = estimate_kernel(pc.counts)
    fit = LeastActionPotential().fit(kernel)
    target = (1 + args.tol) * fit.action
    problem = {"kernel": kernel, "X": pc.features.X, "names": pc.features.names}
    truth, _ = gp_mod.best_scale(pc.V, kernel.src, kernel.dst, kernel.T, normalisation=kernel.n_sources)
    print(f"planted V = {args.formula} on {args.states} states, {len(kernel.src)} edges, 5 features;"
          f" S_min = {fit.action:.4f}, S(truth) = {truth:.4f}, target S <= {target:.4f}")
    run_gp(problem, 99, target, 30.0, per_state=False)  # warm up numba and caches

    rows = []
    for label, fn, seeds in (
        ("gp", lambda s: run_gp(problem, s, target, args.cap, per_state=False), args.seeds),
        ("gp-per-state", lambda s: run_gp(problem, s, target, args.cap, per_state=True),
         args.baseline_seeds),
        ("random", lambda s: run_random(problem, s, target, args.cap), args.baseline_seeds),
    ):
        times, evals, bests = [], [], []
        for s in range(seeds):
            t, n, b = fn(s)
            times.append(t)
            evals.append(n)
            bests.append(b)
            shown = "capped" if t is None else f"{t:.2f} s"
            print(f"  {label:13s} seed {s}: {shown}, {n if n >= 0 else '?'} evaluations, best S {b:.4f}",
                  flush=True)
        ok = [t for t in times if t is not None]
        # capped runs count as infinitely slow: the median is finite while most runs succeed
        med_all = statistics.median([t if t is not None else float("inf") for t in times])
        med = med_all if med_all != float("inf") else None
        done = [(t, n) for t, n in zip(times, evals) if t is not None and n > 0]
        per_eval = 1e6 * sum(t for t, _ in done) / sum(n for _, n in done) if done else float("nan")
        reached_evals = [n for t, n in zip(times, evals) if t is not None] or [0]
        rows.append((label, len(ok), len(times), med, statistics.median(reached_evals), per_eval))
    ours = rows[0][3]
    print()
    print("median s: over all seeds, capped runs counting as slowest; median evals: reached runs")
    print(f"{'method':14s} {'reached':>8s} {'median s':>10s} {'median evals':>13s} {'us/eval':>9s}"
          f" {'ratio':>8s}")
    for label, n_ok, n_all, med, ev, per_eval in rows:
        med_s = f"{med:.2f}" if med is not None else f">{args.cap:.0f}"
        if med is not None and ours:
            ratio = f"{med / ours:.1f}x"
        elif ours:
            ratio = f">{args.cap / ours:.0f}x"
        else:
            ratio = "n/a"
        print(f"{label:14s} {n_ok:>4d}/{n_all:<3d} {med_s:>10s} {ev:>13.0f} {per_eval:>9.0f} {ratio:>8s}")


if __name__ == "__main__":
    main()
