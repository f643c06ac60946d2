"""Does the measured potential help the search?  Uniform vs potential-guided selection (issue 11).

Both agents on the embedded SmolLM2-135M (or any OpenAI-compatible model with
``--base-url/--model``), each (task, seed, selection) its own run in its own store under
``--out``, at equal numbers of model calls:

* fit (Nikuradse, one island, one-call answers, constrained on the embedded model): the
  best score reached against the number of calls (median and min/max over seeds), the
  number of distinct valid ansatzes, and the mean potential of the examples shown;
* words (strict, the paper's prompt, constrained on the embedded model): how fast the walk
  reaches and keeps to low-potential words: the mean V of the prompt words, per window of
  attempts, under one reference potential fitted to the attempts of every run of the task
  (the kernel is per source, so runs drawn either way estimate the same kernel and can be
  pooled), and the share of prompt words below that potential's median.

Guided runs use ``Selection("potential", tau, floor, every)`` (likelihood estimator).
A common seed gives both arms the same model sampling seeds (common random numbers).
Runs continue where they stopped (the stores are resumable), so an interrupted
benchmark is finished by running the same command again.  Figure: ``OUT/guided.png``.

Usage: python bench/bench_guided.py [--out bench-out/guided] [--seeds 3] [--fit-calls 30]
       [--words-attempts 150] [--jobs 2] [--tasks fit,words] [--base-url URL --model NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "datasets" / "nikuradse"
ARMS = ("uniform", "potential")


# -- one run ----------------------------------------------------------------------

def _backend(args: dict[str, Any]) -> Any:
    if args["base_url"]:
        from detbal.agents.backends.openai_compat import OpenAIBackend, OpenAISettings

        return OpenAIBackend(OpenAISettings.resolve(model=args["model"], base_url=args["base_url"]))
    from detbal.agents.backends.local import LocalBackend

    return LocalBackend(n_threads=1)


def _selection(arm: str, args: dict[str, Any]) -> Any:
    from detbal.agents.select import Selection

    return Selection(arm, tau=args["tau"], floor=args["floor"], every=args["every"])


def run_one(task: str, seed: int, arm: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run (or finish) one (task, seed, arm) run in its own store; returns its wall time."""
    from detbal.store import RunStore

    path = Path(args["out"]) / f"{task}-{arm}-s{seed}.sqlite"
    constrain = not args["base_url"]
    sel = _selection(arm, args)
    t0 = time.perf_counter()

    async def go() -> None:
        backend = _backend(args)
        try:
            with RunStore(path) as store:
                if task == "fit":
                    from detbal.agents.fit import FitConfig, run_fit

                    cfg = FitConfig(islands=1, population=args["population"], mode="one-call",
                                    constrain=constrain, seed=seed, temperature=args["fit_temperature"],
                                    max_tokens=args["fit_max_tokens"], starts=args["starts"],
                                    data_dir=str(DATA) if DATA.is_dir() else None,
                                    select=sel.rule, select_tau=sel.tau, select_floor=sel.floor,
                                    select_every=sel.every, select_estimator=sel.estimator)
                    config = {"fit": cfg.as_dict(), "seed": seed, "constrain": constrain} | sel.as_config()
                    rid = store.runs()[0].id if store.runs() else store.create_run(
                        "fit", backend.model, backend.name, config)
                    await run_fit(store, rid, [backend], cfg, attempts=args["fit_calls"] * cfg.per_round)
                else:
                    from detbal.agents.backends.base import SamplingParams
                    from detbal.agents.words import WordsConfig, run_words

                    cfg = WordsConfig(seed=seed, constrain=constrain, select=sel, sampling=SamplingParams(
                        temperature=args["words_temperature"], top_p=1.0, max_tokens=16))
                    rid = store.runs()[0].id if store.runs() else store.create_run(
                        "words", backend.model, backend.name, cfg.as_config())
                    await run_words(store, rid, backend, cfg, attempts=args["words_attempts"],
                                    concurrency=1, handle_signals=False)
        finally:
            await backend.aclose()

    asyncio.run(go())
    return {"task": task, "seed": seed, "arm": arm, "seconds": time.perf_counter() - t0}


# -- what the runs reached ------------------------------------------------------------

def _rows(path: Path) -> list[dict[str, Any]]:
    from detbal.store import RunStore

    with RunStore(path, create=False) as store:
        rows = sorted(store.iter_attempts(), key=lambda r: r["seq"])
    for r in rows:
        r["params"] = json.loads(r["params"]) if r["params"] else {}
    return rows


