#!/usr/bin/env python
"""The whole ``detbal analyze`` as a user runs it, beside the published method's bare fit.

    python bench/bench_analyze.py --quick      # 300 states, ring, paper scale, 1e5 (~10-30 min)
    python bench/bench_analyze.py              # + more repeats and the cold first run
    python bench/bench_analyze.py --huge       # + 1e6 states / 1e7 attempts (~20 min on 2 cores;
                                               # the entropy production is left out there: see docs)
    python bench/bench_analyze.py --store-load 1e5 1e6 --store-layout aggregated single
                                               # only loading run stores: rows vs columns (~6 min)

Every figure is a whole process (``python -m detbal analyze FILE --out DIR``, default
settings: 100 bootstrap replicates, 200 test simulations, figures) timed from outside,
with its peak memory (``wait4``), on data written once as transition CSV files:

* ``300 states``: ``metropolis_chain(300)`` sampled the agents' way, 20,000 attempts
  (``detbal synth``'s defaults);
* ``ring 1000``: ``driven_ring(1000, affinity=0)`` (reversible; links to i +- 1, i +- 2),
  30 attempts from every state;
* ``paper scale``: bench_potential's problem (``metropolis_chain(11500)``, 50,000
  attempts, about 7,700 states seen);
* ``1e5 states``: the same recipe at 14 times the size (161,000-state chain,
  700,000 attempts, about 106,000 states seen);
* ``1e6 states`` (``--huge``): ``metropolis_chain(10**6)``, 10 attempts from every state.

The baseline is bench_potential's published-style fit (``baseline_fit``: a Python loop
over edges, K' by central differences, scipy L-BFGS-B with its defaults, no errors, no
p-values), run on the same file in its own process with the published code's kernel
(softplus) and with exp.  Its bare fit time (inside the process) and its whole process
are both printed; the target compares detbal's whole process with the bare fit.
Repeats alternate detbal and baseline so both see the same machine load; medians.

``--store-load 1e5 1e6`` times, instead of the sections above, only the loading of a run
store of that data (``detbal analyze STORE``'s first stage): the row path it took before
(``RunStore.count_rows``: a Python tuple of texts per aggregated row, then
``TransitionCounts.from_rows``) beside the column path ``load_counts`` takes now
(``RunStore.count_columns``: integer ids into numpy, then ``TransitionCounts.from_columns``),
each in its own process, alternating, with the process's peak memory; both must give the
same counts (a digest is compared).  The stores are written once next to the CSV files,
with the store's own writer (``RunStore.record_attempts``): ``--store-layout aggregated``
one row per outcome with its count (what ``detbal import`` writes), ``single`` one row per
attempt, count 1 (what an agent writes; 10^7 rows for 1e6).

``--cold`` (on by default without ``--quick``) also measures a first run with an empty
numba cache (``NUMBA_CACHE_DIR`` set to a new directory: everything compiles), then
the set-up's warm-up (scripts/setup.sh: a tiny ``analyze``) and the first real run
after it, each in a fresh process.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 20251210


# -- data ---------------------------------------------------------------------------------
def write_counts(counts, path: Path) -> Path:
    """Transition CSV (source,target,count; empty target = escape), as ``detbal synth`` writes."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "target", "count"])
        names = counts.states
        w.writerows(zip([names[i] for i in counts.src], [names[i] for i in counts.dst],
                        counts.count.astype(int).tolist()))
        for i in (counts.self_loops > 0).nonzero()[0]:
            w.writerow([names[i], names[i], int(counts.self_loops[i])])
        for i in (counts.escapes > 0).nonzero()[0]:
            w.writerow([names[i], "", int(counts.escapes[i])])
    return path


