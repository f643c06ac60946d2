"""Candidate evaluations per second of the 49-parameter family objective.

One evaluation = V for every state under a new parameter vector, then the action
S[V] over the kernel's edges.  At the paper's scale (about 7,500 ansatz states,
22,000 unique transitions; METHOD.md section 1), synthetic:

* detbal: strings featurized once (:func:`detbal.evo.features.featurize`), then
  per evaluation the vectorised family (numpy) and the numba action;
* baseline, written the way the published random-descent script works: per
  evaluation every string is re-tokenized with the published regular expression
  and its features re-extracted with regular expressions, the energy is computed
  per string in Python, and the action is a Python loop over edges keyed by
  strings, with K evaluated by numpy on each scalar.

Both use the paper tokenizer and the softplus kernel on the same edges, and their
actions are checked to agree.  Medians of several repeats, one process, one
thread.  Run: ``python bench/bench_family49.py [--states 7500 --edges 22000]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from detbal.analysis.counts import TransitionCounts  # noqa: E402
from detbal.evo import features as feat  # noqa: E402
from detbal.evo.family49 import (  # noqa: E402
    BOUNDS,
    PARAM_NAMES,
    Family49Objective,
    param_array,
    param_dict,
)
from detbal.evo.tokenize import random_ansatz  # noqa: E402
from detbal.evo.transitions import direction_stats, source_cut_kernel  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from support.family49_reference import reference_value  # noqa: E402  (the plain per-string family)


def synthesise(n_states: int, n_edges: int, seed: int) -> tuple[list[str], TransitionCounts]:
    """Unique ansatz strings and ``n_edges`` random unique transitions among them.

    Sources are drawn with a heavy tail (a few states are shown often, as in the
    island search), each edge has a geometric count, and every source has a few
    extra attempts (self-loops, escapes), so about 1/3 of the states pass N0 > 1.
    """
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < n_states:
        seen[random_ansatz(rng, max_depth=int(rng.integers(2, 6)), n_params=int(rng.integers(2, 9)))] = None
    states = list(seen)
    weight = rng.pareto(1.2, n_states) + 1.0
    weight /= weight.sum()
    keys: set[tuple[int, int]] = set()
    while len(keys) < n_edges:
        f = rng.choice(n_states, size=n_edges, p=weight)
        g = rng.integers(0, n_states, size=n_edges)
        for a, b in zip(f.tolist(), g.tolist()):
            if a != b and len(keys) < n_edges:
                keys.add((a, b))
    pairs = np.array(sorted(keys))
    count = rng.geometric(0.6, size=len(pairs)).astype(float)
    attempts = np.bincount(pairs[:, 0], weights=count, minlength=n_states)
    attempts += rng.poisson(1.0, n_states) * (attempts > 0)
    return states, TransitionCounts.from_arrays(states, pairs[:, 0], pairs[:, 1], count, attempts)


# -- baseline: the published way ----------------------------------------------------------

def baseline_potentials(states: list[str], params: dict[str, float]) -> dict[str, float]:
    """Re-tokenize (regex) and re-extract features (regex) of every string, per-string energy."""
    out = {}
    for s in states:
        values = feat._family_paper(s)
        f = {name[4:]: v for name, v in zip(feat.FAMILY_COLUMNS, values)}
        out[s] = params["empty_input_potential"] if f["empty"] else reference_value(f, params)
    return out


def baseline_K(x: float) -> float:
    z = -x
    return float(np.where(z > 0, z + np.log1p(np.exp(-z)), np.log1p(np.exp(z))))


def baseline_action(edges: list[tuple[str, str, float]], node_counts: dict[str, float],
                    potentials: dict[str, float], n_sources: int) -> float:
    total = 0.0
    for f, g, n in edges:
        N = node_counts[f]
        if N > 1:
            total += (n / N) * baseline_K(potentials[f] - potentials[g])
    return total / n_sources


def timed(fn, n: int, repeats: int) -> tuple[float, float]:
    """(median seconds per call, last value)."""
    times = []
    value = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            value = fn()
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times), value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", type=int, default=7500)
    ap.add_argument("--edges", type=int, default=22000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline-evals", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    states, counts = synthesise(args.states, args.edges, args.seed)
    kernel = source_cut_kernel(counts, "empirical")
    print(f"synthetic: {len(states)} states, {len(counts.src)} unique transitions,"
          f" {len(kernel.src)} edges from {kernel.n_sources} sources with N0 > 1")

    rng = np.random.default_rng(args.seed + 1)
    d = param_array()
    lo = np.array([BOUNDS[n][0] for n in PARAM_NAMES])
    hi = np.array([BOUNDS[n][1] for n in PARAM_NAMES])
    candidates = [np.clip(d + 0.3 * np.maximum(np.abs(d), 0.5) * rng.standard_normal(d.size), lo, hi)
                  for _ in range(64)]

    t0 = time.perf_counter()
    F = {m: feat.featurize(states, "ansatz", mode=m) for m in ("paper", "fixed")}
    t_feat = (time.perf_counter() - t0) / 2
    objectives = {
        (m, k): Family49Objective(F[m], kernel, penalty=k) for m in F for k in ("softplus", "exp")
    }
    for obj in objectives.values():
        obj(d)  # compile / warm up

    def detbal_eval(obj: Family49Objective) -> callable:
        it = iter(range(10**9))
        return lambda: obj(candidates[next(it) % len(candidates)])

    n_fast = 200
    fast = {key: timed(detbal_eval(obj), n_fast, args.repeats)[0] for key, obj in objectives.items()}

    # baseline on the same edges, keyed by strings
    st = kernel.states
    edges = [(st[f], st[g], float(c)) for f, g, c in zip(kernel.src, kernel.dst, kernel.count)]
    node_counts = {s: float(a) for s, a in zip(st, counts.attempts)}
    ib = iter(range(10**9))

    def baseline_eval() -> float:
        p = param_dict(candidates[next(ib) % len(candidates)])
        return baseline_action(edges, node_counts, baseline_potentials(st, p), kernel.n_sources)

    base_repeats = max(3, min(args.repeats, 5))
    t_base, _ = timed(baseline_eval, args.baseline_evals, base_repeats)

    # agreement of the two objectives on the same candidate
    p0 = param_dict(candidates[0])
    S_base = baseline_action(edges, node_counts, baseline_potentials(st, p0), kernel.n_sources)
    S_fast = objectives[("paper", "softplus")](candidates[0])

    print()
    print(f"{'objective (paper tokenizer, softplus K)':<44}{'s / eval':>12}{'evals / s':>12}{'ratio':>10}")
    print(f"{'baseline (regex per eval, Python loops)':<44}{t_base:>12.4g}{1 / t_base:>12.3g}{1.0:>10.3g}")
    for (m, k), t in fast.items():
        label = f"detbal {m} tokenizer, {k} K"
        print(f"{label:<44}{t:>12.4g}{1 / t:>12.4g}{t_base / t:>10.4g}")
    print(f"(medians of {args.repeats} x {n_fast} detbal evaluations and {base_repeats} x"
          f" {args.baseline_evals} baseline evaluations; featurize once: {t_feat:.2f} s per mode)")
    print(f"action agreement on one candidate: baseline {S_base:.12f}, detbal {S_fast:.12f},"
          f" |diff| {abs(S_base - S_fast):.2e}")

    print()
    print("paper vs fixed tokenizer at the published defaults (same transitions):")
    for m in ("paper", "fixed"):
        obj = objectives[(m, "softplus")]
        V = obj.potential(d)
        ds = direction_stats(V, kernel)
        fires = {c: int((F[m].column(c) > 0).sum()) for c in
                 ("fam_has_log_v", "fam_linear_logv", "fam_tanh", "fam_softplus")}
        print(f"  {m:5s}: S_softplus = {obj(d):.4f}, S_exp = {objectives[(m, 'exp')](d):.4f};"
              f" T > 0.05: {ds['n']} edges, down {ds['frac_down']:.3f}, up {ds['frac_up']:.3f},"
              f" equal {ds['frac_equal']:.3f}; states with {fires}")
    print("  (the paper tokenizer never sees log_v_k_nu or tanh, so the Nikuradse-specific"
          " features stay 0 and V differs; evaluation speed does not depend on the mode)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
