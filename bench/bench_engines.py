"""Discovery engines on a planted chain: pyoperon (regression, no Julia) vs DEAP GP (action).

A reversible chain whose potential is a known formula of random features
(:func:`detbal.systems.planted_chain`); each engine runs through
:func:`detbal.evo.discover.discover` with a ladder of budgets (generations, the
population fixed), several seeds.  Printed per engine and budget: median seconds of
the search and median excess of the best formula's action over the numeric
(least-action) minimum, and the fraction of seeds within 5%.  The summary line gives
each engine's first budget whose median excess is within 5% and its time: GP is the
baseline.  One process, one thread.

Run: ``python bench/bench_engines.py [--states 120 --seeds 3]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402

from detbal.analysis.counts import estimate_kernel  # noqa: E402
from detbal.evo.discover import discover, study_of  # noqa: E402
from detbal.systems import planted_chain  # noqa: E402

LADDERS = {"gp": [4, 16, 64, 128], "operon": [5, 10, 20, 40, 80]}
POPULATION = {"gp": 200, "operon": 500}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", type=int, default=120)
    ap.add_argument("--formula", default="1.6*f1 - f2**2 + 0.5*f3")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    pc = planted_chain(args.states, args.formula, n_features=5, attempts_per_state=400, seed=0)
    study = study_of(estimate_kernel(pc.counts), features=pc.features)
    S0 = study.fit.action
    print(f"planted chain: {args.states} states, {len(study.kernel.src)} edges, V = {args.formula},"
          f" 5 features; numeric minimum S = {S0:.5f}")
    discover(study, "gp", population=20, generations=1)  # warm-up (numba, imports)
    discover(study, "operon", population=20, generations=1)
    print(f"{'engine':8s} {'gens':>5s} {'pop':>5s} {'seconds':>8s} {'excess':>8s} {'<=5%':>5s}")
    first: dict[str, tuple[int, float] | None] = {}
    for engine, ladder in LADDERS.items():
        first[engine] = None
        for gens in ladder:
            secs, excess = [], []
            for seed in range(args.seeds):
                res = discover(study, engine, seed=seed, population=POPULATION[engine], generations=gens)
                secs.append(res.timings["search"])
                excess.append(res.excess)
            t, e = statistics.median(secs), statistics.median(excess)
            hit = sum(x <= 0.05 for x in excess) / len(excess)
            print(f"{engine:8s} {gens:5d} {POPULATION[engine]:5d} {t:8.2f} {100 * e:7.1f}% {hit:5.2f}")
            if first[engine] is None and e <= 0.05:
                first[engine] = (gens, t)
    parts = []
    for engine, hit in first.items():
        parts.append(f"{engine}: " + ("not within 5%" if hit is None else f"{hit[1]:.2f} s ({hit[0]} generations)"))
    print("median time to within 5% of the numeric minimum: " + "; ".join(parts))
    if first["gp"] and first["operon"]:
        print(f"operon / gp time ratio: {first['operon'][1] / first['gp'][1]:.2f}")


if __name__ == "__main__":
    main()