def make_data(name: str, folder: Path) -> Path:
    path = folder / f"{name}.csv"
    if path.exists():
        return path
    from detbal.systems import driven_ring, metropolis_chain, sample_agent, sample_fixed

    if name == "s300":
        counts = sample_agent(metropolis_chain(300, seed=0), 20_000, seed=1)
    elif name == "ring1000":
        counts = sample_fixed(driven_ring(1000, affinity=0.0, seed=3), 30, seed=4)
    elif name == "paper":
        from bench_potential import paper_problem

        _, counts, _ = paper_problem(11_500, SEED)
    elif name == "1e5":
        counts = sample_agent(metropolis_chain(161_000, mean_degree=6.0, seed=SEED), 700_000,
                              seed=SEED + 1)
    elif name == "1e6":
        counts = sample_fixed(metropolis_chain(1_000_000, mean_degree=6.0, seed=SEED), 10,
                              seed=SEED + 1)
    else:
        raise ValueError(name)
    tmp = path.with_suffix(".tmp")
    write_counts(counts, tmp)
    tmp.replace(path)
    return path


# -- processes ------------------------------------------------------------------------------
def child_env(cache: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS=env.get("NUMBA_NUM_THREADS", "2"))
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = str(cache)
    return env


def run(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    """Wall seconds, peak RSS (MiB) and stdout of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            return {"seconds": float("nan"), "rss_mib": usage.ru_maxrss / 1024, "timeout": True}
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {code}: {err[-2000:]}")
    return {"seconds": wall, "rss_mib": usage.ru_maxrss / 1024, "stdout": out}


def detbal_analyze(data: Path, out: Path, env: dict[str, str], timeout: float,
                   extra: tuple[str, ...] = ()) -> dict:
    r = run([sys.executable, "-m", "detbal", "-q", "analyze", str(data), "--out", str(out), *extra],
            env, timeout)
    if "stdout" in r:
        r["summary"] = json.loads((out / "summary.json").read_text())
    return r


def baseline(data: Path, kernel: str, env: dict[str, str], timeout: float) -> dict:
    r = run([sys.executable, os.path.abspath(__file__), "--baseline-worker", str(data), kernel],
            env, timeout)
    if "stdout" in r:
        r.update(json.loads(r["stdout"].strip().splitlines()[-1]))
    return r


def baseline_worker(data: str, kernel: str) -> None:
    """A whole process of the published method: read the file, estimate T, bare fit."""
    from bench_potential import baseline_fit

    from detbal.analysis.pipeline import load_kernel

    k = load_kernel(data)
    res = baseline_fit(k, kernel)
    print(json.dumps({"fit_seconds": res["seconds"], "nit": res["nit"]}))


def stage_cpu_worker(data: str, out: str) -> None:
    """The default ``detbal analyze`` in this process, with the CPU seconds (all threads) of
    every stage beside its wall seconds: on a loaded machine the CPU time is what a quiet
    one would need, wall time divided by the threads it keeps busy."""
    from contextlib import contextmanager

    from detbal.analysis import result
    from detbal.cli import main as cli

    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    plain = result.Timer.stage

    @contextmanager
    def stage(self, name):  # type: ignore[no-untyped-def]
        c, w = time.process_time(), time.perf_counter()
        try:
            with plain(self, name):
                yield
        finally:
            cpu[name] = time.process_time() - c
            wall[name] = time.perf_counter() - w

    result.Timer.stage = stage
    c0, w0 = time.process_time(), time.perf_counter()
    code = cli(["-q", "analyze", data, "--out", out])
    total_cpu, total_wall = time.process_time() - c0, time.perf_counter() - w0
    print(json.dumps({"code": code, "cpu": cpu, "wall": wall, "total_cpu": total_cpu,
                      "total_wall": total_wall}))


def section_stage_cpu(args: argparse.Namespace, folder: Path) -> None:
    print("\n== CPU seconds per stage (all threads) beside wall seconds, one run each ==", flush=True)
    for name in args.stage_cpu:
        data = make_data(name, folder)
        r = run([sys.executable, os.path.abspath(__file__), "--stage-cpu-worker", str(data),
                 str(folder / f"out-cpu-{name}")], child_env(), args.timeout)
        t = json.loads(r["stdout"].strip().splitlines()[-1])
        stages = ", ".join(f"{k} {t['cpu'][k]:.1f}/{t['wall'][k]:.1f}" for k in t["cpu"])
        print(f"{name}: process {r['seconds']:.1f} s wall, peak {r['rss_mib']:.0f} MiB; analysis "
              f"(imports excluded) {t['total_cpu']:.1f} s CPU / {t['total_wall']:.1f} s wall; "
              f"stages CPU/wall s: {stages}", flush=True)


# -- loading a run store: rows vs columns ---------------------------------------------------
def make_store(name: str, folder: Path, layout: str) -> Path:
    """``name``'s counts as a run store, one run (written once, kept with the CSV files)."""
    path = folder / f"{name}-{layout}.sqlite"
    if path.exists():
        return path
    from detbal.analysis.counts import load_counts
    from detbal.store import Attempt, RunStore

    counts = load_counts(make_data(name, folder))

    def attempts():
        for source, target, n in counts.to_rows():
            escape = None if target is not None else "imported"
            if layout == "aggregated":
                yield Attempt(source=source, target=target, escape=escape, count=n)
            else:
                one = Attempt(source=source, target=target, escape=escape)
                for _ in range(n):
                    yield one

    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with RunStore(tmp) as store:
        store.record_attempts(store.create_run("synthetic", name, "none", {"layout": layout}),
                              attempts())
    tmp.replace(path)
    print(f"(wrote {path.name}: {time.perf_counter() - t0:.0f} s, "
          f"{path.stat().st_size / 2**20:.0f} MiB)", flush=True)
    return path


def store_load_worker(store: str, path_name: str) -> None:
    """Load ``store`` the old way (rows) or the new way (columns); seconds without imports."""
    import hashlib
    import resource

    import numpy as np

    from detbal.analysis.counts import TransitionCounts, load_counts
    from detbal.store import RunStore

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    if path_name == "rows":
        with RunStore(store, create=False) as st:
            counts = TransitionCounts.from_rows(st.count_rows())
    else:
        counts = load_counts(store)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    digest = hashlib.sha256("\n".join(counts.states).encode())
    for name in ("src", "dst", "count", "attempts", "self_loops", "escapes"):
        digest.update(np.ascontiguousarray(getattr(counts, name)).tobytes())
    print(json.dumps({"seconds": seconds, "cpu": cpu, "rss_before_mib": before, "states": counts.n_states,
                      "edges": len(counts.src), "attempts": counts.total_attempts,
                      "digest": digest.hexdigest()}))


def section_store_load(args: argparse.Namespace, folder: Path) -> None:
    print(f"\n== loading a run store: rows (before) vs columns (load_counts now), each in its own"
          f" process, alternating, medians of {args.store_repeats} ==", flush=True)
    print("load: wall and CPU seconds of the load alone (imports excluded); process / peak: the"
          " whole process (its imports: the 'imports' MiB)")
    for layout in args.store_layout:
        for name in args.store_load:
            # written in a child: a child's peak memory (wait4) counts the parent's at its start
            store = folder / f"{name}-{layout}.sqlite"
            if not store.exists():
                print(run([sys.executable, os.path.abspath(__file__), "--make-store-worker", name,
                           str(folder), layout], child_env(), args.timeout)["stdout"].strip(),
                      flush=True)
            with sqlite3.connect(store) as conn:
                (rows,) = conn.execute("SELECT COUNT(*) FROM attempts").fetchone()
            got: dict[str, list[dict]] = {"rows": [], "columns": []}
            for _ in range(args.store_repeats):
                for path_name in ("rows", "columns"):
                    r = run([sys.executable, os.path.abspath(__file__), "--store-load-worker",
                             str(store), path_name], child_env(), args.timeout)
                    out = json.loads(r["stdout"].strip().splitlines()[-1])
                    got[path_name].append({**out, "load": out["seconds"], "process": r["seconds"],
                                           "rss_mib": r["rss_mib"]})
            old, new = got["rows"], got["columns"]
            same = len({r["digest"] for r in old + new}) == 1
            print(f"{name} {layout}: {new[-1]['states']} states, {new[-1]['edges']} edges, "
                  f"{new[-1]['attempts']:.0f} attempts in {rows} store rows; same counts: {same}")
            for label, rs in (("rows (before)", old), ("columns (now)", new)):
                loads = ", ".join(f"{r['load']:.2f}" for r in rs)
                print(f"  {label:14s} load {med([r['load'] for r in rs]):7.2f} s (runs {loads}),"
                      f" CPU {med([r['cpu'] for r in rs]):.2f} s; process {med([r['process'] for r in rs]):.2f} s;"
                      f" peak {max(r['rss_mib'] for r in rs):6.0f} MiB (imports"
                      f" {max(r['rss_before_mib'] for r in rs):.0f})")
            o, n = med([r["load"] for r in old]), med([r["load"] for r in new])
            po, pn = max(r["rss_mib"] for r in old), max(r["rss_mib"] for r in new)
            oc, nc = med([r["cpu"] for r in old]), med([r["cpu"] for r in new])
            print(f"  rows / columns: load {o / n:.1f}x (CPU {oc / nc:.1f}x), peak memory {po / pn:.1f}x",
                  flush=True)


# -- report -----------------------------------------------------------------------------------
def med(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def stage_line(summary: dict) -> str:
    t = summary.get("timings", {})
    return ", ".join(f"{k} {v:.2f}" for k, v in t.items())


def section_sizes(args: argparse.Namespace, folder: Path) -> dict:
    print(f"\n== whole `detbal analyze` (defaults), medians of {args.repeats} ==", flush=True)
    print(f"{'data':12s} {'states':>8s} {'edges':>8s} {'attempts':>9s} {'detbal s':>9s} {'peak MiB':>9s}"
          "  stages (s, last run)")
    env = child_env()
    results = {}
    for name in args.sizes:
        data = make_data(name, folder)
        reps = 1 if name in ("1e5", "1e6") else args.repeats
        runs = [detbal_analyze(data, folder / f"out-{name}", env, args.timeout) for _ in range(reps)]
        s = runs[-1]["summary"]["data"]
        sec = med([r["seconds"] for r in runs])
        rss = max(r["rss_mib"] for r in runs)
        results[name] = {"seconds": sec, "rss": rss, "runs": runs}
        print(f"{name:12s} {s['states']:8d} {s['edges']:8d} {s['total_attempts']:9.0f} {sec:9.2f} "
              f"{rss:9.0f}  {stage_line(runs[-1]['summary'])}", flush=True)
    return results


def section_paper(args: argparse.Namespace, folder: Path) -> None:
    print(f"\n== paper scale: detbal analyze (defaults, whole process) vs the published bare fit,"
          f" alternating, {args.repeats} rounds ==", flush=True)
    data = make_data("paper", folder)
    env = child_env()
    rows: dict[str, list[dict]] = {"detbal": [], "softplus": [], "exp": []}
    for _ in range(args.repeats):
        rows["detbal"].append(detbal_analyze(data, folder / "out-paper", env, args.timeout))
        for kernel in ("softplus", "exp"):
            rows[kernel].append(baseline(data, kernel, env, args.timeout))
    det = med([r["seconds"] for r in rows["detbal"]])
    runs = ", ".join(f"{r['seconds']:.2f}" for r in rows["detbal"])
    print(f"detbal analyze, whole process: {det:.2f} s (runs {runs}); stages of the last:"
          f" {stage_line(rows['detbal'][-1]['summary'])}")
    for kernel in ("softplus", "exp"):
        fit = med([r["fit_seconds"] for r in rows[kernel]])
        whole = med([r["seconds"] for r in rows[kernel]])
        print(f"published-style fit, {kernel:8s}: bare fit {fit:.2f} s, whole process {whole:.2f} s, "
              f"{rows[kernel][-1]['nit']} L-BFGS-B iterations;  detbal / bare fit = {det / fit:.3f}, "
              f"detbal / whole = {det / whole:.3f}")
    fit = med([r["fit_seconds"] for r in rows["softplus"]])
    print(f"target: detbal analyze <= 1/5 of the published (softplus) bare fit: {det / fit:.3f} "
          f"{'met' if det <= fit / 5 else 'missed'}")


def section_cold(args: argparse.Namespace, folder: Path) -> None:
    print("\n== first run: empty numba cache vs after the set-up's warm-up (300 states) ==",
          flush=True)
    data = make_data("s300", folder)
    with tempfile.TemporaryDirectory(prefix="numba-cold-") as cache:
        env = child_env(Path(cache))
        cold = detbal_analyze(data, folder / "out-cold", env, args.timeout)
        print(f"no cache at all (everything compiles): {cold['seconds']:.1f} s")
    with tempfile.TemporaryDirectory(prefix="numba-setup-") as cache:
        env = child_env(Path(cache))
        tiny = folder / "warm.csv"
        run([sys.executable, "-m", "detbal", "-q", "synth", "--out", str(tiny), "--states", "40",
             "--transitions", "4000"], env, args.timeout)
        t = run([sys.executable, "-m", "detbal", "-q", "analyze", str(tiny), "--out",
                 str(folder / "out-warm"), "--bootstrap", "2", "--test-simulations", "2",
                 "--no-figures"], env, args.timeout)
        first = detbal_analyze(data, folder / "out-cold", env, args.timeout)
        again = detbal_analyze(data, folder / "out-cold", env, args.timeout)
        print(f"set-up warm-up (scripts/setup.sh: tiny analyze): {t['seconds']:.1f} s; then the first"
              f" real run: {first['seconds']:.2f} s (target <= 8 s: {'met' if first['seconds'] <= 8 else 'missed'});"
              f" the next: {again['seconds']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--baseline-worker"]:
        baseline_worker(argv[1], argv[2])
        return 0
    if argv[:1] == ["--make-store-worker"]:
        make_store(argv[1], Path(argv[2]), argv[3])
        return 0
    if argv[:1] == ["--store-load-worker"]:
        store_load_worker(argv[1], argv[2])
        return 0
    if argv[:1] == ["--stage-cpu-worker"]:
        stage_cpu_worker(argv[1], argv[2])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 repeats, no cold run")
    p.add_argument("--huge", action="store_true", help="add 1e6 states / 1e7 attempts")
    p.add_argument("--cold", action=argparse.BooleanOptionalAction, default=None,
                   help="measure the first run with an empty numba cache (default: unless --quick)")
    p.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "detbal-bench-analyze"),
                   help="folder for the generated data and outputs (kept between runs)")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--sizes", nargs="+", choices=["s300", "ring1000", "paper", "1e5", "1e6"],
                   help="data sets of the size table (default: all but 1e6; --huge adds it)")
    p.add_argument("--skip-paper", action="store_true", help="leave out the baseline comparison")
    p.add_argument("--stage-cpu", nargs="*", default=["paper", "1e5"],
                   choices=["s300", "ring1000", "paper", "1e5", "1e6"],
                   help="data sets whose stages are also timed in CPU seconds (default paper 1e5;"
                        " none: --stage-cpu with no name)")
    p.add_argument("--store-load", nargs="+", choices=["s300", "paper", "1e5", "1e6"],
                   help="only time loading a run store of these data sets, rows (before) vs"
                        " columns (now); the other sections are left out")
    p.add_argument("--store-layout", nargs="+", choices=["aggregated", "single"],
                   default=["aggregated"], help="--store-load's stores: one row per outcome with"
                   " its count (default), or one row per attempt")
    p.add_argument("--store-repeats", type=int, default=3, help="--store-load's repeats (default 3)")
    a = p.parse_args(argv)
    a.repeats = 3 if a.quick else 5
    if a.sizes is None:
        a.sizes = ["s300", "ring1000", "paper", "1e5"] + (["1e6"] if a.huge else [])
    cold = (not a.quick) if a.cold is None else a.cold
    folder = Path(a.data)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"bench_analyze ({'quick' if a.quick else 'full'}); {machine_line()}")
    print(f"python {sys.version.split()[0]}; children: OPENBLAS_NUM_THREADS=1, "
          f"NUMBA_NUM_THREADS={child_env()['NUMBA_NUM_THREADS']}; data in {folder}")
    t0 = time.perf_counter()
    if a.store_load:
        section_store_load(a, folder)
        print(f"\ntotal {time.perf_counter() - t0:.0f} s; {machine_line()}")
        return 0
    if not a.skip_paper:
        section_paper(a, folder)
    section_sizes(a, folder)
    if a.stage_cpu:
        section_stage_cpu(a, folder)
    if cold:
        section_cold(a, folder)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; {machine_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
