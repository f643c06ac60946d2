#!/usr/bin/env python
"""Least-action potential: speed and accuracy beside a published-style baseline and deeptime.

    python bench/bench_potential.py --quick     # ~2 minutes
    python bench/bench_potential.py             # full run (~10 minutes on 2 cores)

Prints, for one run on one machine:

1. the fit at the paper's scale (a reversible Metropolis chain sampled the agents'
   way: ~7,500 states, 50,000 attempts, 3 children per sampled source) for detbal
   and for a baseline written the way the authors' published script works
   (a Python loop over edges, K' by central differences, scipy L-BFGS-B with its
   default tolerances on the normalised action of every state in the data, no
   component restriction), their ratio, and both actions evaluated by the same
   function on the same edges;
2. accuracy on the same chain: Pearson r of beta*V against the true potential
   for detbal, the baseline and deeptime's reversible maximum-likelihood MSM, and
   the coverage of the bootstrap intervals V +- 1.96 stderr;
3. action-plus-gradient time at 1e5, 1e6 and 1e7 edges beside the memory floor
   (bytes the kernel must touch / numpy copy bandwidth);
4. the fit of 1e6 states / 1e7 edges.
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
from collections import deque  # noqa: E402

import numpy as np  # noqa: E402
from scipy import optimize  # noqa: E402
from scipy.sparse import coo_matrix  # noqa: E402
from scipy.sparse.csgraph import connected_components  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import copy_bandwidth, machine_line, run_with_timeout, timeit  # noqa: E402

from detbal.analysis.action import action, action_and_gradient  # noqa: E402
from detbal.analysis.counts import Kernel, TransitionCounts, estimate_kernel  # noqa: E402
from detbal.analysis.potential import LeastActionPotential, PotentialFit, _components  # noqa: E402
from detbal.systems import SyntheticChain, metropolis_chain, sample_agent  # noqa: E402

SEED = 20251210


# -- the published-style baseline ------------------------------------------------------
def _baseline_kernel(name: str):
    """K as the published script evaluates it: numpy on one scalar at a time."""
    if name == "softplus":
        def K(x):
            z = -x
            return np.where(z > 0, z + np.log1p(np.exp(-z)), np.log1p(np.exp(z)))
    else:
        def K(x):
            return np.exp(-x / 2.0)
    return K


def baseline_fit(k: Kernel, kernel: str, target: float | None = None, cap: float = 120.0) -> dict:
    """The authors' recipe, in our words: every state seen in the data is a variable;
    one Python iteration per kernel edge; K' by central differences (eps = 1e-8);
    action and gradient divided by the number of sources; L-BFGS-B, scipy defaults
    (maxiter 20000 as in the script); zero start; zero-mean gauge at the end.

    With ``target``, the tolerances are switched off and the run stops once its
    action is <= target (``reached_s``: seconds until then) or after ``cap`` seconds."""
    c = k.counts
    seen = c.attempts > 0
    seen[c.dst] = True
    nodes = np.flatnonzero(seen)
    local = np.full(c.n_states, -1)
    local[nodes] = np.arange(len(nodes))
    edges = [{"f": int(local[s]), "g": int(local[d]), "w": float(t)}
             for s, d, t in zip(k.src, k.dst, k.T)]
    n_src = max(k.n_sources, 1)
    K = _baseline_kernel(kernel)
    evals = [0]
    reached: list[float] = []
    t0 = time.perf_counter()

    def objective_and_grad(v):
        evals[0] += 1
        total = 0.0
        grads = np.zeros_like(v)
        for e in edges:
            f, g, w = e["f"], e["g"], e["w"]
            dv = v[f] - v[g]
            total += w * K(dv)
            eps = 1e-8
            kp = (K(dv + eps) - K(dv - eps)) / (2 * eps)
            grads[f] += w * kp
            grads[g] -= w * kp
        value = float(total) / n_src
        if target is not None and not reached and value <= target:
            reached.append(time.perf_counter() - t0)
        return value, grads / n_src

    def stop(intermediate_result=None):
        if reached or time.perf_counter() - t0 > cap:
            raise StopIteration

    options = {"maxiter": 20000}
    if target is not None:
        options.update(ftol=0.0, gtol=0.0, maxfun=10**7)
    t0 = time.perf_counter()
    res = optimize.minimize(objective_and_grad, np.zeros(len(nodes)), jac=True, method="L-BFGS-B",
                            options=options, callback=stop if target is not None else None)
    seconds = time.perf_counter() - t0
    V = np.full(c.n_states, np.nan)
    V[nodes] = res.x - res.x.mean()
    return {"seconds": seconds, "V": V, "action": float(res.fun), "nit": int(res.nit),
            "nfev": evals[0], "message": str(res.message), "n_vars": len(nodes),
            "reached_s": reached[0] if reached else None}


# -- helpers ---------------------------------------------------------------------------------
def paper_problem(n_states: int, seed: int) -> tuple[SyntheticChain, TransitionCounts, Kernel]:
    chain = metropolis_chain(n_states, mean_degree=6.0, potential_scale=1.5, escape=0.1, seed=seed)
    counts = sample_agent(chain, 50_000, children=3, seed=seed + 1)
    return chain, counts, estimate_kernel(counts)


def pushed_apart(k: Kernel, fit: PotentialFit, margin: float = 80.0) -> np.ndarray:
    """A finite V on every state whose action on *all* kernel edges is within
    ~exp(-margin/2) of detbal's infimum: detbal's V inside each strongly connected
    component, components shifted down in topological order by more than their spread."""
    n = k.n_states
    pos = k.T > 0
    graph = coo_matrix((np.ones(pos.sum()), (k.src[pos], k.dst[pos])), shape=(n, n)).tocsr()
    n_comp, label = connected_components(graph, directed=True, connection="strong")
    cs, cd = label[k.src[pos]], label[k.dst[pos]]
    cross = cs != cd
    succ: list[list[int]] = [[] for _ in range(n_comp)]
    indeg = np.zeros(n_comp, dtype=int)
    for a, b in set(zip(cs[cross].tolist(), cd[cross].tolist())):
        succ[a].append(b)
        indeg[b] += 1
    order = np.zeros(n_comp, dtype=int)
    queue = deque(np.flatnonzero(indeg == 0).tolist())
    rank = 0
    while queue:
        a = queue.popleft()
        order[a] = rank
        rank += 1
        for b in succ[a]:
            indeg[b] -= 1
            if indeg[b] == 0:
                queue.append(b)
    base = np.nan_to_num(fit.V_fit)
    step = (np.ptp(base) if n else 0.0) + margin / fit.beta
    return base - step * order[label]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 2 else float("nan")


def deeptime_fit(counts: TransitionCounts) -> dict:
    """deeptime's reversible MLE MSM on the count matrix (self-loops on the diagonal,
    escapes left out); V = -log(pi) on its largest connected set."""
    from deeptime.markov import TransitionCountModel
    from deeptime.markov.msm import MaximumLikelihoodMSM

    seen = counts.attempts > 0
    seen[counts.dst] = True
    nodes = np.flatnonzero(seen)
    local = np.full(counts.n_states, -1)
    local[nodes] = np.arange(len(nodes))
    m = len(nodes)
    rows = np.concatenate([local[counts.src], local[nodes]])
    cols = np.concatenate([local[counts.dst], local[nodes]])
    vals = np.concatenate([counts.count, counts.self_loops[nodes]])
    C = coo_matrix((vals, (rows, cols)), shape=(m, m)).tocsr()
    C.eliminate_zeros()
    t0 = time.perf_counter()
    est = MaximumLikelihoodMSM(reversible=True, sparse=True, use_lcc=True)
    msm = est.fit_from_counts(TransitionCountModel(C)).fetch_model()
    seconds = time.perf_counter() - t0
    V = np.full(counts.n_states, np.nan)
    sym = np.asarray(msm.count_model.state_symbols)
    V[nodes[sym]] = -np.log(msm.stationary_distribution)
    return {"seconds": seconds, "V": V, "n_states": int(len(sym)), "n_input": m}


def exact_kernel(chain: SyntheticChain, attempts: float) -> Kernel:
    """The kernel an infinitely long run would estimate: T = P on every chain edge."""
    n = chain.n_states
    counts = TransitionCounts.from_arrays(
        chain.labels, chain.src, chain.dst, chain.p * attempts, np.full(n, float(attempts)),
    )
    return estimate_kernel(counts)


def hr(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


# -- sections --------------------------------------------------------------------------------
def section_paper(args: argparse.Namespace) -> dict:
    hr("paper scale: fit time, detbal vs published-style baseline")
    chain, counts, k = paper_problem(args.paper_states, SEED)
    seen = counts.attempts > 0
    seen[counts.dst] = True
    fit0 = LeastActionPotential().fit(k)  # compiles on first use
    comps = _components(k, k.src, k.dst, k.T > 0, None)
    print(f"chain {chain.n_states} states; sampled: {int(seen.sum())} states seen, "
          f"{int((counts.attempts > 0).sum())} sources, {len(counts.src)} edges, "
          f"{int(counts.attempts.sum())} attempts")
    print(f"kernel (N0 > 1): {len(k.src)} edges; fitted on {len(comps.fitted)} states in "
          f"components, {int(comps.edge_mask.sum())} internal edges; {int(fit0.identifiable.sum())} identifiable")
    out = {"chain": chain, "counts": counts, "kernel": k, "comps": comps}
    print(f"{'kernel':9s} {'detbal fit':>28s} {'baseline fit':>16s} {'ratio':>8s}  "
          f"{'S detbal':>12s} {'S base(all)':>12s} {'S base(int)':>12s} {'S ext(all)':>12s}")
    for name in args.kernels:
        est = LeastActionPotential(kernel=name)
        est.fit(k)
        t = timeit(lambda: est.fit(k), repeats=args.repeats, warmup=0)
        fit = t.result
        base_runs = [baseline_fit(k, name) for _ in range(args.baseline_repeats)]
        bsec = float(np.median([b["seconds"] for b in base_runs]))
        base = base_runs[0]
        nrm = k.n_sources
        Vb = np.nan_to_num(base["V"])
        s_base_all = action(Vb, k.src, k.dst, k.T, kernel=name, normalisation=nrm)
        m = comps.edge_mask
        s_base_int = action(Vb, k.src[m], k.dst[m], k.T[m], kernel=name, normalisation=nrm)
        s_det_int = action(np.nan_to_num(fit.V_fit), k.src[m], k.dst[m], k.T[m], kernel=name,
                           normalisation=nrm)
        s_ext = action(pushed_apart(k, fit), k.src, k.dst, k.T, kernel=name, normalisation=nrm)
        ratio = bsec / t.median
        print(f"{name:9s} {t.fmt('ms'):>28s} {bsec:13.2f} s {ratio:7.0f}x  "
              f"{fit.action:12.9f} {s_base_all:12.9f} {s_base_int:12.9f} {s_ext:12.9f}")
        print(f"{'':9s} detbal: {fit.iterations} Newton steps, converged={fit.converged}, "
              f"S recomputed on internal edges {s_det_int:.9f}; baseline: {base['n_vars']} variables, "
              f"{base['nit']} iterations, {base['nfev']} evaluations, '{base['message']}', "
              f"spread of V {np.nanmax(base['V']) - np.nanmin(base['V']):.0f}")
        print(f"{'':9s} target >= 200x at equal or lower action: ratio {ratio:.0f}x, "
              f"S detbal <= S baseline on the same edges: {s_det_int <= s_base_int * (1 + 1e-12)} "
              f"(internal), {s_ext <= s_base_all * (1 + 1e-12)} (all edges, components pushed apart)")
        target = s_ext * (1.0 + 1e-6)
        conv = baseline_fit(k, name, target=target, cap=args.equal_cap)
        if conv["reached_s"] is not None:
            print(f"{'':9s} baseline run on (no tolerances) until its action <= S ext(all) (1 + 1e-6) ="
                  f" {target:.9f}: reached after {conv['reached_s']:.2f} s, {conv['nfev']} evaluations;"
                  f" ratio at equal action {conv['reached_s'] / t.median:.0f}x")
        else:
            print(f"{'':9s} baseline run on (no tolerances): action {conv['action']:.9f} after "
                  f"{conv['seconds']:.1f} s (cap {args.equal_cap:.0f} s), never <= {target:.9f}; "
                  f"ratio at equal action > {conv['seconds'] / t.median:.0f}x")
        out[name] = {"fit": fit, "base": base, "converged_base": conv}
    print("S detbal: detbal's action, the infimum over all V, reached on the component-internal"
          " edges\n  (cross-component terms go to 0 as components separate); S base(all): the"
          " baseline's own\n  objective on every kernel edge; S base(int): the baseline's V on"
          " detbal's internal edges;\n  S ext(all): detbal's V with components pushed apart"
          " (finite V), on every kernel edge.")
    return out


def section_accuracy(args: argparse.Namespace, paper: dict) -> None:
    hr("accuracy on the paper-scale reversible chain (beta = 1, kernel exp)")
    chain, counts, k = paper["chain"], paper["counts"], paper["kernel"]
    fit = paper["exp"]["fit"] if "exp" in paper else LeastActionPotential().fit(k)
    base = paper["exp"]["base"] if "exp" in paper else baseline_fit(k, "exp")
    use = fit.identifiable & (counts.attempts > 1)
    truth = chain.potential
    r_det = pearson(fit.V[use], truth[use])
    r_base = pearson(base["V"][use], truth[use])
    print(f"states used as a source more than once and identifiable: {int(use.sum())}")
    print(f"Pearson r(beta V, true V): detbal {r_det:.4f}   baseline {r_base:.4f}   "
          f"(target: detbal >= baseline: {r_det >= r_base})")
    seeds = range(SEED, SEED + args.accuracy_seeds)
    wins, rows = 0, []
    for seed in seeds:  # one chain is noisy: repeat over independent chains
        ch, cn, kk = (chain, counts, k) if seed == SEED else paper_problem(args.paper_states, seed)
        f = fit if seed == SEED else LeastActionPotential().fit(kk)
        b = base if seed == SEED else baseline_fit(kk, "exp")
        sel = f.identifiable & (cn.attempts > 1)
        rows.append((pearson(f.V[sel], ch.potential[sel]), pearson(b["V"][sel], ch.potential[sel])))
        wins += rows[-1][0] >= rows[-1][1]
    med = np.median(np.array(rows), axis=0)
    print(f"over {len(rows)} independent chains (seeds {SEED}..{SEED + len(rows) - 1}): median r detbal"
          f" {med[0]:.4f}, baseline {med[1]:.4f}; detbal >= baseline on {wins} of {len(rows)}")
    conv = paper.get("exp", {}).get("converged_base")
    if conv is not None:
        print(f"  the baseline run on to detbal's action: r {pearson(conv['V'][use], truth[use]):.4f}"
              " (the published defaults stop early, which shrinks weakly constrained states toward 0)")
    status, dt = ("skipped", None)
    if args.deeptime_timeout > 0:
        status, dt = run_with_timeout(deeptime_fit, (counts,), args.deeptime_timeout)
    if status == "skipped":
        print("deeptime: skipped")
    elif status == "ok":
        both = use & np.isfinite(dt["V"])
        print(f"deeptime MaximumLikelihoodMSM(reversible=True, sparse=True): {dt['seconds']:.2f} s on "
              f"{dt['n_input']} states, largest connected set {dt['n_states']}; r on the "
              f"{int(both.sum())} shared states: deeptime {pearson(dt['V'][both], truth[both]):.4f}, "
              f"detbal {pearson(fit.V[both], truth[both]):.4f}")
    elif status == "timeout":
        print(f"deeptime: did not finish within {args.deeptime_timeout:.0f} s")
    else:
        print(f"deeptime: failed ({dt})")

    t0 = time.perf_counter()
    bfit = LeastActionPotential(bootstrap=args.bootstrap, seed=7, n_jobs=2).fit(k)
    bsec = time.perf_counter() - t0
    ok = bfit.identifiable & np.isfinite(bfit.stderr)
    tg = truth - truth[bfit.identifiable].mean()  # the fit's gauge: zero mean over identifiable
    inside = np.abs(bfit.V - tg) <= 1.96 * bfit.stderr
    print(f"bootstrap: {args.bootstrap} replicates in {bsec:.1f} s; stderr finite on {int(ok.sum())} of "
          f"{int(bfit.identifiable.sum())} identifiable states")
    for lo, hi in ((0, np.inf), (2, 5), (5, 10), (10, np.inf)):
        sel = ok & (counts.attempts >= lo) & (counts.attempts < hi)
        if sel.any():
            label = "all" if lo == 0 else f"{lo:g} <= attempts < {hi:g}"
            print(f"  coverage of V +- 1.96 stderr ({label}): {inside[sel].mean():.3f} over {int(sel.sum())} states"
                  f" (nominal 0.95); median stderr {np.median(bfit.stderr[sel]):.3f}")


def section_kernel(args: argparse.Namespace, bw: float) -> dict:
    hr("action + gradient vs the memory-bandwidth floor")
    print(f"numpy copy bandwidth (np.copyto, {args.copy_mb} MB, read + write): {bw / 1e9:.1f} GB/s")
    print("floor = bytes the kernel must touch (src, dst int32 + T float64 per edge; V read and"
          " grad written per state) / bandwidth")
    print(f"{'edges':>10s} {'states':>9s} {'kernel':9s} {'floor':>9s} {'serial':>24s} {'x floor':>8s}"
          f" {'2 threads':>24s} {'x floor':>8s}")
    problems = {}
    for m in args.sizes:
        n = max(10, m // 10)
        chain = metropolis_chain(n, mean_degree=10.0, seed=SEED + n)
        src, dst, w = chain.src, chain.dst, chain.p
        V = chain.potential.copy()
        problems[m] = chain
        nbytes = len(src) * (4 + 4 + 8) + n * (8 + 8)
        floor = nbytes / bw
        for name in args.kernels:
            g = np.empty(n)
            reps = max(3, min(args.repeats, int(2e8 // max(len(src), 1))))
            ser = timeit(lambda: action_and_gradient(V, src, dst, w, kernel=name, grad_out=g,
                                                     parallel=False), repeats=reps)
            par = timeit(lambda: action_and_gradient(V, src, dst, w, kernel=name, grad_out=g,
                                                     parallel=True), repeats=reps)
            print(f"{len(src):10d} {n:9d} {name:9s} {floor * 1e3:7.2f}ms {ser.fmt('ms'):>24s} "
                  f"{ser.median / floor:7.1f}x {par.fmt('ms'):>24s} {par.median / floor:7.1f}x", flush=True)
    print("target: exp within 5x of the floor at 1e7 edges (softplus pays a log1p and a division per edge)")
    return problems


def section_big(args: argparse.Namespace, problems: dict) -> None:
    hr(f"large fit: {args.big_states:.0e} states, mean degree 10, exact kernel (T = P, 20 attempts)")
    m_key = args.big_states * 10
    chain = problems.get(m_key)
    if chain is None or chain.n_states != args.big_states:
        chain = metropolis_chain(args.big_states, mean_degree=10.0, seed=SEED + args.big_states)
    k = exact_kernel(chain, 20.0)
    est = LeastActionPotential(kernel="exp")
    t0 = time.perf_counter()
    fit = est.fit(k)
    sec = time.perf_counter() - t0
    ok = fit.identifiable
    print(f"{k.n_states} states, {len(k.src)} edges: fit {sec:.1f} s (target < 60 s), "
          f"{fit.iterations} Newton steps, converged={fit.converged}, {int(ok.sum())} identifiable, "
          f"r(V, true) = {pearson(fit.V[ok], chain.potential[ok]):.6f}, "
          f"max |V - true| = {np.nanmax(np.abs(fit.V[ok] - (chain.potential[ok] - chain.potential[ok].mean()))):.2e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (~2 min)")
    p.add_argument("--skip-deeptime", action="store_true")
    p.add_argument("--accuracy-seeds", type=int, default=5,
                   help="independent paper-scale chains for the accuracy comparison (default 5)")
    p.add_argument("--skip-big", action="store_true", help="skip the 1e7-edge kernel timing and fit")
    a = p.parse_args(argv)
    a.kernels = ("exp", "softplus")
    a.paper_states = 11_500  # ~7,500 states seen, ~15,000 edges, as in the paper
    if a.quick:
        a.repeats, a.baseline_repeats, a.bootstrap = 5, 1, 40
        a.deeptime_timeout, a.copy_mb, a.equal_cap = 60.0, 256, 60.0
        a.sizes, a.big_states = [100_000, 1_000_000], 100_000
    else:
        a.repeats, a.baseline_repeats, a.bootstrap = 11, 3, 200
        a.deeptime_timeout, a.copy_mb, a.equal_cap = 300.0, 512, 300.0
        a.sizes, a.big_states = [100_000, 1_000_000, 10_000_000], 1_000_000
    if a.skip_big:
        a.sizes = [s for s in a.sizes if s < 10_000_000]
        a.big_states = min(a.big_states, 100_000)
    if a.skip_deeptime:
        a.deeptime_timeout = 0.0
    print(f"bench_potential ({'quick' if a.quick else 'full'}); {machine_line()}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    t_all = time.perf_counter()
    bw = copy_bandwidth(a.copy_mb)
    paper = section_paper(a)
    section_accuracy(a, paper)
    problems = section_kernel(a, bw)
    section_big(a, problems)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s; {machine_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