def reference_potential(all_rows: list[list[dict[str, Any]]]) -> dict[str, float]:
    """One yardstick: the likelihood potential of every run's attempts pooled."""
    from detbal.agents.select import estimate

    return estimate([(r["source"], r["target"], r["escape"], r["count"]) for rows in all_rows
                     for r in rows])


def _spread(values: list[float]) -> tuple[float, float, float]:
    import numpy as np

    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not len(v):
        return math.nan, math.nan, math.nan
    return float(np.median(v)), float(v.min()), float(v.max())


def _fmt(t: tuple[float, float, float], digits: int = 1) -> str:
    m, lo, hi = t
    return "n/a" if math.isnan(m) else f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fit_curves(rows: list[dict[str, Any]], calls: int, per_round: int = 3) -> dict[str, Any]:
    """Best score after each call (the seed ansatz scores 20), distinct valid ansatzes."""
    best, curve, seen = 20.0, [], set()
    for c in range(calls):
        for r in rows[c * per_round:(c + 1) * per_round]:
            if r["target"] is not None:
                seen.add(r["target"])
                best = max(best, float(r["params"].get("fit", {}).get("score", -math.inf)))
        curve.append(best)
    return {"best": curve, "distinct": len(seen), "attempts": len(rows)}


def mean_v(rows: list[dict[str, Any]], V: dict[str, float], lo: int, hi: int,
           step: int = 1) -> tuple[float, float, float]:
    """Mean reference V of the prompt states of attempts lo..hi-1, the share of them below the
    reference median, and the share of them the reference potential covers."""
    import numpy as np

    src = [rows[i]["source"] for i in range(lo, min(hi, len(rows)), step)]
    vals = [V[s] for s in src if s in V]
    if not vals:
        return math.nan, math.nan, 0.0
    med = float(np.median(list(V.values())))
    return float(np.mean(vals)), float(np.mean([v < med for v in vals])), len(vals) / len(src)


