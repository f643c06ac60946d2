#!/usr/bin/env python
"""The whole default ``detbal analyze`` of two source trees, alternating, in one run.

    git worktree add /tmp/before HEAD~1     # or: git archive HEAD~1 | tar -x -C /tmp/before
    python bench/bench_trees.py /tmp/before . --sizes s300 paper --rounds 5

Each round runs ``python -m detbal -q analyze FILE --out DIR`` (defaults: 100 bootstrap
replicates, 200 test simulations, figures) as a whole process from each tree's root
(``python -m`` imports the package of the working directory), in alternating order,
then bench_potential's published-style softplus bare fit on the paper-scale file
(``bench_analyze.py --baseline-worker``), so that all see the same machine load.
Printed: medians of wall and CPU seconds (``wait4``: user + system, all threads),
peak memory, the stages' medians from summary.json, the ratios after / before and
detbal / bare fit; then whether the two trees wrote the same numbers: summary.json
with its ``timings`` removed, potential.csv byte for byte, every figure pixel for
pixel.  Data: bench_analyze's files (written once into ``--data``).  A tree whose
numba cache is empty compiles on its first run: run each once before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_line
from bench_analyze import child_env, make_data


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (MiB) and stdout of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {cwd}: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out


def same_outputs(a: Path, b: Path) -> str:
    """Whether two output folders hold the same numbers and figures."""
    import numpy as np
    from PIL import Image

    def numbers(d: Path) -> dict:
        s = json.loads((d / "summary.json").read_text())
        s.pop("timings", None)
        return s

    notes = ["summary.json " + ("same" if numbers(a) == numbers(b) else "DIFFERS"),
             "potential.csv " + ("same" if (a / "potential.csv").read_bytes() == (b / "potential.csv").read_bytes()
                                 else "DIFFERS")]
    for png in sorted(a.glob("*.png")):
        other = b / png.name
        same = other.exists() and np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(other)))
        notes.append(f"{png.name} " + ("same pixels" if same else "DIFFERS"))
    return ", ".join(notes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path, help="root of the first source tree")
    p.add_argument("after", type=Path, help="root of the second source tree")
    p.add_argument("--sizes", nargs="+", choices=["s300", "ring1000", "paper", "1e5"], default=["s300", "paper"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-baseline", action="store_true", help="leave out the published bare fit")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "detbal-bench-analyze")
    args = p.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    env = child_env()
    print(machine_line(), flush=True)
    print(f"before = {trees['before']}, after = {trees['after']}; {args.rounds} alternating rounds", flush=True)
    files = {name: make_data(name, args.data) for name in args.sizes}
    rows: dict[tuple[str, str], list[tuple[float, float, float, dict]]] = {}
    fits: list[float] = []
    for r in range(args.rounds):
        for name, data in files.items():
            order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
            for tree, root in order:
                out = args.data / f"trees-{tree}-{name}"
                wall, cpu, rss, _ = run([sys.executable, "-m", "detbal", "-q", "analyze", str(data),
                                         "--out", str(out)], root, env)
                timings = json.loads((out / "summary.json").read_text())["timings"]
                rows.setdefault((name, tree), []).append((wall, cpu, rss, timings))
            if name == "paper" and not args.no_baseline:
                *_, out = run([sys.executable, os.path.abspath(os.path.join(os.path.dirname(__file__),
                               "bench_analyze.py")), "--baseline-worker", str(data), "softplus"],
                              trees["after"], env)
                fits.append(json.loads(out.strip().splitlines()[-1])["fit_seconds"])
        print(f"round {r + 1}: load {os.getloadavg()[0]:.2f}", flush=True)
    med = statistics.median
    for name in files:
        for tree in trees:
            got = rows[(name, tree)]
            stages = ", ".join(f"{k} {med(x[3].get(k, 0.0) for x in got):.2f}" for k in got[-1][3])
            print(f"{name:8s} {tree:6s} wall {med(x[0] for x in got):.2f} s (runs "
                  f"{', '.join(f'{x[0]:.2f}' for x in got)}), CPU {med(x[1] for x in got):.2f} s, peak "
                  f"{max(x[2] for x in got):.0f} MiB; stage medians: {stages}")
        b, a = rows[(name, "before")], rows[(name, "after")]
        print(f"{name:8s} after / before: wall {med(x[0] for x in a) / med(x[0] for x in b):.3f}, "
              f"CPU {med(x[1] for x in a) / med(x[1] for x in b):.3f}, figures stage "
              f"{med(x[3].get('figures', 0.0) for x in a) / med(x[3].get('figures', 1.0) for x in b):.3f}")
        if name == "paper" and fits:
            fit = med(fits)
            print(f"{name:8s} published-style softplus bare fit {fit:.2f} s (runs {', '.join(f'{f:.2f}' for f in fits)});"
                  f" whole command / bare fit: before {med(x[0] for x in b) / fit:.3f},"
                  f" after {med(x[0] for x in a) / fit:.3f} (target 0.2)")
        print(f"{name:8s} outputs: {same_outputs(args.data / f'trees-before-{name}', args.data / f'trees-after-{name}')}",
              flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