def summarise(args: dict[str, Any], seeds: list[int], tasks: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out_dir = Path(args["out"])
    for task in tasks:
        runs = {(arm, s): _rows(out_dir / f"{task}-{arm}-s{s}.sqlite") for arm in ARMS for s in seeds
                if (out_dir / f"{task}-{arm}-s{s}.sqlite").exists()}
        if not runs:
            continue
        V = reference_potential(list(runs.values()))
        res: dict[str, Any] = {"reference_states": len(V), "arms": {}}
        for arm in ARMS:
            per = [runs[(arm, s)] for s in seeds if (arm, s) in runs]
            if not per:
                continue
            if task == "fit":
                n = args["fit_calls"]
                curves = [fit_curves(rows, n) for rows in per]
                res["arms"][arm] = {
                    "best_by_call": [_spread([c["best"][k] for c in curves]) for k in range(n)],
                    "best_per_seed": [c["best"][-1] for c in curves],
                    "distinct": _spread([c["distinct"] for c in curves]),
                    "distinct_per_seed": [c["distinct"] for c in curves],
                    # the example is the same for the 3 attempts of a call: one per call
                    "example_V": _spread([mean_v(rows, V, 0, len(rows), 3)[0] for rows in per]),
                    "example_low": _spread([mean_v(rows, V, 0, len(rows), 3)[1] for rows in per]),
                }
            else:
                n = args["words_attempts"]
                w = args["window"]
                wins = list(range(0, n, w))
                res["arms"][arm] = {
                    "windows": wins,
                    "mean_V": [_spread([mean_v(rows, V, a, a + w)[0] for rows in per]) for a in wins],
                    "low_share": [_spread([mean_v(rows, V, a, a + w)[1] for rows in per]) for a in wins],
                    "covered": [_spread([mean_v(rows, V, a, a + w)[2] for rows in per]) for a in wins],
                    "distinct": _spread([len({r["target"] for r in rows if r["target"]}) for rows in per]),
                    "guided_draws_with_V": _spread([
                        sum(1 for r in rows if r["params"].get("select", {}).get("V") is not None) / len(rows)
                        for rows in per]),
                }
        out[task] = res
    return out


def print_tables(summary: dict[str, Any], args: dict[str, Any], seeds: list[int]) -> None:
    print(f"seeds {seeds}; median [min, max] over seeds; guided: tau {args['tau']}, floor {args['floor']},"
          f" refit every {args['every']} attempts (likelihood potential)")
    fit = summary.get("fit")
    if fit:
        n = args["fit_calls"]
        marks = sorted({max(1, n // 4), n // 2, 3 * n // 4, n})
        print(f"\nfit (Nikuradse, 1 island of {args['population']}, 3 ansatzes per call;"
              f" reference potential on {fit['reference_states']} states)")
        print("| selection | " + " | ".join(f"best score @ {k} calls" for k in marks)
              + " | distinct valid ansatzes | mean V of examples | examples below median V |")
        print("|---" * (len(marks) + 4) + "|")
        for arm, a in fit["arms"].items():
            print(f"| {arm} | " + " | ".join(_fmt(a["best_by_call"][k - 1]) for k in marks)
                  + f" | {_fmt(a['distinct'], 0)} | {_fmt(a['example_V'], 2)} | {_fmt(a['example_low'], 2)} |")
        for arm, a in fit["arms"].items():
            print(f"  {arm}: final best per seed {[round(x, 1) for x in a['best_per_seed']]},"
                  f" distinct per seed {a['distinct_per_seed']}")
    words = summary.get("words")
    if words:
        print(f"\nwords (strict, constrained; reference potential on {words['reference_states']} states):"
              " mean V of the prompt words per window of attempts (share below the median V)")
        wins = next(iter(words["arms"].values()))["windows"]
        w = args["window"]
        print("| selection | " + " | ".join(f"{a}-{a + w - 1}" for a in wins) + " | distinct words |")
        print("|---" * (len(wins) + 2) + "|")
        for arm, a in words["arms"].items():
            cells = [f"{_fmt(v, 2)} ({_fmt(s, 2).split(' ')[0]})" for v, s in zip(a["mean_V"], a["low_share"])]
            print(f"| {arm} | " + " | ".join(cells) + f" | {_fmt(a['distinct'], 0)} |")
        for arm, a in words["arms"].items():
            print(f"  {arm}: prompt words covered by the reference potential per window "
                  + ", ".join(_fmt(c, 2).split(" ")[0] for c in a["covered"])
                  + f"; draws that used an estimated V {_fmt(a['guided_draws_with_V'], 2)}")


def figure(summary: dict[str, Any], args: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a script, not the library
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [t for t in ("fit", "words") if t in summary]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    colours = {"uniform": "tab:gray", "potential": "tab:blue"}
    for ax, task in zip(axes[0], panels):
        for arm, a in summary[task]["arms"].items():
            key, x = ("best_by_call", None) if task == "fit" else ("mean_V", None)
            m, lo, hi = (np.array(v) for v in zip(*a[key]))
            x = np.arange(1, len(m) + 1) if task == "fit" else np.array(a["windows"]) + args["window"] / 2
            ax.plot(x, m, color=colours[arm], label=f"{arm} (median)")
            ax.fill_between(x, lo, hi, color=colours[arm], alpha=0.2, label=f"{arm} (min-max)")
        if task == "fit":
            ax.set(xlabel="model calls", ylabel="best score so far", title="fit: best score vs calls")
        else:
            ax.set(xlabel="attempt", ylabel="mean V of prompt words (reference)",
                   title="words: potential of the prompt words")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-out/guided")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--tasks", default="fit,words")
    ap.add_argument("--fit-calls", type=int, default=30, help="model calls per fit run (3 attempts each)")
    ap.add_argument("--words-attempts", type=int, default=150)
    ap.add_argument("--window", type=int, default=25, help="words: attempts per window")
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--floor", type=float, default=0.1)
    ap.add_argument("--every", type=int, default=6, help="refit every so many attempts")
    ap.add_argument("--population", type=int, default=6)
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--fit-temperature", type=float, default=1.0)
    ap.add_argument("--fit-max-tokens", type=int, default=256)
    ap.add_argument("--words-temperature", type=float, default=0.5)
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one model instance each)")
    ap.add_argument("--base-url", help="OpenAI-compatible endpoint instead of the embedded model")
    ap.add_argument("--model", help="model name at --base-url")
    ap.add_argument("--summary-only", action="store_true", help="only summarise the stores in --out")
    a = ap.parse_args()
    if a.base_url and not a.model:
        ap.error("--base-url needs --model")
    args = vars(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    if not a.summary_only:
        # interleave the arms so that machine load hits both alike
        jobs = [(t, s, arm) for t in tasks for s in seeds for arm in ARMS]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=a.jobs) as pool:
            for res in pool.map(run_one, *zip(*jobs), [args] * len(jobs)):
                print(f"  {res['task']} seed {res['seed']} {res['arm']}: {res['seconds']:.0f} s", flush=True)
        print(f"runs: {time.perf_counter() - t0:.0f} s with {a.jobs} jobs")
    summary = summarise(args, seeds, tasks)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print_tables(summary, args, seeds)
    figure(summary, args, out / "guided.png")
    print(f"\nfigure: {out / 'guided.png'}; summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
